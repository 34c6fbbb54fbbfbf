"""Snippet localisation figure: a strip of coronal slices with the true and predicted depths.

Each panel is one validation snippet: the coronal slice through the middle of its volume (patient
right on the left, superior up, as radiologists view it), a solid line at the cited slice's depth,
a dashed line per preset at its predicted depth and a dotted one at the anatomy-centroid
baseline. The snippet is the panel's title. Input: the ``examples`` of
:func:`cagcl_mini.experiments.localisation.run_localisation`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cagcl_mini.viz.figure import model_colors, new_figure

TRUE_COLOR = "#ffd400"  # yellow: visible on CT, not one of the tab10 preset colours
CENTROID_COLOR = "#bbbbbb"


def plot_localisation(
    examples: Sequence[Mapping[str, Any]] | Mapping[str, Any], width: float = 2.8
) -> Figure:
    """The slice strip of localisation examples (module docstring); ``examples`` may be the
    whole result of ``run_localisation(..., examples=k)``."""
    if isinstance(examples, Mapping):
        if "examples" not in examples:
            raise KeyError(
                "the result has no 'examples': call run_localisation(..., examples=4) for them"
            )
        examples = examples["examples"]
    if not examples:
        raise ValueError("no localisation examples to plot")
    fig, axes = new_figure(len(examples), width=width, height=width * 1.45)
    presets = list(examples[0]["predicted"])
    colors = dict(zip(presets, model_colors(len(presets)), strict=True))
    for ax, ex in zip(axes, examples, strict=True):
        coronal = np.asarray(ex["coronal"])  # (x, z), x towards the patient's right
        depth = coronal.shape[1]
        ax.imshow(
            coronal.T[
                :, ::-1
            ],  # rows z (superior up with origin="lower"), patient right on the left
            cmap="gray",
            origin="lower",
            extent=(0, 1, 0, 1),
            aspect="auto",
        )
        ax.axhline(ex["target"], color=TRUE_COLOR, lw=2.2, label="cited slice")
        for name in presets:
            ax.axhline(ex["predicted"][name], color=colors[name], lw=1.5, ls="--", label=name)
        ax.axhline(ex["anatomy_centroid"], color=CENTROID_COLOR, lw=1.2, ls=":",
                   label="anatomy centroid")  # fmt: skip
        title = "\n".join(textwrap.wrap(ex["snippet"], 34)[:3])
        ax.set_title(f"{ex['id']}\n{title}", fontsize=7.5)
        ax.set_xticks([])
        ax.set_yticks([0, 1], ["inf.", "sup."], fontsize=7)
        ax.set_ylabel(f"depth ({depth} slices)", fontsize=7)
    axes[0].legend(fontsize=6.5, loc="lower left", framealpha=0.8)
    return fig
