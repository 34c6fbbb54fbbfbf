"""Figures of notebook 07: retrieval recall@k against chance, and a generated report beside the
true one with the anatomies whose findings differ marked.

Both draw what :mod:`cagcl_mini.evaluation.retrieval`, :mod:`~cagcl_mini.evaluation.report_generation`
and :mod:`~cagcl_mini.evaluation.report_metrics` computed; they compute nothing of their own beyond
the layout.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from cagcl_mini.anatomy import ANATOMY_NAMES, NUM_ANATOMIES
from cagcl_mini.evaluation.report_metrics import anatomy_differences
from cagcl_mini.viz.figure import ANATOMY_COLORS, model_colors, new_figure

DIRECTIONS: dict[str, str] = {
    "image_to_text": "volume -> report",
    "text_to_image": "report -> volume",
}
DIFFER_COLOR = "#fbe3e4"  # the row shade of an anatomy whose findings differ
CHANCE_COLOR = "0.75"


def _recall(row: Mapping[str, Any], k: int) -> tuple[float, tuple[float, float] | None]:
    """recall@k and its interval from a ``retrieval_recall`` direction (``recall@k``) or a bench
    row (``recall_at_k``)."""
    for key in (f"recall@{k}", f"recall_at_{k}"):
        if key in row:
            ci = row.get(f"{key}_ci95")
            return float(row[key]), (tuple(ci) if ci is not None else None)
    raise KeyError(f"no recall@{k} (or recall_at_{k}) in the retrieval result; keys: {sorted(row)}")


def plot_recall_at_k(
    results: Mapping[str, Mapping[str, Any]],
    ks: Sequence[int] = (1, 5, 10),
    directions: Sequence[str] = tuple(DIRECTIONS),
    title: str | None = None,
) -> Figure:
    """Bars of recall@k per model (one panel per direction) with their 95 % intervals, and the
    random baseline k/N as a grey bar beside them.

    ``results`` maps a model name to a :func:`~cagcl_mini.evaluation.retrieval.retrieval_recall`
    result (``image_to_text``, ``text_to_image``, ``n``).
    """
    if not results:
        raise ValueError("results: no model to plot")
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError(f"direction {d!r}: choose from {', '.join(DIRECTIONS)}")
    fig, axes = new_figure(len(directions), width=4.6, height=3.4)
    names, colors = list(results), model_colors(len(results))
    n = {int(r["n"]) for r in results.values()}
    if len(n) != 1:
        raise ValueError(
            f"results: the models were scored on different numbers of pairs {sorted(n)}"
        )
    n_pairs = n.pop()
    width = 0.8 / (len(names) + 1)
    x = np.arange(len(ks))
    for ax, direction in zip(axes, directions, strict=True):
        for j, name in enumerate(names):
            values = [_recall(results[name][direction], k) for k in ks]
            heights = np.array([v for v, _ in values])
            err = None
            if all(ci is not None for _, ci in values):
                lo = np.array([ci[0] for _, ci in values])
                hi = np.array([ci[1] for _, ci in values])
                err = np.vstack([heights - lo, hi - heights]).clip(min=0)
            ax.bar(x + j * width, heights, width, yerr=err, capsize=2, color=colors[j], label=name)
        chance = [min(1.0, k / n_pairs) for k in ks]
        ax.bar(x + len(names) * width, chance, width, color=CHANCE_COLOR, hatch="//",
               label=f"random (k/N, N={n_pairs})")  # fmt: skip
        ax.set_xticks(x + width * len(names) / 2, [f"R@{k}" for k in ks])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("recall")
        ax.set_title(DIRECTIONS[direction])
    axes[-1].legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title)
    return fig


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width) or [""]


def plot_report_comparison(
    generated: Sequence[str],
    true: Sequence[str],
    title: str | None = None,
    width: int = 46,
    ax: Axes | None = None,
) -> Figure:
    """The generated and the true report side by side, one row per catalog anatomy: rows whose
    findings differ (:func:`~cagcl_mini.evaluation.report_metrics.anatomy_differences`) are
    shaded and name the findings each side asserts; absent anatomies are greyed.

    ``generated`` and ``true`` are K per-anatomy descriptions in catalog order ("" where absent),
    e.g. ``GeneratedReports.texts[i]`` and ``EmbeddedSplit.texts[i]``.
    """
    differ = anatomy_differences(generated, true)
    rows = []
    for k, name in enumerate(ANATOMY_NAMES):
        left, right = _wrap(generated[k] or "(absent)", width), _wrap(true[k] or "(absent)", width)
        if name in differ:
            ours, theirs = differ[name]
            left += _wrap(f"≠ findings: {', '.join(sorted(ours)) or 'normal'}", width)
            right += _wrap(f"≠ findings: {', '.join(sorted(theirs)) or 'normal'}", width)
        rows.append((name, left, right, max(len(left), len(right))))
    n_lines = sum(r[3] for r in rows) + NUM_ANATOMIES
    if ax is None:
        fig, (ax,) = new_figure(1, width=11.0, height=0.6 + 0.19 * (n_lines + 2))
    else:
        fig = ax.figure
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(n_lines + 1.5, 0)
    ax.text(0.13, 0.5, "generated (retrieval)", weight="bold", va="center")
    ax.text(0.57, 0.5, "true report", weight="bold", va="center")
    y = 1.5
    for name, left, right, height in rows:
        absent = not generated[ANATOMY_NAMES.index(name)] and not true[ANATOMY_NAMES.index(name)]
        if name in differ:
            ax.add_patch(Rectangle((0, y - 0.5), 1, height + 0.6, color=DIFFER_COLOR, zorder=0))
        color = "0.6" if absent else "black"
        ax.text(0.0, y, name, color=ANATOMY_COLORS[name], weight="bold", va="top")
        for col, lines in ((0.13, left), (0.57, right)):
            marked = False  # from the "≠ findings" line on (it may wrap)
            for i, line in enumerate(lines):
                marked = marked or line.startswith("≠")
                ax.text(col, y + i, line, va="top", fontsize=8.5,
                        color="#c0392b" if marked else color, weight="bold" if marked else None)  # fmt: skip
        y += height + 1
    ax.set_title(
        title or f"{len(differ)} of {NUM_ANATOMIES} anatomies differ in their findings",
        loc="left",
    )
    return fig
