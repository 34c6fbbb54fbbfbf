"""Binary detection metrics and the ROC threshold rule of the zero-shot papers (numpy + sklearn).

The threshold rule follows CT-CLIP's ``find_threshold`` (reused by fVLM): over ``thresholds``
(default ``np.linspace(0, 1, 100)``, "unit" grid) predict ``score > threshold`` and keep the
threshold whose ROC point (FPR, TPR) lies closest to (0, 1); ties go to the larger threshold (CT-CLIP
iterates upwards and keeps a tie with ``<=``). ``grid="range"`` spreads the 100 thresholds over the
scores' own range instead, which matters when a model's scores all sit in a narrow band.

Picking the threshold on the very scores it is applied to is optimistic; the honest variant picks
it on the training split's scores (same rule) and applies it to the validation scores.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_score, roc_auc_score

N_THRESHOLDS = 100
GRIDS: tuple[str, ...] = ("unit", "range")
METRICS: tuple[str, ...] = (
    "accuracy",
    "f1_weighted",
    "precision",
    "sensitivity",
    "specificity",
)


def _check_pair(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {y.shape[0]}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    if y.size and not np.all(np.isin(y, (0, 1))):
        raise ValueError(f"labels must be 0/1, got values {sorted(set(np.unique(y).tolist()))[:5]}")
    return s, y.astype(np.int64)


def both_classes(labels: np.ndarray) -> bool:
    """True when ``labels`` holds at least one positive and one negative (AUC is defined)."""
    y = np.asarray(labels).reshape(-1)
    return bool(np.any(y == 1) and np.any(y == 0))


def threshold_grid(scores: np.ndarray, grid: str = "unit", n: int = N_THRESHOLDS) -> np.ndarray:
    """The candidate thresholds: ``linspace(0, 1, n)`` ("unit") or over [min, max] of ``scores``."""
    if grid == "unit":
        return np.linspace(0.0, 1.0, n)
    if grid == "range":
        s = np.asarray(scores, dtype=np.float64)
        return np.linspace(float(s.min()), float(s.max()), n)
    raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")


def roc_point(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FPR, TPR) of the rule ``score > threshold``; NaN where a class is missing."""
    s, y = _check_pair(scores, labels)
    pred = s > threshold
    pos, neg = y == 1, y == 0
    tpr = float(pred[pos].mean()) if pos.any() else math.nan
    fpr = float(pred[neg].mean()) if neg.any() else math.nan
    return fpr, tpr


def closest_roc_threshold(
    scores: np.ndarray,
    labels: np.ndarray,
    thresholds: np.ndarray | None = None,
    grid: str = "unit",
) -> float:
    """The threshold whose ROC point is closest to (0, 1): ``argmin sqrt((1-TPR)^2 + FPR^2)``.

    ``thresholds`` defaults to :func:`threshold_grid` (100 points); ties go to the larger
    threshold, as in CT-CLIP. Both classes must be present.
    """
    s, y = _check_pair(scores, labels)
    if not both_classes(y):
        raise ValueError("the ROC threshold needs both classes in labels")
    grid_t = threshold_grid(s, grid) if thresholds is None else np.asarray(thresholds, float)
    pred = s[None, :] > grid_t[:, None]  # (T, N)
    pos, neg = y == 1, y == 0
    tpr = pred[:, pos].mean(1)
    fpr = pred[:, neg].mean(1)
    dist = np.sqrt((1.0 - tpr) ** 2 + fpr**2)
    return float(grid_t[np.flatnonzero(dist == dist.min())[-1]])


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, weighted F1, precision, sensitivity and specificity of ``score > threshold``.

    Precision is of the positive class (0 when nothing is predicted positive); sensitivity or
    specificity is NaN when its class is absent.
    """
    s, y = _check_pair(scores, labels)
    pred = (s > threshold).astype(np.int64)
    fpr, tpr = roc_point(s, y, threshold)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "f1_weighted": float(f1_score(y, pred, average="weighted", zero_division=0)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "sensitivity": tpr,
        "specificity": 1.0 - fpr if not math.isnan(fpr) else math.nan,
    }


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (scikit-learn); NaN when only one class is present."""
    s, y = _check_pair(scores, labels)
    return float(roc_auc_score(y, s)) if both_classes(y) else math.nan


def detection_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    train_scores: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
    grid: str = "unit",
) -> dict[str, float]:
    """AUC, then the :data:`METRICS` at the closest-ROC threshold picked on these scores, and
    (``honest_`` prefix) at the threshold picked on ``train_scores`` / ``train_labels``.

    The honest entries are NaN when no training scores are given or they lack a class.
    """
    s, y = _check_pair(scores, labels)
    out: dict[str, float] = {
        "n": int(y.size),
        "n_pos": int(y.sum()),
        "auc": auc(s, y),
    }
    if both_classes(y):
        thr = closest_roc_threshold(s, y, grid=grid)
        out["threshold"] = thr
        out.update(binary_metrics(s, y, thr))
    else:
        out["threshold"] = math.nan
        out.update(dict.fromkeys(METRICS, math.nan))
    honest_thr = math.nan
    if train_scores is not None and train_labels is not None:
        ts, ty = _check_pair(train_scores, train_labels)
        if both_classes(ty):
            honest_thr = closest_roc_threshold(ts, ty, grid=grid)
    out["honest_threshold"] = honest_thr
    honest = (
        binary_metrics(s, y, honest_thr)
        if not math.isnan(honest_thr)
        else dict.fromkeys(METRICS, math.nan)
    )
    out.update({f"honest_{k}": v for k, v in honest.items()})
    return out
