"""Segmentation figures: Dice bars carry their intervals and seeds, the overlay draws both masks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402

from cagcl_mini.viz import segmentation as viz  # noqa: E402


def _result() -> dict:
    def cell(values):
        return {"mean": float(np.mean(values)), "ci95": [min(values), max(values)],
                "per_seed": list(values)}  # fmt: skip

    return {
        "finding": "Pleural effusion",
        "dice": {
            "scratch": {10: cell([0.2, 0.3, 0.25]), 30: cell([0.4, 0.5, 0.45])},
            "cagcl": {10: cell([0.3, 0.35, 0.4]), 30: cell([0.5, 0.55, 0.6])},
            "fvlm": {10: {"mean": 0.3, "ci95": [math.nan, math.nan], "per_seed": [0.3]},
                     30: cell([0.5, 0.5, 0.5])},
        },
    }  # fmt: skip


def test_dice_bars_have_one_bar_per_encoder_and_size_with_intervals_and_seed_dots():
    fig = viz.plot_dice_bars(_result())
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_label() for b in bars] == ["scratch", "cagcl", "fvlm"]
    heights = [[round(p.get_height(), 3) for p in b.patches] for b in bars]
    assert heights == [[0.25, 0.45], [0.35, 0.55], [0.3, 0.5]]
    errors = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(errors) == 3
    # the scratch bar at 10 volumes spans its interval 0.2..0.3
    segments = errors[0].lines[2][0].get_segments()
    assert np.allclose([segments[0][0][1], segments[0][1][1]], [0.2, 0.3])
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert sum(len(d.get_xdata()) for d in dots) == 3 + 3 + 3 + 3 + 1 + 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10 labelled", "30 labelled"]
    assert "Pleural effusion" in ax.get_title()
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dice_bars_name_what_they_need():
    with pytest.raises(KeyError, match="needs run_transfer's result .* got keys \\['runs'\\]"):
        viz.plot_dice_bars({"runs": []})
    with pytest.raises(ValueError, match="'dice' table is empty"):
        viz.plot_dice_bars({"dice": {}})


def test_overlay_draws_the_true_and_predicted_outlines_on_the_fullest_slice():
    image = torch.rand(1, 24, 24, 24)
    truth = torch.zeros(1, 24, 24, 24, dtype=torch.uint8)
    truth[0, 5:12, 9:11, 4:10] = 1  # most true voxels on the axis-1 slices 9 and 10
    pred = torch.zeros_like(truth)
    pred[0, 6:12, 9:11, 4:10] = 1
    fig = viz.plot_mask_overlay(image, truth, pred)
    left, right = fig.axes
    assert left.get_title() == "slice 9 (axis 1)"
    contours = [c for c in left.collections if hasattr(c, "get_paths")]
    assert len(contours) >= 2  # one outline per mask
    filled = right.images[0].get_array()
    assert filled.shape == (24, 24, 3)
    white = np.all(np.asarray(filled) == 1.0, axis=-1).sum()
    assert white == 6 * 6  # the overlap of both masks on that slice
    assert "slice Dice 0.92" in right.get_title()  # 2*36 / (42 + 36)


def test_overlay_refuses_volumes_of_different_shapes_in_one_line():
    with pytest.raises(ValueError, match=r"share a shape, got \(8, 8, 8\), \(8, 8, 4\)"):
        viz.plot_mask_overlay(np.zeros((8, 8, 8)), np.zeros((8, 8, 4)), np.zeros((8, 8, 8)))
    with pytest.raises(ValueError, match="slice_index must lie in 0..7, got 9"):
        viz.plot_mask_overlay(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), 9)
