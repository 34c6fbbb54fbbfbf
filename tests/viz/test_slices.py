"""viz: static orthogonal slices with anatomy overlay, and the ipywidgets slice viewer (headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cagcl_mini.anatomy import ANATOMY_ID, ANATOMY_NAMES, NUM_ANATOMIES  # noqa: E402
from cagcl_mini.viz.slices import (  # noqa: E402
    ANATOMY_COLORS,
    anatomy_colormap,
    show_slices,
    slice_viewer,
    view_slice,
)


def volume_and_map(shape=(12, 10, 8)):
    """A volume whose voxel value encodes its (x, y, z) index, and a map with three anatomies."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    vol = (x * 10000 + y * 100 + z).astype(np.float32)
    anat = np.zeros(shape, dtype=np.int64)
    anat[0:3, 0:3, 0:3] = ANATOMY_ID["liver"]
    anat[6:9, 5:8, 4:6] = ANATOMY_ID["lung"]
    anat[10:12, 8:10, 7:8] = ANATOMY_ID["kidney"]
    return vol, anat


def _legend_names(fig):
    legends = [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def test_palette_covers_the_catalog_with_distinct_colours():
    assert list(ANATOMY_COLORS) == list(ANATOMY_NAMES)
    assert len(set(ANATOMY_COLORS.values())) == NUM_ANATOMIES
    cmap = anatomy_colormap()
    assert cmap.N == NUM_ANATOMIES + 1 and cmap(0)[3] == 0.0  # background transparent


def test_show_slices_axes_and_legend():
    vol, anat = volume_and_map()
    fig = show_slices(torch.from_numpy(vol)[None], torch.from_numpy(anat), title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert sorted(_legend_names(fig)) == sorted(["liver", "lung", "kidney"])
    assert [a.get_title().split()[0] for a in fig.axes] == ["axial", "coronal", "sagittal"]
    fig.canvas.draw()  # renders headless


def test_show_slices_views_follow_the_display_conventions():
    vol, _ = volume_and_map()
    fig = show_slices(vol, axes=("axial", "coronal", "sagittal"), index=(2, 3, 4))
    axial, coronal, sagittal = (a.get_images()[0].get_array() for a in fig.axes)
    # axial z=2: top-left pixel is the patient's right (max x) and anterior (max y)
    assert axial.shape == (10, 12) and axial[0, 0] == 11 * 10000 + 9 * 100 + 2
    assert axial[-1, -1] == 0 * 10000 + 0 * 100 + 2  # bottom right: left, posterior
    assert coronal.shape == (8, 12) and coronal[0, 0] == 11 * 10000 + 3 * 100 + 7  # right, superior
    assert sagittal.shape == (8, 10) and sagittal[0, 0] == 4 * 10000 + 9 * 100 + 7  # anterior, sup.
    np.testing.assert_array_equal(view_slice(vol, "axial", 2), axial)


def test_show_slices_single_view_into_given_axes_and_no_overlay():
    vol, anat = volume_and_map()
    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    out = show_slices(vol, anat, axes=("coronal",), index={"coronal": 6}, ax=ax)
    assert out is fig and len(fig.axes) == 1
    assert _legend_names(fig) == ["lung", "liver", "kidney"]  # whole map, catalog order
    assert _legend_names(show_slices(vol)) == []


def test_overlay_colours_match_the_palette():
    vol, anat = volume_and_map()
    fig = show_slices(vol, anat, axes=("axial",), index=1, alpha=1.0)
    overlay = fig.axes[0].get_images()[1]
    rgba = overlay.to_rgba(overlay.get_array())
    # liver occupies x 0..2, y 0..2 -> bottom-right corner of the radiological axial view
    expected = matplotlib.colors.to_rgba(ANATOMY_COLORS["liver"])
    np.testing.assert_allclose(rgba[-1, -1], expected, atol=1e-6)
    assert rgba[0, 0][3] == 0.0  # background transparent


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"anatomy": np.zeros((3, 3, 3), int)}, "differs from volume shape"),
        ({"anatomy": np.full((12, 10, 8), NUM_ANATOMIES + 1)}, "anatomy ids"),
        ({"index": {"axial": 99}}, "outside"),
        ({"index": {"top": 1}}, "views"),
        ({"window": "bone??"}, "unknown window"),
        ({"axes": ("oblique",)}, "unknown view"),
    ],
)
def test_show_slices_rejects_bad_input(kwargs, error):
    vol, _ = volume_and_map()
    with pytest.raises((ValueError, IndexError, KeyError), match=error):
        show_slices(vol, **kwargs)


def test_slice_viewer_sliders_and_redraw():
    import io

    import ipywidgets as widgets
    from PIL import Image

    vol, anat = volume_and_map()
    w = slice_viewer(torch.from_numpy(vol), anat)
    assert isinstance(w, widgets.VBox) and w.image in w.children
    sliders = {s.description.split()[0]: s for s in w.sliders.values()}
    assert {k: (s.min, s.max) for k, s in sliders.items() if k != "overlay"} == {
        "axial": (0, 7),
        "coronal": (0, 9),
        "sagittal": (0, 11),
    }
    assert sliders["overlay"].max == 1.0 and not sliders["overlay"].disabled
    first, first_png = w.figure, w.image.value
    assert isinstance(first, Figure) and first.axes[0].get_title() == "axial z=4"
    # the image widget holds a real PNG of the figure (what the browser shows)
    png = Image.open(io.BytesIO(first_png))
    assert png.format == "PNG" and png.size[0] > 100 and png.size[1] > 50
    sliders["axial"].value = 6  # the slider triggers a redraw
    assert w.figure is not first and w.figure.axes[0].get_title() == "axial z=6"
    assert w.image.value != first_png
    np.testing.assert_array_equal(
        w.figure.axes[0].get_images()[0].get_array(), view_slice(vol, "axial", 6)
    )
    fig = w.draw(axial=1, coronal=2, sagittal=3, alpha=0.7)
    assert [a.get_title() for a in fig.axes] == ["axial z=1", "coronal y=2", "sagittal x=3"]
    assert fig.axes[0].get_images()[1].get_alpha() == 0.7


def test_slice_viewer_without_anatomy_disables_opacity():
    vol, _ = volume_and_map()
    w = slice_viewer(vol / vol.max())
    assert w.sliders["alpha"].disabled and len(w.figure.axes[0].get_images()) == 1
