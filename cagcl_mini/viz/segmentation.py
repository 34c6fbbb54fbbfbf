"""Segmentation transfer figures: Dice bars with their intervals, and a predicted vs true mask.

- :func:`plot_dice_bars`: one group of bars per number of labelled volumes, one bar per encoder
  (scratch, fvlm, cagcl), the bar at the mean Dice over seeds, the error bar its 95 % interval,
  each seed's value as a dot.
- :func:`plot_mask_overlay`: one slice of the CT with the true mask's outline (green) and the
  predicted mask's outline (magenta), and the volume's Dice in the title.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cagcl_mini.viz.figure import figure_axes, model_colors, new_figure

TRUE_COLOR, PRED_COLOR = "#2ca02c", "#e377c2"


def _summaries(result: Mapping[str, Any]) -> Mapping[str, Mapping[Any, Mapping[str, Any]]]:
    if "dice" not in result:
        raise KeyError(
            "plot_dice_bars needs run_transfer's result (a dict with a 'dice' table), "
            f"got keys {sorted(result)}"
        )
    return result["dice"]


def plot_dice_bars(result: Mapping[str, Any], ax: Axes | None = None) -> Figure:
    """Grouped bars of mean Dice per encoder and number of labelled volumes, with 95 % intervals
    (``run_transfer``'s ``dice`` table); a finite-interval-free bar (one seed) has no error bar."""
    table = _summaries(result)
    encoders = list(table)
    if not encoders:
        raise ValueError("the result's 'dice' table is empty: no encoder was fine-tuned")
    sizes = list(dict.fromkeys(n for by_n in table.values() for n in by_n))
    fig, a = figure_axes(ax, width=5.5, height=3.4)
    width = 0.8 / len(encoders)
    x = np.arange(len(sizes))
    for e, (color, encoder) in enumerate(zip(model_colors(len(encoders)), encoders, strict=True)):
        means, lows, highs = [], [], []
        for n in sizes:
            s = table[encoder][n]
            lo, hi = (float(v) for v in s["ci95"])
            mean = float(s["mean"])
            means.append(mean)
            ok = math.isfinite(lo) and math.isfinite(hi)
            lows.append(mean - lo if ok else 0.0)
            highs.append(hi - mean if ok else 0.0)
        pos = x - 0.4 + width * (e + 0.5)
        a.bar(pos, np.nan_to_num(means), width=width, color=color, label=encoder,
              yerr=[lows, highs], capsize=3, error_kw={"linewidth": 1})  # fmt: skip
        for p, n in zip(pos, sizes, strict=True):
            seeds = [v for v in table[encoder][n]["per_seed"] if math.isfinite(float(v))]
            a.plot([p] * len(seeds), seeds, "o", color="0.15", markersize=3, zorder=3)
    a.set_xticks(x, [f"{n} labelled" for n in sizes])
    a.set_ylim(0, 1)
    a.set_ylabel("validation Dice")
    finding = result.get("finding", "")
    a.set_title(f"{finding} segmentation: mean over seeds, 95 % t interval".strip(), fontsize=10)
    a.legend(fontsize=8, frameon=False, loc="upper left")
    return fig


def _volume(x: Any, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = np.squeeze(arr)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be one 3-D volume (channel axes of size 1 allowed), "
                         f"got shape {np.shape(x)}")  # fmt: skip
    return arr


def plot_mask_overlay(
    image: Any,
    truth: Any,
    prediction: Any,
    slice_index: int | None = None,
    axis: int = 1,
    title: str | None = None,
) -> Figure:
    """A CT slice with the true (green) and predicted (magenta) mask outlines.

    Volumes are ``(S, S, S)`` (or with singleton channel axes) in RAS order; ``axis`` picks the
    slicing axis (1: coronal, the plane where an effusion's fluid level shows) and ``slice_index``
    the slice (default: the one with the most true voxels). The figure has two panels: the CT
    with outlines, and the masks filled (true, predicted, both).
    """
    img, gt, pr = (_volume(v, n) for v, n in ((image, "image"), (truth, "truth"),
                                              (prediction, "prediction")))  # fmt: skip
    if not img.shape == gt.shape == pr.shape:
        raise ValueError(
            f"image, truth and prediction must share a shape, got {img.shape}, {gt.shape}, "
            f"{pr.shape}"
        )
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    gt, pr = gt > 0, pr > 0
    if slice_index is None:
        other = tuple(a for a in range(3) if a != axis)
        slice_index = int(np.argmax(gt.sum(axis=other)))
    if not 0 <= slice_index < img.shape[axis]:
        raise ValueError(f"slice_index must lie in 0..{img.shape[axis] - 1}, got {slice_index}")
    cut = [np.take(v, slice_index, axis=axis).T for v in (img, gt, pr)]  # rows: the next axis
    both = 2.0 * (cut[1] & cut[2]).sum()
    dice = both / (cut[1].sum() + cut[2].sum()) if (cut[1].sum() + cut[2].sum()) else 1.0
    fig, (left, right) = new_figure(2, width=3.4, height=3.4)
    left.imshow(cut[0], cmap="gray", origin="lower")
    for mask, color in ((cut[1], TRUE_COLOR), (cut[2], PRED_COLOR)):
        if mask.any():
            left.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.2)
    left.set_title(title or f"slice {slice_index} (axis {axis})", fontsize=9)
    filled = np.zeros((*cut[0].shape, 3))
    filled[cut[1]] = (0.17, 0.63, 0.17)
    filled[cut[2]] = (0.89, 0.47, 0.76)
    filled[cut[1] & cut[2]] = (1.0, 1.0, 1.0)
    right.imshow(filled, origin="lower")
    right.set_title(f"green true, magenta predicted, white both (slice Dice {dice:.2f})",
                    fontsize=8)  # fmt: skip
    for a in (left, right):
        a.set_xticks([])
        a.set_yticks([])
    return fig
