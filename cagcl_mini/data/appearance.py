"""Appearance augmentation of training volumes: what another scanner changes, drawn at random.

A model trained at one hospital sees one scanner's noise, reconstruction kernel and HU calibration.
``TrainConfig.image_augment`` draws for each training volume and step, each with probability
``prob``: a Gaussian blur (a softer kernel; MONAI's Gaussian, applied along each axis as one
matrix product, with the border replicated so a body cut by the volume's edge is not darkened),
Gaussian noise (a sharper, noisier kernel) and an HU offset (calibration). They act on the
pipeline's [0, 1] image (its default window ``HU_WINDOW``) and are clipped back to [0, 1] as the
pipeline clips; magnitudes are stated in HU.

Every draw is seeded by (seed, step, global sample index), as the text augmentation is
(:func:`cagcl_mini.train.batches.augment_texts`): every process of a distributed run and a resumed
run augment a volume alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.networks.layers import gaussian_1d

from cagcl_mini.data.transforms import HU_WINDOW


@dataclass(frozen=True)
class Appearance:
    """Magnitudes of the random scanner changes: noise std and |HU offset| drawn up to these
    values, blur sigma (voxels) from ``blur_sigma``; each change applied with probability
    ``prob``."""

    noise_hu: float = 20.0
    offset_hu: float = 20.0
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    prob: float = 0.5


def augment_appearance(
    images: torch.Tensor,
    seed: int,
    step: int,
    first_index: int = 0,
    appearance: Appearance | None = None,
) -> torch.Tensor:
    """A batch ``(B, C, H, W, D)`` with each volume's appearance redrawn, volume j seeded by
    (``seed``, ``step``, ``first_index + j``); the input is left unchanged."""
    images = images.as_tensor() if hasattr(images, "as_tensor") else torch.as_tensor(images)
    if images.dim() != 5:
        raise ValueError(f"images must be (B,C,H,W,D), got {tuple(images.shape)}")
    a = appearance or Appearance()
    unit = HU_WINDOW[1] - HU_WINDOW[0]
    out = images.detach().clone()
    with torch.no_grad():
        for j in range(images.shape[0]):
            rng = np.random.default_rng([int(seed), int(step), int(first_index) + j])
            blur, noise, offset = rng.random(3) < a.prob
            sigma = rng.uniform(*a.blur_sigma)
            noise_std = rng.uniform(0.0, a.noise_hu) / unit
            shift = rng.uniform(-a.offset_hu, a.offset_hu) / unit
            generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
            volume = out[j : j + 1]
            if blur:
                volume = _blur(volume, sigma)
            if noise:
                volume = volume + noise_std * torch.randn(
                    volume.shape, generator=generator, dtype=volume.dtype
                )
            if offset:
                volume = volume + shift
            out[j] = volume[0].clamp(0.0, 1.0)
    return out


def blur_matrix(size: int, sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(size, size)`` matrix of a 1-D Gaussian filter (MONAI's kernel, cut at 4 sigma) whose
    taps beyond the ends fall on the end voxels (replicate padding): ``M @ x`` blurs ``x``."""
    kernel = gaussian_1d(torch.tensor(float(sigma)), truncated=4.0).to(torch.float64)
    half = (kernel.numel() - 1) // 2
    rows = torch.arange(size).unsqueeze(1)
    cols = (rows + torch.arange(-half, half + 1)).clamp(0, size - 1)
    matrix = torch.zeros(size, size, dtype=torch.float64)
    matrix.scatter_add_(1, cols, kernel.expand(size, -1).contiguous())
    return matrix.to(dtype)


def _blur(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """A ``(1, C, H, W, D)`` volume blurred along its three spatial axes."""
    h, w, d = volume.shape[2:]
    mh, mw, md = (blur_matrix(n, sigma, volume.dtype) for n in (h, w, d))
    volume = torch.einsum("ai,nzijk->nzajk", mh, volume)
    volume = torch.einsum("bj,nzajk->nzabk", mw, volume)
    return torch.einsum("ck,nzabk->nzabc", md, volume)
