"""What every tutorial figure shares: a pyplot-free figure that shows itself in notebooks, and one
fixed colour per catalog anatomy.

Figures are built as :class:`NotebookFigure`, outside ``pyplot``: a notebook shows a returned
figure exactly once (through its ``_repr_png_``, whatever the backend), nothing piles up in
pyplot's figure list, and tests run headless on the Agg canvas.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure

from cagcl_mini.anatomy import ANATOMY_NAMES

# One fixed colour per catalog anatomy, reused by every plot of the tutorial.
_BASE_COLORS: dict[str, str] = {
    "lung": "#4e79a7",
    "heart": "#e15759",
    "aorta": "#f28e2b",
    "esophagus": "#b07aa1",
    "trachea": "#76b7b2",
    "liver": "#9c755f",
    "spleen": "#59a14f",
    "kidney": "#edc948",
}
_FALLBACK = matplotlib.colormaps["tab20"].colors
ANATOMY_COLORS: dict[str, str] = {
    name: _BASE_COLORS.get(name, matplotlib.colors.to_hex(_FALLBACK[i % len(_FALLBACK)]))
    for i, name in enumerate(ANATOMY_NAMES)
}


class NotebookFigure(Figure):
    """A Figure with an Agg canvas that renders itself as PNG in notebooks (``_repr_png_``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        FigureCanvasAgg(self)  # a real canvas, so draw()/savefig work headless

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def anatomy_colormap() -> ListedColormap:
    """Colormap over anatomy ids 0..K: 0 transparent, id k the colour of catalog anatomy k."""
    colors = [(0.0, 0.0, 0.0, 0.0)] + [to_rgba(ANATOMY_COLORS[n]) for n in ANATOMY_NAMES]
    return ListedColormap(colors, name="anatomy")


def new_figure(
    ncols: int = 1, width: float = 5.5, height: float = 3.6
) -> tuple[Figure, list[Axes]]:
    """A :class:`NotebookFigure` with one row of ``ncols`` axes."""
    fig = NotebookFigure(figsize=(width * ncols, height), layout="constrained")
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def figure_axes(ax: Axes | None, **kwargs: Any) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new one-axes figure (``kwargs`` as :func:`new_figure`)."""
    if ax is not None:
        return ax.figure, ax
    fig, axs = new_figure(1, **kwargs)
    return fig, axs[0]


def model_colors(n: int) -> list:
    """``n`` distinguishable colours for models or presets (tab10)."""
    return [matplotlib.colormaps["tab10"](i % 10) for i in range(n)]
