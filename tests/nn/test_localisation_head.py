"""The localisation head: shapes, soft-argmax range, and learning a position it can see."""

from __future__ import annotations

import pytest
import torch

from cagcl_mini.nn.localisation import (
    LocalisationHead,
    localisation_loss,
    slice_centres,
    slice_features,
)


def test_shapes_and_range():
    head = LocalisationHead(feature_dim=6, text_dim=5, hidden=8)
    feats = slice_features(torch.randn(3, 6, 4, 5, 7))
    assert feats.shape == (3, 6, 7)
    position, weights = head(feats, torch.randn(3, 5))
    assert position.shape == (3,) and weights.shape == (3, 7)
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    assert ((position > 0) & (position < 1)).all()  # inside the first and last slice centres
    assert torch.allclose(slice_centres(4), torch.tensor([0.125, 0.375, 0.625, 0.875]))
    with pytest.raises(ValueError, match=r"slices must be \(B,C,Z\) and text \(B,E\)"):
        head(feats, torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"feature map must be \(B,C,h,w,d\)"):
        slice_features(torch.randn(3, 6, 7))
    with pytest.raises(ValueError, match="at least one"):
        localisation_loss(torch.zeros(0), torch.zeros(0))
    extent = torch.tensor([100.0, 200.0])
    assert localisation_loss(
        torch.tensor([0.1, 0.5]), torch.tensor([0.2, 0.4]), extent
    ) == pytest.approx(15.0)


def test_a_few_steps_learn_a_visible_position():
    """Each volume has one bright slice where the finding is; the text says which of two
    findings is asked for (two bright slices per volume, one per finding channel)."""
    g = torch.Generator().manual_seed(0)
    n, c, z = 64, 4, 12
    slices = 0.1 * torch.randn(n, c, z, generator=g)
    where = torch.randint(0, z, (n, 2), generator=g)
    asked = torch.randint(0, 2, (n,), generator=g)
    rows = torch.arange(n)
    slices[rows, 0, where[:, 0]] += 3.0  # finding A shows in channel 0
    slices[rows, 1, where[:, 1]] += 3.0  # finding B in channel 1
    text = torch.nn.functional.one_hot(asked, 2).float()
    target = (where[rows, asked].float() + 0.5) / z
    torch.manual_seed(0)
    head = LocalisationHead(c, 2, hidden=16)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = float(localisation_loss(head(slices, text)[0], target).detach())
    for _ in range(150):
        loss = localisation_loss(head(slices, text)[0], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = float(localisation_loss(head(slices, text)[0], target))
    assert last < 0.5 * first and last < 0.08, (first, last)
