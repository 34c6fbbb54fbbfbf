"""The contrastive objectives: hand-computed values, the CLIP special case, false negatives,
missing anatomies, gradients, random masks, and the presets."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cagcl_mini.anatomy import ALL_LABELS, NUM_ANATOMIES
from cagcl_mini.losses.objective import LOSS_PRESETS, LOSS_TERMS, PRESET_AUGMENT, compute_losses
from cagcl_mini.losses.targets import (
    global_targets,
    local_targets,
    pair_weights,
    soft_targets_from_labels,
)
from cagcl_mini.losses.terms import (
    anatomy_contrastive_loss,
    diagnosis_contrastive_loss,
    disease_supervision_loss,
    global_cross_anatomy_loss,
    local_alignment_loss,
    sigmoid_global_loss,
    sigmoid_local_loss,
)

PAIR_LOSSES = [
    local_alignment_loss,
    global_cross_anatomy_loss,
    sigmoid_local_loss,
    sigmoid_global_loss,
]


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def tensor(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def random_batch(b: int, k: int, e: int = 8, seed: int = 0, p_present: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(b, k, e, generator=g, dtype=torch.float64), dim=-1)
    t = F.normalize(torch.randn(b, k, e, generator=g, dtype=torch.float64), dim=-1)
    present = torch.rand(b, k, generator=g) < p_present
    abnormal = torch.rand(b, k, generator=g) < 0.5
    return v, t, present, abnormal


def soft_ce_numpy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Reference: mean over rows of -sum_j q_ij log softmax_j, q = row-normalised targets."""
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    q = targets / targets.sum(1, keepdims=True)
    return float(-(q * logp).sum(1).mean())


# Two samples, one anatomy, E = 2: v0=[1,0], v1=[0,1], t0=[1,0], t1=[0.6,0.8]; with s = 2 the
# logits s*<v_i,t_j> are [[2, 1.2], [0, 1.6]].
V2 = tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
T2 = tensor([[[1.0, 0.0]], [[0.6, 0.8]]])
BOTH = torch.ones(2, 1, dtype=torch.bool)


def test_local_loss_hand_computed_identity_targets():
    loss = local_alignment_loss(V2, T2, BOTH, BOTH, math.log(2.0))
    v2t = ((lse(2, 1.2) - 2) + (lse(0, 1.6) - 1.6)) / 2
    t2v = ((lse(2, 0) - 2) + (lse(1.2, 1.6) - 1.6)) / 2
    assert loss.item() == pytest.approx((v2t + t2v) / 2, rel=1e-9)


def test_local_loss_hand_computed_two_normals_are_positives():
    normal = torch.zeros(2, 1, dtype=torch.bool)
    loss = local_alignment_loss(V2, T2, BOTH, normal, math.log(2.0))
    # every target row is [1/2, 1/2]: -1/2 (log p_i0 + log p_i1) = lse(row) - mean(row)
    v2t = ((lse(2, 1.2) - 1.6) + (lse(0, 1.6) - 0.8)) / 2
    t2v = ((lse(2, 0) - 1.0) + (lse(1.2, 1.6) - 1.4)) / 2
    assert loss.item() == pytest.approx((v2t + t2v) / 2, rel=1e-9)


def test_local_loss_soft_targets_hand_computed():
    targets = tensor([[[1.0, 0.5], [0.5, 1.0]]])  # rows normalise to [2/3, 1/3]
    loss = local_alignment_loss(V2, T2, BOTH, BOTH, math.log(2.0), targets=targets)
    v2t = ((lse(2, 1.2) - (2 * 2 + 1.2) / 3) + (lse(0, 1.6) - (0 + 2 * 1.6) / 3)) / 2
    t2v = ((lse(2, 0) - (2 * 2 + 0) / 3) + (lse(1.2, 1.6) - (1.2 + 2 * 1.6) / 3)) / 2
    assert loss.item() == pytest.approx((v2t + t2v) / 2, rel=1e-9)


def test_sigmoid_local_loss_hand_computed():
    loss = sigmoid_local_loss(V2, T2, BOTH, BOTH, math.log(2.0), logit_bias=-1.0)
    # x = 2*cos - 1 = [[1, 0.2], [-1, 0.6]]; z = +1 on the diagonal, -1 off it
    terms = [softplus(-1.0), softplus(0.2), softplus(-1.0), softplus(-0.6)]
    assert loss.item() == pytest.approx(sum(terms) / 4, rel=1e-9)


def test_anatomy_loss_hand_computed():
    v = tensor([[[1.0, 0.0], [0.6, 0.8]]])  # one sample, two anatomies
    prompts = tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = anatomy_contrastive_loss(v, torch.ones(1, 2, dtype=torch.bool), prompts, math.log(3.0))
    expected = ((lse(3, 0) - 3) + (lse(1.8, 2.4) - 2.4)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_disease_loss_hand_computed():
    # two samples, anatomies (lung, heart); abnormality 0 of the lung, 1 of the heart
    v = tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [1.0, 0.0]]])
    present = torch.tensor([[True, True], [True, False]])
    prompts = tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # (neg, pos) interleaved
    labels = tensor([[1.0, 0.0], [0.0, 1.0]])  # sample 1's heart is absent: its label is ignored
    loss = disease_supervision_loss(v, present, prompts, torch.tensor([0, 1]), labels, math.log(2))
    # s (c_pos - c_neg): sample 0 lung 2*(1-0) = 2, heart 2*(1-0) = 2, sample 1 lung 2*(0.6-0.8)
    expected = (softplus(-2.0) + softplus(2.0) + softplus(-0.4)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="disease_text"):
        disease_supervision_loss(v, present, prompts[:3], torch.tensor([0, 1]), labels, 1.0)
    with pytest.raises(ValueError, match="labels"):
        disease_supervision_loss(v, present, prompts, torch.tensor([0, 1]), labels[:, :1], 1.0)


# Global: tokens a=(0,lung) b=(0,heart) c=(1,lung), all normal; a and b share the same text.
G_V = tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [5.0, 5.0]]])
G_T = tensor([[[0.8, 0.6], [0.0, 1.0]], [[1.0, 0.0], [-3.0, 2.0]]])
G_PRESENT = torch.tensor([[True, True], [True, False]])
G_NORMAL = torch.zeros(2, 2, dtype=torch.bool)
G_TEXTS = [["same", "same"], ["other", ""]]
G_LOGITS = np.array([[0.8, 0.0, 1.0], [0.6, 1.0, 0.0], [0.96, 0.8, 0.6]])  # <v_a, t_b>, s = 1
G_POSITIVES = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])


def test_global_loss_hand_computed_cross_anatomy_never_positive():
    loss = global_cross_anatomy_loss(G_V, G_T, G_PRESENT, G_NORMAL, 0.0, texts=G_TEXTS)
    expected = 0.5 * (
        soft_ce_numpy(G_LOGITS, G_POSITIVES) + soft_ce_numpy(G_LOGITS.T, G_POSITIVES.T)
    )
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_sigmoid_global_loss_hand_computed():
    loss = sigmoid_global_loss(G_V, G_T, G_PRESENT, G_NORMAL, 0.0, logit_bias=0.5, texts=G_TEXTS)
    z = 2 * G_POSITIVES - 1
    expected = np.log1p(np.exp(-z * (G_LOGITS + 0.5))).mean()
    assert loss.item() == pytest.approx(float(expected), rel=1e-9)


def test_diagnosis_loss_hand_computed():
    # two samples, anatomy 0 present in both, anatomy 1 absent everywhere
    v = tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    t = tensor([[[0.6, 0.8], [1.0, 0.0]], [[0.8, 0.6], [1.0, 0.0]]])
    present = torch.tensor([[True, False], [True, False]])
    dictionary = tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    dictionary_anatomy = torch.tensor([0, 0, 1])  # the third sentence belongs to anatomy 1
    exclude = torch.zeros(2, 2, 3, dtype=torch.bool)
    exclude[0, 0, 1] = True  # sample 0 has the finding of dictionary sentence 1
    args = (v, t, present, 0.0, dictionary, dictionary_anatomy, exclude)
    loss = diagnosis_contrastive_loss(*args)
    # token 0: own t0 (0.6), t1 (0.8), d0 (0); token 1: own t1 (0.6), t0 (0.8), d0 (1), d1 (0)
    expected = ((lse(0.6, 0.8, 0.0) - 0.6) + (lse(0.6, 0.8, 1.0, 0.0) - 0.6)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    # both normal: the other sample's description is a false negative and leaves the candidates
    normal = torch.zeros(2, 2, dtype=torch.bool)
    loss = diagnosis_contrastive_loss(*args, abnormal=normal)
    expected = ((lse(0.6, 0.0) - 0.6) + (lse(0.6, 1.0, 0.0) - 0.6)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-9)


# ----------------------------------------------------------------------------- CLIP special case
@pytest.mark.parametrize("reference", ["open_clip", "cross_entropy"])
def test_identity_targets_reduce_to_clip_loss(reference):
    has_open_clip = importlib.util.find_spec("open_clip") is not None
    if reference == "open_clip" and not has_open_clip:
        pytest.skip("open_clip_torch is not installed (it needs torchvision)")
    if reference == "cross_entropy" and has_open_clip:
        pytest.skip("open_clip is installed: its ClipLoss is the reference")

    def clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: float) -> float:
        if reference == "open_clip":
            from open_clip.loss import ClipLoss

            return float(ClipLoss()(img, txt, torch.tensor(scale)))
        logits = scale * img @ txt.T
        labels = torch.arange(len(img))
        return float((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2)

    b, k = 6, 3
    v, t, _, _ = random_batch(b, k, seed=3)
    present = torch.ones(b, k, dtype=torch.bool)
    abnormal = torch.ones(b, k, dtype=torch.bool)
    texts = [[f"finding {i} of {j}" for j in range(k)] for i in range(b)]
    scale = math.log(1 / 0.07)
    loss = local_alignment_loss(v, t, present, abnormal, scale, texts)
    per_anatomy = [clip_loss(v[:, j], t[:, j], 1 / 0.07) for j in range(k)]
    assert loss.item() == pytest.approx(float(np.mean(per_anatomy)), rel=1e-9)


# ----------------------------------------------------------------------------- false negatives
def test_local_targets_normal_pairs_and_identical_texts():
    got = local_targets([False, False, True])
    want = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(got, want)
    got = local_targets([True, True, True], ["nodule.", "effusion.", "nodule."])
    want = torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    torch.testing.assert_close(got, want)


def test_global_targets_never_cross_anatomies():
    got = global_targets([0, 1, 0, 1], [False, False, False, True], ["same"] * 4)
    # tokens 0 and 2 (anatomy 0) are positives; 1 and 3 (anatomy 1) share a text: positives too
    want = torch.tensor([[0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5], [0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5]])
    torch.testing.assert_close(got, want)
    got = global_targets([0, 1, 2], [False, False, False], ["same"] * 3)
    torch.testing.assert_close(got, torch.eye(3))


def test_pair_weights_batched_rule_matches_per_anatomy_targets():
    present = torch.tensor([[True, True], [True, False], [True, True], [False, True]])
    abnormal = torch.tensor([[False, True], [False, False], [True, True], [False, False]])
    texts = [["a", "x"], ["b", ""], ["c", "x"], ["", "y"]]
    w = pair_weights(present, abnormal, texts)
    for k in range(2):
        idx = present[:, k].nonzero().flatten()
        sub = w[k][idx][:, idx].float()
        ref = local_targets(abnormal[idx, k], [texts[i][k] for i in idx.tolist()])
        torch.testing.assert_close(sub / sub.sum(1, keepdim=True), ref)
        assert w[k].sum() == sub.sum()  # nothing outside the present samples


def test_false_negative_rule_lowers_loss_of_swapped_normals():
    v = tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    t = tensor([[[0.0, 1.0]], [[1.0, 0.0]]])  # each visual matches the other sample's text
    normal = torch.zeros(2, 1, dtype=torch.bool)
    as_negatives = local_alignment_loss(v, t, BOTH, BOTH, 2.0)
    as_positives = local_alignment_loss(v, t, BOTH, normal, 2.0)
    same_text = local_alignment_loss(v, t, BOTH, BOTH, 2.0, texts=[["x"], ["x"]])
    assert as_positives < as_negatives
    assert same_text.item() == pytest.approx(as_positives.item())


def test_soft_targets_jaccard_and_hard_rule_special_case():
    labels = tensor([[1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]])
    w = soft_targets_from_labels(labels, torch.tensor([0, 0, 0, 1]))
    want0 = tensor([[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]])
    want1 = tensor([[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    torch.testing.assert_close(w, torch.stack([want0, want1]), check_dtype=False)
    catalog = soft_targets_from_labels(torch.zeros(2, len(ALL_LABELS)))
    assert catalog.shape == (NUM_ANATOMIES, 2, 2) and bool((catalog == 1).all())
    v, t, present, abnormal = random_batch(5, 3, seed=4)
    hard = pair_weights(present, abnormal).double()
    for fn in (local_alignment_loss, global_cross_anatomy_loss):
        torch.testing.assert_close(
            fn(v, t, present, abnormal, 2.0, targets=hard), fn(v, t, present, abnormal, 2.0)
        )


# ----------------------------------------------------------------------------- missing anatomies
def test_absent_and_single_sample_anatomies_are_ignored():
    v, t, _, abnormal = random_batch(3, 3, seed=1)
    present = torch.tensor([[True, True, False], [True, False, False], [True, False, False]])
    loss = local_alignment_loss(v, t, present, abnormal, 2.0)
    only_first = local_alignment_loss(v[:, :1], t[:, :1], present[:, :1], abnormal[:, :1], 2.0)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(only_first.item(), rel=1e-12)


def test_masking_equals_computing_each_anatomy_on_its_own_samples():
    v, t, present, abnormal = random_batch(6, 4, seed=2)
    texts = [[["a", "b"][(i + j) % 2] for j in range(4)] for i in range(6)]
    loss = local_alignment_loss(v, t, present, abnormal, 2.5, texts)
    parts = []
    for k in range(4):
        idx = present[:, k].nonzero().flatten().tolist()
        if len(idx) >= 2:
            sub_texts = [[texts[i][k]] for i in idx]
            args = (v[idx, k : k + 1], t[idx, k : k + 1], present[idx, k : k + 1])
            parts.append(local_alignment_loss(*args, abnormal[idx, k : k + 1], 2.5, sub_texts))
    assert loss.item() == pytest.approx(torch.stack(parts).mean().item(), rel=1e-12)


@pytest.mark.parametrize("fn", PAIR_LOSSES, ids=lambda f: f.__name__)
def test_absent_tokens_do_not_change_any_loss(fn):
    v, t, present, abnormal = random_batch(5, 3, seed=5)
    noise = torch.randn(v.shape, generator=torch.Generator().manual_seed(9), dtype=v.dtype)
    v2 = torch.where(present[..., None], v, 100 * noise)
    t2 = torch.where(present[..., None], t, -100 * noise)
    assert fn(v2, t2, present, abnormal, 2.0).item() == pytest.approx(
        fn(v, t, present, abnormal, 2.0).item(), rel=1e-12
    )


def _all_losses(v, t, present, abnormal, scale, bias, texts=None):
    k, e = v.shape[1], v.shape[2]
    g = torch.Generator().manual_seed(0)
    prompts = F.normalize(torch.randn(k, e, generator=g, dtype=v.dtype), dim=-1)
    dictionary = F.normalize(torch.randn(2 * k, e, generator=g, dtype=v.dtype), dim=-1)
    dict_anatomy = torch.arange(2 * k) % k
    exclude = torch.rand(v.shape[0], k, 2 * k, generator=g) < 0.3
    return {
        "local": local_alignment_loss(v, t, present, abnormal, scale, texts),
        "global": global_cross_anatomy_loss(v, t, present, abnormal, scale, texts),
        "sigmoid_local": sigmoid_local_loss(v, t, present, abnormal, scale, bias, texts),
        "sigmoid_global": sigmoid_global_loss(v, t, present, abnormal, scale, bias, texts),
        "anatomy": anatomy_contrastive_loss(v, present, prompts, scale),
        "diagnosis": diagnosis_contrastive_loss(
            v, t, present, scale, dictionary, dict_anatomy, exclude, abnormal=abnormal, texts=texts
        ),
        "disease": disease_supervision_loss(
            v, present, dictionary, torch.arange(k), abnormal.to(v.dtype), scale
        ),
    }


def _leaves(b, k, seed=0):
    v, t, present, abnormal = random_batch(b, k, seed=seed)
    v.requires_grad_(True)
    t.requires_grad_(True)
    scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-10.0, dtype=torch.float64, requires_grad=True)
    return v, t, present, abnormal, scale, bias


def test_all_absent_batch_gives_zero_and_backward_works():
    v, t, _, abnormal, scale, bias = _leaves(4, 3)
    absent = torch.zeros(4, 3, dtype=torch.bool)
    for name, loss in _all_losses(v, t, absent, abnormal, scale, bias).items():
        assert loss.item() == 0.0, name
        loss.backward()
        for leaf in (v, t, scale):
            assert leaf.grad is not None and bool((leaf.grad == 0).all()), name


def test_gradients_are_finite_and_reach_every_input():
    v, t, present, abnormal, scale, bias = _leaves(6, 4, seed=7)
    texts = [["same"] * 4 for _ in range(6)]
    for name, loss in _all_losses(v, t, present, abnormal, scale, bias, texts).items():
        v.grad = t.grad = scale.grad = bias.grad = None
        loss.backward()
        assert torch.isfinite(loss), name
        assert v.grad.abs().sum() > 0 and scale.grad.abs() > 0, name
        for leaf in (v, t, scale, bias):
            assert leaf.grad is None or bool(torch.isfinite(leaf.grad).all()), name
        if name not in ("anatomy", "disease"):
            assert t.grad.abs().sum() > 0, name
        if name.startswith("sigmoid"):
            assert bias.grad.abs() > 0, name


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda b: st.integers(1, 5).flatmap(
            lambda k: st.tuples(
                st.just(b),
                st.just(k),
                st.lists(st.booleans(), min_size=b * k, max_size=b * k),
                st.lists(st.booleans(), min_size=b * k, max_size=b * k),
                st.lists(st.sampled_from(["", "a", "b"]), min_size=b * k, max_size=b * k),
                st.floats(-2.0, 6.0),
            )
        )
    )
)
def test_random_masks_never_give_nan(case):
    b, k, present, abnormal, words, log_scale = case
    v, t, _, _, scale, bias = _leaves(b, k, seed=b * 10 + k)
    present = torch.tensor(present).reshape(b, k)
    abnormal = torch.tensor(abnormal).reshape(b, k)
    texts = [words[i * k : (i + 1) * k] for i in range(b)]
    with torch.no_grad():
        scale.fill_(log_scale)
    for name, loss in _all_losses(v, t, present, abnormal, scale, bias, texts).items():
        v.grad = t.grad = scale.grad = bias.grad = None
        loss.backward()
        assert torch.isfinite(loss), name
        for leaf in (v, t, scale, bias):
            assert leaf.grad is None or bool(torch.isfinite(leaf.grad).all()), name


# ----------------------------------------------------------------------------- what global does
def test_global_loss_prefers_separated_anatomies_over_collapsed_text():
    b, k, e = 4, 3, 8
    g = torch.Generator().manual_seed(0)
    anatomy_axis = torch.eye(e, dtype=torch.float64)[:k]  # one direction per anatomy
    t_sep = F.normalize(
        anatomy_axis[None] + 0.1 * torch.randn(b, k, e, generator=g, dtype=torch.float64), dim=-1
    )
    v = t_sep.clone()
    t_collapsed = F.normalize(torch.ones(b, k, e, dtype=torch.float64), dim=-1)
    present = torch.ones(b, k, dtype=torch.bool)
    normal = torch.zeros(b, k, dtype=torch.bool)
    separated = global_cross_anatomy_loss(v, t_sep, present, normal, 2.0)
    collapsed = global_cross_anatomy_loss(v, t_collapsed, present, normal, 2.0)
    assert separated < collapsed - 1.0


# ----------------------------------------------------------------------------- presets
def _inputs(b=5, k=3, seed=11):
    v, t, present, abnormal, scale, bias = _leaves(b, k, seed=seed)
    g = torch.Generator().manual_seed(seed)
    embeddings = {
        "v": v,
        "t": t,
        "logit_scale": scale,
        "logit_bias": bias,
        "anatomy_text": F.normalize(torch.randn(k, v.shape[2], generator=g, dtype=v.dtype), dim=-1),
        "dictionary": F.normalize(torch.randn(4, v.shape[2], generator=g, dtype=v.dtype), dim=-1),
        "disease_text": F.normalize(torch.randn(4, v.shape[2], generator=g, dtype=v.dtype), dim=-1),
        "snippet_position": torch.rand(3, generator=g, dtype=v.dtype, requires_grad=True),
    }
    batch = {
        "present": present,
        "abnormal": abnormal,
        "texts": [[f"s{i % 2}a{j}" for j in range(k)] for i in range(b)],
        "dictionary_anatomy": torch.tensor([0, 1, 2, 0]),
        "exclude": torch.zeros(b, k, 4, dtype=torch.bool),
        "disease_anatomy": torch.tensor([0, 2]),
        "disease_labels": (torch.arange(2 * b).reshape(b, 2) % 3 == 0).double(),
        "snippet_target": torch.tensor([0.1, 0.5, 0.9], dtype=v.dtype),
    }
    return embeddings, batch


@pytest.mark.parametrize("preset", sorted(LOSS_PRESETS))
def test_presets_produce_their_terms(preset):
    embeddings, batch = _inputs()
    out = compute_losses(preset, embeddings, batch)
    assert set(out) == set(LOSS_PRESETS[preset]) | {"total"}
    assert torch.isfinite(out["total"])
    assert preset in PRESET_AUGMENT


def test_preset_table():
    assert set(PRESET_AUGMENT) == set(LOSS_PRESETS)
    assert PRESET_AUGMENT["cagcl"] and not PRESET_AUGMENT["fvlm"]
    assert LOSS_PRESETS["cagcl"] == {"local": 1.0, "global": 1.0}
    assert all(set(w) <= set(LOSS_TERMS) for w in LOSS_PRESETS.values())


def test_compute_losses_total_is_weighted_sum_of_all_terms():
    embeddings, batch = _inputs()
    weights = {name: 0.5 + i for i, name in enumerate(LOSS_TERMS)}
    out = compute_losses(weights, embeddings, batch)
    expected = sum(w * out[name].item() for name, w in weights.items())
    assert out["total"].item() == pytest.approx(expected, rel=1e-12)
    direct = local_alignment_loss(
        embeddings["v"],
        embeddings["t"],
        batch["present"],
        batch["abnormal"],
        embeddings["logit_scale"],
        batch["texts"],
    )
    assert out["local"].item() == pytest.approx(direct.item(), rel=1e-12)
    out["total"].backward()
    assert torch.isfinite(embeddings["v"].grad).all()


def test_compute_losses_errors_name_the_problem():
    embeddings, batch = _inputs()
    with pytest.raises(KeyError, match="anatomy_text"):
        compute_losses(
            "ctglip", {k: v for k, v in embeddings.items() if k != "anatomy_text"}, batch
        )
    with pytest.raises(KeyError, match="unknown loss preset"):
        compute_losses("clip", embeddings, batch)
    with pytest.raises(KeyError, match="unknown loss terms"):
        compute_losses({"lokal": 1.0}, embeddings, batch)


def test_bad_shapes_name_the_field():
    v, t, present, abnormal = random_batch(3, 2)
    with pytest.raises(ValueError, match="present"):
        local_alignment_loss(v, t, present[:, :1], abnormal, 1.0)
    with pytest.raises(ValueError, match="texts"):
        global_cross_anatomy_loss(v, t, present, abnormal, 1.0, texts=[["a", "b"]])
    with pytest.raises(ValueError, match="targets"):
        local_alignment_loss(v, t, present, abnormal, 1.0, targets=torch.ones(2, 2, 2))
