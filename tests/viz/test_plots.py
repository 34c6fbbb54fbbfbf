"""Evaluation plots: each returns a headless figure with the expected axes, curves and bars."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.patches import StepPatch  # noqa: E402

from cagcl_mini.evaluation.collapse import text_collapse_stats  # noqa: E402
from cagcl_mini.viz import plots as viz  # noqa: E402


def _png(fig: Figure) -> bytes:
    data = fig._repr_png_() if hasattr(fig, "_repr_png_") else None
    if data is None:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        data = buf.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def _stats(seed: int, spread: float):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=16)
    emb = base + spread * rng.normal(size=(30, 16))
    return text_collapse_stats(emb, np.arange(30) % 4)


def test_cosine_histograms_one_curve_per_model_and_panel():
    stats = {"fvlm": _stats(0, 0.3), "cagcl": _stats(1, 3.0)}
    fig = viz.plot_cosine_histograms(stats)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    steps = [p for p in fig.axes[0].patches if isinstance(p, StepPatch)]
    assert len(steps) == 2
    # the curves are densities over [-1, 1]
    for p in steps:
        values, edges = p.get_data().values, p.get_data().edges
        assert np.sum(values * np.diff(edges)) == pytest.approx(1.0)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("fvlm (mean ") and labels[1].startswith("cagcl")
    fig = viz.plot_cosine_histograms(
        {"m": {"collapse": stats["fvlm"]}}, groups=("within", "across")
    )
    assert len(fig.axes) == 2
    _png(fig)
    with pytest.raises(KeyError, match="no 'nope' group"):
        viz.plot_cosine_histograms(stats, groups=("nope",))


@pytest.mark.parametrize("method", ["uncentred", "pca", "tsne"])
def test_embedding_map_one_scatter_per_anatomy(method):
    rng = np.random.default_rng(0)
    idx = np.repeat([0, 2, 5], 8)
    emb = rng.normal(size=(24, 12)) + 4 * np.eye(12)[idx]
    fig = viz.plot_embedding_map(emb, idx, method=method)
    scatters = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert len(scatters) == 3
    assert [s.get_label() for s in scatters] == ["lung", "aorta", "liver"]
    assert matplotlib.colors.to_hex(scatters[0].get_facecolor()[0]) == viz.ANATOMY_COLORS["lung"]
    assert sum(len(s.get_offsets()) for s in scatters) == 24
    with pytest.raises(ValueError, match="method"):
        viz.plot_embedding_map(emb, idx, method="umap")


def test_uncentred_map_shows_a_collapsed_space_as_one_cloud_that_pca_would_split():
    rng = np.random.default_rng(0)
    idx = np.repeat([0, 1, 2], 10)
    shared = np.eye(16)[0] * 10
    collapsed = shared + np.eye(16)[idx + 1] * 1.0 + rng.normal(scale=0.05, size=(30, 16))
    spread = np.eye(16)[idx + 1] * 10 + rng.normal(scale=0.05, size=(30, 16))
    xy_c, norm_c = viz.uncentred_projection(collapsed)
    xy_s, norm_s = viz.uncentred_projection(spread)
    assert norm_c > 0.95 and norm_s < 0.65
    # collapsed: every point near (1, 0) on the shared axis; spread: far apart
    assert xy_c[:, 0].min() > 0.95 and np.ptp(xy_c, axis=0).max() < 0.3
    assert np.ptp(xy_s, axis=0).max() > 0.5
    # PCA removes the shared direction, so the collapsed space looks as separated as the spread one
    from sklearn.decomposition import PCA

    pca_c = PCA(n_components=2).fit_transform(collapsed)
    centres = np.stack([pca_c[idx == k].mean(axis=0) for k in range(3)])
    within = max(pca_c[idx == k].std(axis=0).max() for k in range(3))
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i)]
    assert min(gaps) > 5 * within  # three clean clusters: the collapse is invisible in PCA
    fig = viz.plot_embedding_map(collapsed, idx)
    ax = fig.axes[0]
    assert ax.get_xlim() == (-1.05, 1.05) and ax.get_ylim() == (-1.05, 1.05)
    assert any(t.get_text() == f"|mean vector| = {norm_c:.2f}" for t in ax.texts)


def test_loss_curves_from_a_jsonl_log(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [{"step": s, "lr": 1e-3, "loss": 2.0 / s, "local": 1.0 / s, "global": 1.0 / s,
             "grad_norm": 1.0, "temperature": 0.07} for s in range(1, 11)]  # fmt: skip
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = viz.plot_loss_curves(log)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["loss", "local", "global"]
    np.testing.assert_allclose(lines[0].get_ydata(), [2.0 / s for s in range(1, 11)])
    fig = viz.plot_loss_curves(rows, terms=["local"], smooth=3)
    assert len(fig.axes[0].get_lines()) == 1
    with pytest.raises(KeyError, match="not in the log"):
        viz.plot_loss_curves(rows, terms=["diagnosis"])
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        viz.plot_loss_curves(tmp_path / "missing.jsonl")


def test_auc_per_abnormality_grouped_bars():
    a = pd.DataFrame({"auc": [0.9, 0.6, 0.7]}, index=["Lung nodule", "Cardiomegaly", "Emphysema"])
    b = {
        "detection": {
            "per_abnormality": {"Lung nodule": {"auc": 0.8}, "Cardiomegaly": {"auc": None}}
        }
    }
    fig = viz.plot_auc_per_abnormality({"fvlm": a, "cagcl": b})
    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert len(bars) == 2 and all(len(c) == 3 for c in bars)
    assert [r.get_width() for r in bars[0]] == [0.9, 0.6, 0.7]
    assert [r.get_width() for r in bars[1]] == [0.8, 0.0, 0.0]  # missing / NaN drawn as 0
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(a.index)


def test_auc_bars_carry_their_intervals_and_positive_counts():
    det = {"detection": {"per_abnormality": {
        "Emphysema": {"auc": 0.8, "auc_ci95": [0.7, 0.85], "n_positive": 12},
        "Cardiomegaly": {"auc": 0.6, "auc_ci95": [0.5, 0.75], "n_positive": 30},
    }}}  # fmt: skip
    fig = viz.plot_auc_per_abnormality({"cagcl": det})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Emphysema (12+)", "Cardiomegaly (30+)"]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)][0]
    segments = bars.errorbar.lines[2][0].get_segments()
    assert [tuple(np.round(seg[:, 0], 3)) for seg in segments] == [(0.7, 0.85), (0.5, 0.75)]


def test_prompt_family_bars_one_set_per_model():
    fams = ["fvlm", "ctclip", "hlip", "colipri", "paraphrase"]
    rob = {"families": fams, "macro_auc": dict(zip(fams, [0.7, 0.6, 0.65, 0.55, 0.5], strict=True)),
           "mean": 0.6, "std": 0.07}  # fmt: skip
    fig = viz.plot_prompt_family_auc({"a": rob, "b": {"prompt_robustness": rob}})
    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert len(bars) == 2 and all(len(c) == 5 for c in bars)
    assert [r.get_height() for r in bars[0]] == [0.7, 0.6, 0.65, 0.55, 0.5]
    assert "0.600 ± 0.070" in fig.axes[0].get_legend().get_texts()[0].get_text()


def test_similarity_matrix_with_and_without_targets():
    sim = np.arange(12.0).reshape(3, 4)
    fig = viz.plot_similarity_matrix(sim, colorbar=False)
    assert len(fig.axes) == 1
    fig = viz.plot_similarity_matrix(sim, (sim > 5).astype(float), row_labels=["a", "b", "c"])
    assert len(fig.axes) == 4  # two heat maps, two colour bars
    images = [im for ax in fig.axes for im in ax.images if isinstance(im, AxesImage)]
    assert len(images) == 2
    np.testing.assert_array_equal(images[0].get_array(), sim)
    _png(fig)
    with pytest.raises(ValueError, match="differ in shape"):
        viz.plot_similarity_matrix(sim, np.zeros((4, 3)))
