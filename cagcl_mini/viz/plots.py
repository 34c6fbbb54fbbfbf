"""Evaluation plots: cosine histograms, embedding maps, loss curves, AUC bars, similarity heat maps.

Like the rest of ``viz`` every function returns a :class:`matplotlib.figure.Figure` built outside
``pyplot`` (headless-safe), or draws into the ``ax`` it is given and returns that axes' figure.
Inputs may be the objects of :mod:`cagcl_mini.evaluation` or their JSON form (``evaluate_model``'s
dict read back from disk).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from cagcl_mini.anatomy import ANATOMY_NAMES
from cagcl_mini.losses.objective import LOSS_TERMS
from cagcl_mini.train.log import read_log as read_log_rows
from cagcl_mini.viz.figure import ANATOMY_COLORS, figure_axes, model_colors, new_figure

EMBEDDING_METHODS: tuple[str, ...] = ("uncentred", "pca", "tsne")


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


# ----------------------------------------------------------------------------- collapse
def plot_cosine_histograms(
    stats_by_model: Mapping[str, Mapping[str, Any]],
    ax: Axes | Sequence[Axes] | None = None,
    groups: Sequence[str] = ("across",),
    title: str | None = None,
) -> Figure:
    """Pairwise-cosine histograms (density) of each model's text embeddings, overlaid.

    ``stats_by_model`` maps a model name to :func:`collapse.text_collapse_stats` output (or to a
    whole ``evaluate_model`` dict, whose ``collapse`` entry is used). One panel per entry of
    ``groups`` ("across", "within", "all"), one step curve per model, labelled with its mean; a
    dotted line marks the 0.9 "collapse" cosine.
    """
    if not stats_by_model:
        raise ValueError("stats_by_model is empty: pass {model name: collapse stats}")
    groups = list(groups)
    if ax is None:
        fig, axs = new_figure(len(groups), width=5.0)
    else:
        axs = [ax] if isinstance(ax, Axes) else list(ax)
        if len(axs) != len(groups):
            raise ValueError(f"got {len(axs)} axes for groups {groups}")
        fig = axs[0].figure
    colors = model_colors(len(stats_by_model))
    for a, group in zip(axs, groups, strict=True):
        high = 0.9
        for color, (name, stats) in zip(colors, stats_by_model.items(), strict=True):
            stats = stats.get("collapse", stats)
            if group not in stats:
                raise KeyError(f"stats of {name!r} have no {group!r} group (keys {sorted(stats)})")
            edges = np.asarray(stats["bin_edges"], dtype=float)
            counts = np.asarray(stats[group]["hist"], dtype=float)
            width = np.diff(edges)
            density = counts / max(counts.sum(), 1.0) / width
            mean = stats[group]["mean"]
            label = f"{name} (mean {mean:.2f})" if mean is not None else name
            a.stairs(density, edges, color=color, linewidth=1.8, label=label)
            high = stats.get("high", high)
        a.axvline(high, color="0.4", linestyle=":", linewidth=1)
        a.set_xlim(-1, 1)
        a.set_xlabel("cosine similarity")
        a.set_ylabel("density")
        a.set_title(f"{group}-anatomy text pairs", fontsize=10)
        a.legend(fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def uncentred_projection(emb: Any) -> tuple[np.ndarray, float]:
    """Coordinates of unit-normalised embeddings (N, E) on the two leading right singular vectors
    of the *uncentred* matrix, and the norm of their mean vector.

    PCA subtracts the mean first, which removes exactly the shared direction that collapse is:
    a collapsed space then looks like well-separated clusters. Without centring, the first axis
    is that shared direction (sign fixed so the mean points right), a collapsed space sits in a
    tight cloud near (1, 0), and the norm of the mean (1 when every vector is the same, near 0
    when they spread over the sphere) says how much is shared.
    """
    x = _numpy(emb).astype(np.float64)
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    mean = x.mean(axis=0)
    if mean @ vt[0] < 0:
        xy[:, 0] *= -1
    if xy.shape[1] < 2:
        xy = np.concatenate([xy, np.zeros((xy.shape[0], 1))], axis=1)
    return xy, float(np.linalg.norm(mean))


def plot_embedding_map(
    emb: Any,
    anatomy_index: Any,
    method: str = "uncentred",
    ax: Axes | None = None,
    *,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """2-D map of embeddings (N, E), coloured by anatomy: the uncentred projection
    (:func:`uncentred_projection`, fixed axes [-1, 1] so panels compare, the mean vector's norm
    in the corner), scikit-learn PCA or t-SNE.

    ``anatomy_index`` holds 0-based catalog positions (as :mod:`cagcl_mini.evaluation.collapse` returns);
    one scatter per anatomy present, in the ``viz`` palette. t-SNE's perplexity is capped below N.
    """
    x = _numpy(emb).astype(np.float64)
    idx = _numpy(anatomy_index).astype(np.int64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != idx.shape[0]:
        raise ValueError(
            f"emb must be (N, E) with N = len(anatomy_index) = {idx.shape[0]}, got {x.shape}"
        )
    if x.shape[0] < 3:
        raise ValueError(f"an embedding map needs at least 3 points, got {x.shape[0]}")
    mean_norm = None
    if method == "uncentred":
        xy, mean_norm = uncentred_projection(x)
        axis_names = ("shared direction (uncentred SV 1)", "uncentred SV 2")
    elif method == "pca":
        xy = PCA(n_components=2, random_state=seed).fit_transform(x)
        axis_names = ("PC 1", "PC 2")
    elif method == "tsne":
        perplexity = float(min(30.0, max(1.0, (x.shape[0] - 1) / 3)))
        xy = TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed
        ).fit_transform(x)
        axis_names = ("t-SNE 1", "t-SNE 2")
    else:
        raise ValueError(f"method must be one of {EMBEDDING_METHODS}, got {method!r}")
    fig, a = figure_axes(ax, width=5.5, height=4.5)
    colors = ANATOMY_COLORS
    for k in np.unique(idx):
        name = ANATOMY_NAMES[k] if 0 <= k < len(ANATOMY_NAMES) else str(int(k))
        sel = idx == k
        a.scatter(
            xy[sel, 0], xy[sel, 1], s=14, alpha=0.8, color=colors.get(name, "0.5"), label=name
        )
    a.set_xlabel(axis_names[0])
    a.set_ylabel(axis_names[1])
    if mean_norm is not None:
        a.set_xlim(-1.05, 1.05)
        a.set_ylim(-1.05, 1.05)
        a.set_aspect("equal")
        a.text(0.02, 0.02, f"|mean vector| = {mean_norm:.2f}", transform=a.transAxes, fontsize=9)
    a.legend(fontsize=8, frameon=False, loc="best", markerscale=1.5)
    a.set_title(title or f"text embeddings ({method.upper()})", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- training
def read_log(log_path_or_records: str | Path | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A training log (the trainer's ``log.jsonl`` / ``log.csv``, or a list of dicts) as a
    DataFrame sorted by step."""
    if isinstance(log_path_or_records, (str, Path)):
        path = Path(log_path_or_records)
        if not path.is_file():
            raise FileNotFoundError(f"training log {path} does not exist")
        frame = pd.DataFrame.from_records(read_log_rows(path))
    else:
        frame = pd.DataFrame.from_records(list(log_path_or_records))
    if "step" not in frame:
        raise KeyError(f"the training log has no 'step' column (columns {list(frame.columns)})")
    return frame.sort_values("step").reset_index(drop=True)


def loss_terms(frame: pd.DataFrame) -> list[str]:
    """The loss columns of a log: ``loss`` (the weighted total) and each term of ``losses``."""
    return [c for c in ("loss", "total", *LOSS_TERMS) if c in frame]


def plot_loss_curves(
    log_path_or_records: str | Path | Sequence[Mapping[str, Any]],
    terms: Sequence[str] | None = None,
    ax: Axes | None = None,
    *,
    smooth: int = 1,
    title: str | None = None,
) -> Figure:
    """One line per loss term against the optimiser step, from the trainer's log.

    ``terms`` defaults to ``loss`` (the weighted total) and every term of ``losses.LOSS_TERMS``
    in the log (see :func:`loss_terms`);
    ``smooth`` > 1 draws a centred rolling mean over that many records.
    """
    frame = read_log(log_path_or_records)
    terms = loss_terms(frame) if terms is None else list(terms)
    missing = [t for t in terms if t not in frame]
    if missing:
        raise KeyError(f"terms {missing} are not in the log (columns {list(frame.columns)})")
    if not terms:
        raise ValueError(f"no loss term to plot among the log columns {list(frame.columns)}")
    fig, a = figure_axes(ax)
    for term in terms:
        y = frame[term].astype(float)
        if smooth > 1:
            y = y.rolling(smooth, center=True, min_periods=1).mean()
        a.plot(frame["step"], y, label=term, linewidth=1.5)
    a.set_xlabel("step")
    a.set_ylabel("loss")
    a.legend(fontsize=8, frameon=False)
    a.set_title(title or "training loss", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- zero-shot results
def _detection_table(result: Any) -> pd.DataFrame:
    """A per-abnormality table from a DataFrame, DetectionResult, detection dict or full results."""
    if isinstance(result, pd.DataFrame):
        return result
    if hasattr(result, "table"):
        return result.table
    if isinstance(result, Mapping):
        det = result.get("detection", result)
        if "per_abnormality" in det:
            return pd.DataFrame.from_dict(det["per_abnormality"], orient="index")
    raise TypeError(
        f"expected a detection table, DetectionResult or results dict, got {type(result).__name__}"
    )


def plot_auc_per_abnormality(
    results_by_model: Mapping[str, Any],
    ax: Axes | None = None,
    *,
    metric: str = "auc",
    title: str | None = None,
) -> Figure:
    """Grouped horizontal bars: ``metric`` (default AUC) per abnormality, one bar set per model.

    Values are DataFrames (``DetectionResult.table``), ``DetectionResult``s, or the (JSON) dicts
    of ``evaluate_model``. Abnormalities follow the first model's order; a dashed line marks 0.5.
    Where a table has ``auc_ci95`` (``evaluate_model`` with bootstrap), each bar gets its 95 %
    interval as an error bar, and ``n_positive`` of the first table goes into the labels.
    """
    if not results_by_model:
        raise ValueError("results_by_model is empty: pass {model name: detection table}")
    tables = {name: _detection_table(r) for name, r in results_by_model.items()}
    names = list(dict.fromkeys(n for t in tables.values() for n in t.index))
    n_models = len(tables)
    fig, a = figure_axes(
        ax, width=6.5, height=max(3.0, 0.32 * len(names) * max(1, n_models) ** 0.5 + 1)
    )
    height = 0.8 / n_models
    y = np.arange(len(names))
    for m, (color, (model, table)) in enumerate(
        zip(model_colors(n_models), tables.items(), strict=True)
    ):
        if metric not in table:
            raise KeyError(f"the table of {model!r} has no column {metric!r}")
        vals = pd.to_numeric(table[metric].reindex(names), errors="coerce").to_numpy(float)
        xerr = None
        if f"{metric}_ci95" in table:
            ci = np.array(
                [c if isinstance(c, list | tuple) and len(c) == 2 else (np.nan, np.nan)
                 for c in table[f"{metric}_ci95"].reindex(names)], dtype=float,
            ).reshape(-1, 2)  # fmt: skip
            xerr = np.nan_to_num(np.abs(np.stack([vals - ci[:, 0], ci[:, 1] - vals])), nan=0.0)
        a.barh(y - 0.4 + height * (m + 0.5), np.nan_to_num(vals, nan=0.0), height=height,
               color=color, label=model, xerr=xerr,
               error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.25"})  # fmt: skip
    first = next(iter(tables.values()))
    if "n_positive" in first:
        counts = pd.to_numeric(first["n_positive"].reindex(names), errors="coerce")
        labels = [
            n if np.isnan(c) else f"{n} ({int(c)}+)" for n, c in zip(names, counts, strict=True)
        ]
    else:
        labels = names
    a.set_yticks(y, labels, fontsize=8)
    a.invert_yaxis()
    if metric == "auc":
        a.axvline(0.5, color="0.4", linestyle="--", linewidth=1)
        a.set_xlim(0, 1)
    a.set_xlabel(metric)
    a.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    a.set_title(title or f"zero-shot {metric} per abnormality", fontsize=10)
    return fig


def plot_prompt_family_auc(
    robustness_by_model: Mapping[str, Mapping[str, Any]],
    ax: Axes | None = None,
    *,
    key: str = "macro_auc",
    title: str | None = None,
) -> Figure:
    """Grouped bars of macro AUC per prompt family, one bar set per model (legend: mean +- std).

    Values are :func:`evaluate.prompt_robustness` dicts or whole ``evaluate_model`` dicts.
    ``key="macro_auc_ct_rate"`` plots the CT-RATE-only macro.
    """
    if not robustness_by_model:
        raise ValueError("robustness_by_model is empty: pass {model name: robustness dict}")
    robs = {n: r.get("prompt_robustness", r) for n, r in robustness_by_model.items()}
    families = list(dict.fromkeys(f for r in robs.values() for f in r["families"]))
    n_models = len(robs)
    fig, a = figure_axes(ax, width=6.0)
    width = 0.8 / n_models
    x = np.arange(len(families))
    suffix = "_ct_rate" if key.endswith("_ct_rate") else ""
    for m, (color, (model, rob)) in enumerate(
        zip(model_colors(n_models), robs.items(), strict=True)
    ):
        vals = np.array([_nan(rob[key].get(f)) for f in families], dtype=float)
        mean, std = _nan(rob.get(f"mean{suffix}")), _nan(rob.get(f"std{suffix}"))
        a.bar(x - 0.4 + width * (m + 0.5), np.nan_to_num(vals, nan=0.0), width=width,
              color=color, label=f"{model} ({mean:.3f} ± {std:.3f})")  # fmt: skip
    a.set_xticks(x, families)
    a.axhline(0.5, color="0.4", linestyle="--", linewidth=1)
    a.set_ylim(0, 1)
    a.set_ylabel("macro AUC")
    a.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1),
             ncols=min(n_models, 3))  # fmt: skip
    a.set_title(title or "zero-shot macro AUC per prompt family", fontsize=10)
    return fig


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def plot_heatmap(
    matrix: Any,
    ax: Axes | None = None,
    *,
    title: str = "",
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    xlabel: str | None = "text",
    ylabel: str | None = "image",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
) -> Figure:
    """One matrix as a heat map (rows: images, columns: texts by default), with a colour bar.

    Tick labels are drawn when there are at most 40 rows / columns.
    """
    m = _numpy(matrix)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {m.shape}")
    fig, a = figure_axes(ax, width=4.2, height=3.8)
    image = a.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
    a.set_title(title, fontsize=9)
    a.set(xlabel=xlabel, ylabel=ylabel)
    if row_labels is not None and len(row_labels) <= 40:
        a.set_yticks(range(len(row_labels)), list(row_labels), fontsize=7)
    if col_labels is not None and len(col_labels) <= 40:
        a.set_xticks(range(len(col_labels)), list(col_labels), fontsize=7, rotation=90)
    if colorbar:
        fig.colorbar(image, ax=a, shrink=0.8)
    return fig


def plot_similarity_matrix(
    sim: Any,
    targets: Any = None,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    titles: tuple[str, str] = ("similarity", "targets"),
    cmap: str = "viridis",
    colorbar: bool = True,
    ax: Axes | Sequence[Axes] | None = None,
) -> Figure:
    """Heat map of a similarity (logit) matrix, and of its target matrix side by side if given.

    Each panel gets a colour bar when ``colorbar`` (so a figure with targets has 4 axes). Labels
    are drawn when there are at most 40 rows / columns.
    """
    mats = [_numpy(sim)] + ([] if targets is None else [_numpy(targets)])
    for name, m in zip(("sim", "targets"), mats, strict=False):
        if m.ndim != 2:
            raise ValueError(f"{name} must be a 2-D matrix, got shape {m.shape}")
    if len(mats) == 2 and mats[0].shape != mats[1].shape:
        raise ValueError(f"sim {mats[0].shape} and targets {mats[1].shape} differ in shape")
    if ax is None:
        fig, axs = new_figure(len(mats), width=4.2, height=3.8)
    else:
        axs = [ax] if isinstance(ax, Axes) else list(ax)
        if len(axs) != len(mats):
            raise ValueError(f"got {len(axs)} axes for {len(mats)} matrices")
        fig = axs[0].figure
    for a, m, title in zip(axs, mats, titles, strict=False):
        plot_heatmap(
            m, a, title=title, row_labels=row_labels, col_labels=col_labels, xlabel=None,
            ylabel=None, cmap=cmap, colorbar=colorbar,
        )  # fmt: skip
        a.title.set_fontsize(10)
    return fig
