"""Anatomy mask pooling: coverage weights, mean pooling against naive loops, attention pooling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cagcl_mini.nn.pooling import (
    AttentionMaskPool,
    MaskWeights,
    downsample_labels,
    masks_to_feature_resolution,
    mean_mask_pool,
    prepare_weights,
)

# (label shape, feature shape): divisible, non-divisible (overlapping adaptive cells), upsampling.
SHAPES = [
    ((8, 8, 8), (4, 4, 4)),
    ((12, 8, 16), (3, 4, 4)),
    ((10, 7, 9), (4, 3, 5)),
    ((5, 6, 7), (8, 6, 9)),
]


def _labels(batch, shape, k, seed=0, empty=()):
    """Random label maps with blocky organs; anatomies in ``empty`` are removed from sample 0."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, k + 1, (batch, *(max(1, s // 2) for s in shape)), generator=g)
    labels = F.interpolate(coarse[:, None].float(), size=shape, mode="nearest")[:, 0].long()
    labels = torch.where(torch.rand(labels.shape, generator=g) < 0.2, 0, labels)  # speckle
    for j in empty:
        labels[0][labels[0] == j] = 0
    return labels


def _loop_pool(features, weights):
    """The naive reference: per sample and anatomy, boolean-index the voxels it touches."""
    b, c = features.shape[:2]
    flat, w = features.reshape(b, c, -1), weights.reshape(b, weights.shape[1], -1)
    out = torch.zeros(b, w.shape[1], c, dtype=features.dtype)
    for i in range(b):
        for k in range(w.shape[1]):
            m = w[i, k] > 0
            if m.any():
                out[i, k] = (flat[i][:, m] * w[i, k][m]).sum(-1) / w[i, k][m].sum()
    return out


@pytest.mark.parametrize(("label_shape", "feature_shape"), SHAPES)
def test_counting_equals_onehot_adaptive_pool_and_sums_to_one(label_shape, feature_shape):
    labels = _labels(3, label_shape, 5, seed=1)
    count = masks_to_feature_resolution(labels, feature_shape, 5, include_background=True)
    onehot = masks_to_feature_resolution(
        labels, feature_shape, 5, include_background=True, method="onehot"
    )
    assert count.shape == (3, 6, *feature_shape)
    torch.testing.assert_close(count, onehot, rtol=0, atol=1e-6)
    torch.testing.assert_close(count.sum(1), torch.ones(3, *feature_shape), rtol=0, atol=1e-6)
    anat = masks_to_feature_resolution(labels, feature_shape, 5)
    torch.testing.assert_close(anat, count[:, 1:])


def test_coverage_of_a_known_block():
    labels = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    labels[0, :2, :2, :1] = 1  # 4 voxels in the first 2x2x2 block, i.e. half of it
    labels[0, 2:, 2:, 2:] = 2  # the whole last block
    w = masks_to_feature_resolution(labels, (2, 2, 2), 2)
    assert w[0, 0, 0, 0, 0] == 0.5 and w[0, 0].sum() == 0.5
    assert w[0, 1, 1, 1, 1] == 1.0 and w[0, 1].sum() == 1.0


def test_small_organ_survives_coverage_but_not_nearest():
    labels = torch.zeros(1, 16, 16, 16, dtype=torch.long)
    labels[0, 1:3, 1:3, 1:3] = 1  # a 2^3 organ between nearest's sample points (0, 4, 8, 12)
    assert not (downsample_labels(labels, (4, 4, 4), 1, rule="nearest") == 1).any()
    assert not (downsample_labels(labels, (4, 4, 4), 1, rule="majority") == 1).any()
    w = masks_to_feature_resolution(labels, (4, 4, 4), 1)
    assert w.sum().item() == pytest.approx(8 / 64)  # the organ's volume in feature voxels
    features = torch.randn(1, 3, 4, 4, 4)
    pooled, present = mean_mask_pool(features, labels, 1)
    assert present.all()
    torch.testing.assert_close(pooled[0, 0], features[0, :, 0, 0, 0])


@pytest.mark.parametrize(("label_shape", "feature_shape"), SHAPES)
@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_mean_pool_equals_per_anatomy_loop(label_shape, feature_shape, method):
    k = 6
    labels = _labels(3, label_shape, k, seed=2, empty=(2, 5))
    features = torch.randn(3, 7, *feature_shape, generator=torch.Generator().manual_seed(3))
    pooled, present = mean_mask_pool(features, labels, k, method=method)
    weights = masks_to_feature_resolution(labels, feature_shape, k)
    assert pooled.shape == (3, k, 7) and present.dtype == torch.bool
    torch.testing.assert_close(pooled, _loop_pool(features, weights), rtol=1e-5, atol=1e-5)
    assert not present[0, 1] and not present[0, 4]
    assert torch.equal(present, weights.flatten(2).sum(-1) > 0)


@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_divisible_case_equals_boolean_means_of_upsampled_features(method):
    labels = _labels(2, (12, 12, 8), 4, seed=4)
    features = torch.randn(2, 5, 3, 3, 2)
    up = features.repeat_interleave(4, 2).repeat_interleave(4, 3).repeat_interleave(4, 4)
    expected = torch.stack(
        [torch.stack([up[b][:, labels[b] == j].mean(-1) for j in range(1, 5)]) for b in range(2)]
    )
    pooled, present = mean_mask_pool(features, labels, 4, method=method)
    assert present.all()
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_full_resolution_equals_exact_boolean_mask_means(method):
    labels = _labels(2, (6, 5, 7), 3, seed=5, empty=(3,))
    features = torch.randn(2, 4, 6, 5, 7)
    pooled, present = mean_mask_pool(features, labels, 3, method=method)
    for b in range(2):
        for j in range(1, 4):
            mask = labels[b] == j
            assert bool(present[b, j - 1]) == bool(mask.any())
            expected = features[b][:, mask].mean(-1) if mask.any() else torch.zeros(4)
            torch.testing.assert_close(pooled[b, j - 1], expected, rtol=1e-5, atol=1e-6)


def test_inputs_labels_weights_maskweights_and_channels_last_agree():
    labels = _labels(2, (8, 8, 8), 4, seed=6)
    features = torch.randn(2, 6, 4, 4, 4)
    ref, present = mean_mask_pool(features, labels, 4, method="dense")
    weights = masks_to_feature_resolution(labels, (4, 4, 4), 4)
    mw = prepare_weights(labels, (4, 4, 4), 4)
    assert isinstance(mw, MaskWeights)
    channels_last = features.contiguous(memory_format=torch.channels_last_3d)
    for anatomy, feats in [(weights, features), (mw, features), (mw, channels_last)]:
        for method in ("auto", "dense", "sparse"):
            out, pres = mean_mask_pool(feats, anatomy, 4, method=method)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
            assert torch.equal(pres, present)


def test_min_coverage_drops_thin_voxels():
    labels = _labels(2, (8, 8, 8), 3, seed=7)
    features = torch.randn(2, 5, 2, 2, 2)
    weights = masks_to_feature_resolution(labels, (2, 2, 2), 3)
    thresholded = torch.where(weights >= 0.3, weights, 0)
    pooled, present = mean_mask_pool(features, labels, 3, min_coverage=0.3)
    torch.testing.assert_close(pooled, _loop_pool(features, thresholded), rtol=1e-5, atol=1e-6)
    assert torch.equal(present, thresholded.flatten(2).sum(-1) > 0)


@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_empty_anatomies_give_zeros_no_nan_and_finite_gradients(method):
    labels = _labels(2, (8, 8, 8), 4, seed=8, empty=(1, 3))
    labels[1] = 0  # a sample with no anatomy at all
    features = torch.randn(2, 5, 4, 4, 4, requires_grad=True)
    pooled, present = mean_mask_pool(features, labels, 4, method=method)
    assert not present[1].any() and not present[0, 0] and not present[0, 2]
    assert torch.equal(pooled[~present], torch.zeros(int((~present).sum()), 5))
    assert torch.isfinite(pooled).all()
    (pooled**2).sum().backward()
    assert torch.isfinite(features.grad).all()
    assert torch.equal(features.grad[1], torch.zeros_like(features.grad[1]))


@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_gradients_match_the_loop(method):
    labels = _labels(2, (10, 7, 9), 4, seed=9, empty=(2,))
    x = torch.randn(2, 3, 4, 3, 5, dtype=torch.float64)
    weights = masks_to_feature_resolution(labels, (4, 3, 5), 4).double()
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(2, 4, 3, dtype=torch.float64)
    (mean_mask_pool(a, weights, 4, method=method)[0] * g).sum().backward()
    (_loop_pool(b, weights) * g).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_bad_inputs_are_named():
    features = torch.randn(1, 2, 2, 2, 2)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        mean_mask_pool(features, torch.full((1, 4, 4, 4), 4), 3)
    with pytest.raises(ValueError, match="integer label map"):
        masks_to_feature_resolution(torch.zeros(1, 4, 4), (2, 2, 2), 3)
    with pytest.raises(ValueError, match="weights must be"):
        mean_mask_pool(features, torch.rand(1, 3, 4, 4, 4), 3)
    with pytest.raises(ValueError, match="features must be"):
        mean_mask_pool(torch.randn(2, 2, 2, 2), torch.zeros(1, 4, 4, 4, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="method"):
        mean_mask_pool(features, torch.zeros(1, 4, 4, 4, dtype=torch.long), 3, method="fast")
    with pytest.raises(ValueError, match="batch"):
        mean_mask_pool(torch.randn(2, 2, 2, 2, 2), torch.zeros(1, 4, 4, 4, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="prepared for"):
        mean_mask_pool(features, prepare_weights(torch.zeros(1, 4, 4, 4).long(), (1, 1, 1), 3), 3)
    with pytest.raises(ValueError, match="rule"):
        downsample_labels(torch.zeros(1, 4, 4, 4).long(), (2, 2, 2), 3, rule="mode")


# --------------------------------------------------------------------------- attention pooling
def _attention(c=8, k=4, heads=2, residual=False, seed=0):
    torch.manual_seed(seed)
    pool = AttentionMaskPool(c, k, num_heads=heads, residual=residual)
    if residual:  # leave the zero-initialised output projection alone
        return pool
    torch.nn.init.normal_(pool.out.weight, std=0.3)
    return pool


def test_attention_shapes_and_masked_tokens_do_not_matter():
    labels = _labels(2, (8, 8, 8), 4, seed=10)
    features = torch.randn(2, 8, 4, 4, 4)
    pool = _attention()
    pooled, present = pool(features, labels)
    assert pooled.shape == (2, 4, 8) and present.shape == (2, 4)
    weights = masks_to_feature_resolution(labels, (4, 4, 4), 4)
    for k in range(4):
        outside = (weights[:, k] == 0).unsqueeze(1)  # (B,1,h,w,d): tokens anatomy k never sees
        assert outside.any()
        perturbed = torch.where(outside, features + 10 * torch.randn_like(features), features)
        again, _ = pool(perturbed, labels)
        torch.testing.assert_close(again[:, k], pooled[:, k], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(again, pooled), "the perturbation reaches other anatomies"


def test_attention_with_equal_scores_is_the_coverage_weighted_mean():
    labels = _labels(2, (10, 7, 9), 4, seed=11, empty=(3,))
    features = torch.randn(2, 8, 4, 3, 5)
    pool = _attention()
    with torch.no_grad():
        pool.key.weight.zero_()  # every token gets the same score
        pool.key.bias.zero_()
        pool.value.weight.copy_(torch.eye(8))
        pool.value.bias.zero_()
        pool.out.weight.copy_(torch.eye(8))
        pool.out.bias.zero_()
    pooled, present = pool(features, labels)
    expected, expected_present = mean_mask_pool(features, labels, 4)
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(present, expected_present)


def test_attention_residual_starts_at_mean_pooling():
    labels = _labels(2, (8, 8, 8), 4, seed=12)
    features = torch.randn(2, 8, 4, 4, 4)
    pooled, _ = _attention(residual=True)(features, labels)
    torch.testing.assert_close(pooled, mean_mask_pool(features, labels, 4)[0])


@pytest.mark.parametrize("residual", [False, True])
def test_attention_empty_anatomies_no_nan_and_finite_gradients(residual):
    labels = _labels(2, (8, 8, 8), 4, seed=13, empty=(1, 4))
    labels[1] = 0
    features = torch.randn(2, 8, 4, 4, 4, requires_grad=True)
    pool = _attention(residual=residual)
    pooled, present = pool(features, labels)
    assert not present[1].any() and not present[0, 0] and not present[0, 3]
    assert torch.isfinite(pooled).all()
    assert torch.equal(pooled[~present], torch.zeros(int((~present).sum()), 8))
    (pooled**2).sum().backward()
    assert torch.isfinite(features.grad).all()
    grads = [p.grad for p in pool.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert pool.out.weight.grad.abs().sum() > 0


def test_attention_rejects_bad_heads():
    with pytest.raises(ValueError, match="divisible"):
        AttentionMaskPool(10, 4, num_heads=3)


# --------------------------------------------------------------------------- benchmark plumbing
def test_bench_labels_tile_a_body_with_every_anatomy():
    from cagcl_mini.bench.pooling import bench_labels

    labels = bench_labels(2, 24, 5, seed=1)
    assert labels.shape == (2, 24, 24, 24) and labels.dtype == torch.long
    assert 0.4 < (labels > 0).float().mean() < 0.6  # a ball fills pi/6 of the cube
    assert all(set(labels[b].unique().tolist()) == set(range(6)) for b in range(2))
    assert torch.equal(labels, bench_labels(2, 24, 5, seed=1))


def test_benchmark_reports_every_figure_on_a_tiny_case():
    from cagcl_mini.bench.pooling import benchmark

    threads = torch.get_num_threads()
    r = benchmark(feature_sizes=(4,), anatomy_counts=(2, 3), batch=2, channels=8, repeats=1)
    assert torch.get_num_threads() == threads, "the thread count is restored"
    for suffix in ("", "_channel_first"):
        for k in (2, 3):
            for name in ("auto_ms", "loop_ms", "ratio_to_sum", "speedup_vs_loop"):
                value = r[f"f4_k{k}_{name}{suffix}"]
                assert value > 0
        assert r[f"f4_k_scaling{suffix}"] == pytest.approx(
            r[f"f4_k3_auto_ms{suffix}"] / r[f"f4_k2_auto_ms{suffix}"], rel=1e-2
        )
    assert isinstance(r["targets_met_channels_last"], bool)
    assert 0 < r["f4_k2_nonzero_fraction"] <= 1
