"""CT slice views: static orthogonal slices with the anatomy overlay, and an interactive viewer.

Every function returns its :class:`matplotlib.figure.Figure` (a
:class:`~cagcl_mini.viz.figure.NotebookFigure`) or widget.

Slice conventions (volumes are RAS arrays ``(H, W, D)`` = (x: to the patient's right, y: anterior,
z: superior), as the dataset returns them): axial and coronal views are radiological (the patient's
right on the viewer's left), anterior / superior up; sagittal views have anterior on the left.
Each view carries small orientation letters.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cagcl_mini.anatomy import ANATOMY_NAMES, NUM_ANATOMIES
from cagcl_mini.viz.figure import ANATOMY_COLORS, NotebookFigure, anatomy_colormap

# Named HU windows (low, high); "unit" is for volumes already scaled to [0, 1].
WINDOWS: dict[str, tuple[float, float]] = {
    "wide": (-1000.0, 1000.0),
    "lung": (-1350.0, 150.0),
    "mediastinum": (-160.0, 240.0),
    "abdomen": (-150.0, 250.0),
    "unit": (0.0, 1.0),
}
VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")
_VIEW_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}  # array axis a view slices through
# (left, right, top, bottom) letters of each view under the conventions above
_VIEW_LETTERS = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}


def _as_volume(volume: Any, name: str) -> np.ndarray:
    """A (H, W, D) numpy array from a (H, W, D) or (1, H, W, D) array or tensor."""
    if hasattr(volume, "detach"):
        volume = volume.detach().cpu().numpy()
    arr = np.asarray(volume)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (H, W, D) or (1, H, W, D), got shape {arr.shape}")
    return arr


def resolve_window(
    window: str | tuple[float, float] | None, volume: np.ndarray
) -> tuple[float, float]:
    """(low, high) display range: a named window, a pair, or None (unit range or "wide" HU)."""
    if window is None:
        inside_unit = volume.size and float(volume.min()) >= 0.0 and float(volume.max()) <= 1.0
        return WINDOWS["unit"] if inside_unit else WINDOWS["wide"]
    if isinstance(window, str):
        if window not in WINDOWS:
            raise KeyError(f"unknown window {window!r}; choose one of {', '.join(WINDOWS)}")
        return WINDOWS[window]
    lo, hi = (float(v) for v in window)
    if not lo < hi:
        raise ValueError(f"window must be (low, high) with low < high, got {window}")
    return lo, hi


def view_slice(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """The 2-D image of one view as displayed (rows top to bottom, columns left to right)."""
    if view not in _VIEW_AXIS:
        raise ValueError(f"unknown view {view!r}; choose from {VIEWS}")
    axis = _VIEW_AXIS[view]
    if not 0 <= index < volume.shape[axis]:
        raise IndexError(f"{view} index {index} outside 0..{volume.shape[axis] - 1}")
    plane = np.take(volume, index, axis=axis)  # axial (x, y), coronal (x, z), sagittal (y, z)
    plane = plane[::-1]  # radiological x (patient right on the left) / sagittal anterior left
    return plane.T[::-1]  # rows: anterior or superior at the top


def _indices(
    index: int | Sequence[int] | Mapping[str, int] | None, views: Sequence[str], shape: tuple
) -> dict[str, int]:
    centre = {v: shape[_VIEW_AXIS[v]] // 2 for v in views}
    if index is None:
        return centre
    if isinstance(index, Mapping):
        unknown = set(index) - set(VIEWS)
        if unknown:
            raise ValueError(f"index keys must be views {VIEWS}, got {sorted(unknown)}")
        return {v: int(index.get(v, centre[v])) for v in views}
    if isinstance(index, (int, np.integer)):
        return {v: int(index) for v in views}
    if len(index) != len(views):
        raise ValueError(f"index has {len(index)} entries for {len(views)} views {tuple(views)}")
    return {v: int(i) for v, i in zip(views, index, strict=True)}


def _target_axes(ax: Axes | Sequence[Axes] | None, n: int) -> tuple[Figure, list[Axes]]:
    if ax is None:
        fig = NotebookFigure(figsize=(3.0 * n + 1.6, 3.3), layout="constrained")
        axs = fig.subplots(1, n, squeeze=False)[0]
        return fig, list(axs)
    axs = [ax] if isinstance(ax, Axes) else list(ax)
    if len(axs) != n:
        raise ValueError(f"got {len(axs)} axes for {n} views")
    return axs[0].figure, axs


def show_slices(
    volume: Any,
    anatomy: Any = None,
    *,
    axes: Sequence[str] = VIEWS,
    index: int | Sequence[int] | Mapping[str, int] | None = None,
    window: str | tuple[float, float] | None = None,
    alpha: float = 0.4,
    title: str | None = None,
    ax: Axes | Sequence[Axes] | None = None,
) -> Figure:
    """Orthogonal slices of a RAS volume, with the anatomy map overlaid in the catalog colours.

    ``volume`` is (H, W, D) or (1, H, W, D), HU or [0, 1]; ``anatomy`` an id map 0..K of the same
    shape. ``index`` is one int for all views, one per view, or a {view: index} dict (default:
    centre slices). ``window`` is a name from ``WINDOWS`` or (low, high). The legend names the
    anatomies present anywhere in the map. Pass ``ax`` (one Axes per view) to draw into a figure.
    """
    vol = _as_volume(volume, "volume")
    views = list(axes)
    unknown = [v for v in views if v not in _VIEW_AXIS]
    if unknown or not views:
        raise ValueError(f"unknown view(s) {unknown or views}; choose from {VIEWS}")
    lo, hi = resolve_window(window, vol)
    ids = None
    if anatomy is not None:
        ids = _as_volume(anatomy, "anatomy").astype(np.int64)
        if ids.shape != vol.shape:
            raise ValueError(f"anatomy shape {ids.shape} differs from volume shape {vol.shape}")
        if ids.size and (ids.min() < 0 or ids.max() > NUM_ANATOMIES):
            raise ValueError(
                f"anatomy ids must lie in 0..{NUM_ANATOMIES}, got {ids.min()}..{ids.max()}"
            )
    where = _indices(index, views, vol.shape)
    fig, axs = _target_axes(ax, len(views))
    cmap = anatomy_colormap()
    for a, view in zip(axs, views, strict=True):
        a.imshow(view_slice(vol, view, where[view]), cmap="gray", vmin=lo, vmax=hi)
        if ids is not None:
            overlay = view_slice(ids, view, where[view])
            a.imshow(
                overlay, cmap=cmap, vmin=-0.5, vmax=NUM_ANATOMIES + 0.5,
                alpha=float(alpha), interpolation="nearest",
            )  # fmt: skip
        a.set_title(f"{view} {'xyz'[_VIEW_AXIS[view]]}={where[view]}", fontsize=9)
        a.set_xticks([])
        a.set_yticks([])
        for (x, y), letter in zip(
            [(0.02, 0.5), (0.98, 0.5), (0.5, 0.98), (0.5, 0.02)], _VIEW_LETTERS[view], strict=True
        ):
            a.text(x, y, letter, transform=a.transAxes, color="yellow", fontsize=8,
                   ha="center", va="center")  # fmt: skip
    if ids is not None:
        present = [k for k in range(1, NUM_ANATOMIES + 1) if np.any(ids == k)]
        handles = [
            Patch(color=ANATOMY_COLORS[ANATOMY_NAMES[k - 1]], label=ANATOMY_NAMES[k - 1])
            for k in present
        ]
        if handles:
            axs[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                           fontsize=8, frameon=False)  # fmt: skip
    if title:
        fig.suptitle(title)
    return fig


class SliceViewer(widgets.VBox):
    """An ipywidgets viewer: one slider per view (slice index), one for overlay opacity, and the
    three views as a PNG in an ``ipywidgets.Image``.

    The figure is rendered to PNG bytes in the kernel and sent as the image widget's value, so
    every front end that shows widgets (JupyterLab, Notebook 7, VS Code) shows it, with no
    matplotlib backend in the browser. ``sliders`` maps ``axial``, ``coronal``, ``sagittal`` and
    ``alpha`` to their widgets; ``figure`` is the figure last drawn; ``draw(**index)`` redraws.
    """

    def __init__(
        self,
        volume: Any,
        anatomy: Any = None,
        *,
        window: str | tuple[float, float] | None = None,
        alpha: float = 0.4,
        title: str | None = None,
        dpi: int = 80,
    ) -> None:
        self.volume = _as_volume(volume, "volume")
        self.anatomy = None if anatomy is None else _as_volume(anatomy, "anatomy")
        self.window = resolve_window(window, self.volume)
        self.title, self.dpi = title, dpi
        style = {"description_width": "initial"}
        self.sliders: dict[str, Any] = {
            view: widgets.IntSlider(
                value=self.volume.shape[_VIEW_AXIS[view]] // 2,
                min=0,
                max=self.volume.shape[_VIEW_AXIS[view]] - 1,
                description=f"{view} ({'xyz'[_VIEW_AXIS[view]]})",
                continuous_update=False,
                style=style,
            )
            for view in VIEWS
        }
        self.sliders["alpha"] = widgets.FloatSlider(
            value=alpha, min=0.0, max=1.0, step=0.05, description="overlay",
            continuous_update=False, disabled=self.anatomy is None, style=style,
        )  # fmt: skip
        self.image = widgets.Image(format="png")
        self.figure: Figure | None = None
        for slider in self.sliders.values():
            slider.observe(self._on_change, names="value")
        super().__init__([widgets.HBox(list(self.sliders.values())), self.image])
        self.draw()

    def _on_change(self, _change: Any) -> None:
        self.draw()

    def draw(self, **values: float) -> Figure:
        """Draw the views at the sliders' values (``values`` override them); the figure."""
        current = {name: slider.value for name, slider in self.sliders.items()} | values
        index = {view: int(current[view]) for view in VIEWS}
        fig = show_slices(
            self.volume, self.anatomy, index=index, window=self.window,
            alpha=float(current["alpha"]), title=self.title,
        )  # fmt: skip
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=self.dpi)
        self.image.value = buffer.getvalue()
        self.figure = fig
        return fig


def slice_viewer(
    volume: Any,
    anatomy: Any = None,
    *,
    window: str | tuple[float, float] | None = None,
    alpha: float = 0.4,
    title: str | None = None,
) -> SliceViewer:
    """The interactive :class:`SliceViewer` of a volume and, optionally, its anatomy map."""
    return SliceViewer(volume, anatomy, window=window, alpha=alpha, title=title)
