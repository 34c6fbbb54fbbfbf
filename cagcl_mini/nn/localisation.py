"""Intra-scan snippet localisation: where along the axial axis a report sentence's finding lies.

Radiologists cite slices ("(series 2, image 37)", :mod:`cagcl_mini.text.citations`); each
citation ties a snippet to a depth in the scan. :class:`LocalisationHead` learns that depth from
what the pretrained encoders already give:

- per-slice image features: the vision tower's feature map ``(B, C, h, w, d)`` averaged over the
  two in-plane axes (:func:`slice_features`), ``(B, C, Z)`` with ``Z = d`` along the RAS+
  superior axis (axis 2 after ``Orientationd("RAS")``);
- the snippet's text embedding ``(B, E)``.

The text attends over the Z slices (a query from the text, keys from each slice's features plus
a Fourier encoding of its depth, so a finding type can also prefer a depth), and the predicted
position is the soft-argmax: the attention-weighted mean of the slice centres ``(z + 0.5) / Z``,
in ``[0, 1]`` (0 the inferior edge of the volume, 1 the superior edge). Position fractions are
independent of the resize, so a position in the 48^3 input is one in the stored volume.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def slice_features(feature_map: torch.Tensor) -> torch.Tensor:
    """``(B, C, Z)`` per-slice features: a ``(B, C, h, w, Z)`` feature map averaged over x, y."""
    if feature_map.dim() != 5:
        raise ValueError(f"feature map must be (B,C,h,w,d), got {tuple(feature_map.shape)}")
    return feature_map.mean(dim=(2, 3))


def slice_centres(z: int, device: torch.device | None = None) -> torch.Tensor:
    """``(Z,)`` positions of the slice centres as fractions of the axis: ``(k + 0.5) / Z``."""
    return (torch.arange(z, device=device, dtype=torch.float32) + 0.5) / z


class LocalisationHead(nn.Module):
    """Text-conditioned soft-argmax over slices: ``(slices (B,C,Z), text (B,E)) -> (B,)`` in
    ``[0, 1]`` (module docstring). ``forward`` also returns the ``(B, Z)`` attention weights."""

    def __init__(
        self, feature_dim: int, text_dim: int, hidden: int = 64, frequencies: int = 4
    ) -> None:
        super().__init__()
        for name, value in (("feature_dim", feature_dim), ("text_dim", text_dim)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.frequencies = int(frequencies)
        self.slice_norm = nn.LayerNorm(int(feature_dim))
        self.slice_proj = nn.Linear(int(feature_dim), hidden)
        self.depth_proj = nn.Linear(2 * self.frequencies, hidden)
        self.query = nn.Sequential(nn.LayerNorm(int(text_dim)), nn.Linear(int(text_dim), hidden))
        self.hidden = int(hidden)

    def depth_code(self, centres: torch.Tensor) -> torch.Tensor:
        """``(Z, 2F)`` Fourier features of the slice centres (sin and cos of ``2^f * pi * p``)."""
        scales = math.pi * 2.0 ** torch.arange(self.frequencies, device=centres.device)
        angles = centres[:, None] * scales[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(
        self, slices: torch.Tensor, text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(position (B,), weights (B, Z))`` of ``slices (B, C, Z)`` and ``text (B, E)``."""
        if slices.dim() != 3 or text.dim() != 2 or slices.shape[0] != text.shape[0]:
            raise ValueError(
                f"slices must be (B,C,Z) and text (B,E) with the same B, got "
                f"{tuple(slices.shape)} and {tuple(text.shape)}"
            )
        centres = slice_centres(slices.shape[-1], slices.device)
        keys = self.slice_proj(self.slice_norm(slices.transpose(1, 2).float()))
        keys = keys + self.depth_proj(self.depth_code(centres))[None]
        query = self.query(text.float())
        weights = torch.softmax(torch.einsum("bzh,bh->bz", keys, query) / self.hidden**0.5, -1)
        return (weights * centres[None]).sum(-1), weights


def localisation_loss(
    position: torch.Tensor, target: torch.Tensor, extent_mm: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute error of predicted positions (fractions); in mm when ``extent_mm``, the
    length of each volume's axial axis, is given."""
    error = (position - target).abs()
    if extent_mm is not None:
        error = error * extent_mm
    if not error.numel():
        raise ValueError("localisation_loss needs at least one (position, target) pair")
    return error.mean()
