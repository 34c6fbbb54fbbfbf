"""Appearance augmentation: seeded per volume, bounded in HU, clipped as the pipeline clips."""

from __future__ import annotations

import pytest
import torch

from cagcl_mini.data.appearance import HU_WINDOW, Appearance, _blur, augment_appearance, blur_matrix

UNIT = HU_WINDOW[1] - HU_WINDOW[0]  # HU per image unit


def _batch(n: int = 4, size: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand((n, 1, size, size, size), generator=generator) * 0.6 + 0.2


def test_each_volume_is_seeded_by_seed_step_and_its_global_index():
    images = _batch()
    before = images.clone()
    first = augment_appearance(images, seed=3, step=7)
    assert torch.equal(images, before)  # the input is left alone
    assert torch.equal(first, augment_appearance(images, seed=3, step=7))
    assert not torch.equal(first, augment_appearance(images, seed=3, step=8))
    assert not torch.equal(first, augment_appearance(images, seed=4, step=7))
    # a process holding samples 2..3 of the global batch augments them as one process would
    second_half = augment_appearance(images[2:], seed=3, step=7, first_index=2)
    assert torch.equal(second_half, first[2:])
    assert first.shape == images.shape and first.dtype == images.dtype
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0


def test_noise_and_offset_stay_within_their_hu_bounds():
    flat = torch.full((8, 1, 16, 16, 16), 0.5)
    noise = augment_appearance(flat, 0, 0, appearance=Appearance(offset_hu=0.0, prob=1.0))
    noise_hu = (noise - flat).flatten(1).std(dim=1) * UNIT
    assert (noise_hu > 0.0).all() and (noise_hu <= 20.0 * 1.1).all()
    shift = augment_appearance(flat, 0, 0, appearance=Appearance(noise_hu=0.0, prob=1.0))
    offsets_hu = (shift - flat).flatten(1) * UNIT
    assert torch.allclose(offsets_hu, offsets_hu[:, :1], atol=1e-3)  # one offset per volume
    assert (offsets_hu.abs() <= 20.0 + 1e-3).all() and offsets_hu.abs().max() > 1.0


def test_blur_smooths_an_edge_and_nothing_happens_at_probability_zero():
    edge = torch.zeros((2, 1, 16, 16, 16))
    edge[..., 8:] = 1.0
    blurred = augment_appearance(
        edge, 0, 0, appearance=Appearance(noise_hu=0.0, offset_hu=0.0, prob=1.0)
    )
    assert 0.0 < float(blurred[0, 0, 8, 8, 7]) < 0.5 < float(blurred[0, 0, 8, 8, 8]) < 1.0
    assert torch.equal(augment_appearance(edge, 0, 0, appearance=Appearance(prob=0.0)), edge)
    # the border is padded with its own values: a body cut by the volume's edge stays as bright
    flat = torch.full((2, 1, 16, 16, 16), 0.5)
    kept = augment_appearance(flat, 0, 0, appearance=Appearance(noise_hu=0, offset_hu=0, prob=1))
    assert torch.allclose(kept, flat, atol=1e-4)  # zero padding would give 0.2-0.4 there


def test_a_batch_must_be_five_dimensional():
    with pytest.raises(ValueError, match=r"images must be \(B,C,H,W,D\), got \(1, 8, 8, 8\)"):
        augment_appearance(torch.zeros(1, 8, 8, 8), 0, 0)


@pytest.mark.parametrize("sigma", [0.5, 0.8, 1.0])
def test_the_blur_equals_monai_separable_filtering_with_replicated_borders(sigma):
    from monai.networks.layers import gaussian_1d, separable_filtering

    volume = _batch(n=1, size=10)[:, :, :, :7, :9].repeat(1, 2, 1, 1, 1)  # any shape, 2 channels
    kernel = gaussian_1d(torch.tensor(sigma), truncated=4.0)
    expected = separable_filtering(volume, [kernel] * 3, mode="replicate")
    assert torch.allclose(_blur(volume, sigma), expected, atol=1e-6)
    assert torch.allclose(blur_matrix(12, sigma).sum(dim=1), torch.ones(12), atol=1e-3)  # the mean
