"""How sure a number is: intervals for AUCs and recalls (bootstrap over volumes) and for means
over training seeds (Student's t).

- :func:`bootstrap_detection`: resamples the validation volumes with replacement (the same draw
  for every abnormality, so the macro average keeps its correlations) and gives each
  abnormality's AUC and the macro AUC a 95 % percentile interval. A replicate in which a label
  has one class only leaves that label out of the replicate.
- :func:`bootstrap_statistic`: the same for any statistic of the volumes (retrieval recall...).
- :func:`t_interval`: the mean of a few per-seed values with the 95 % Student-t interval
  ``mean +- t(0.975, n-1) * sd / sqrt(n)``; one seed gives no interval (NaN).

Intervals over volumes say how much the validation set's sampling moves a number for one trained
model; intervals over seeds say how much training from another seed moves it. The claims report
the second (it contains the first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from cagcl_mini.anatomy import ABNORMALITY_BY_NAME, ANATOMY_NAMES
from cagcl_mini.evaluation.embed import EmbeddedSplit
from cagcl_mini.evaluation.metrics import both_classes

LEVEL = 0.95
N_BOOTSTRAP = 1000


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """(low, high) Student-t interval of the mean of ``values`` (NaN values dropped)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(float(v))], float)
    if x.size < 2:
        return (math.nan, math.nan)
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return (float(x.mean() - half), float(x.mean() + half))


def percentile_interval(samples: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """(low, high) percentiles of bootstrap replicates (NaN replicates dropped)."""
    x = np.asarray([v for v in samples if math.isfinite(v)], float)
    if x.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.percentile(x, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by ranks (Mann-Whitney U, ties counted half): equal to scikit-learn's
    ``roc_auc_score`` and fast enough for thousands of bootstrap replicates; NaN with one class."""
    y = np.asarray(labels).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(scores)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def resampled_aucs(scores: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores``/``labels`` in each bootstrap replicate at once.

    ``counts`` (replicates, volumes) says how often each volume was drawn; a replicate's AUC is
    :func:`rank_auc` of its resampled arrays (ties counted half), computed from one sort as the
    count-weighted Mann-Whitney sum; NaN where a replicate holds one class only.
    """
    order = np.argsort(scores, kind="stable")
    ordered, positive = np.asarray(scores)[order], np.asarray(labels)[order].astype(bool)
    weights = np.asarray(counts, dtype=float)[:, order]
    ties = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first index of each value
    pos = np.add.reduceat(np.where(positive, weights, 0.0), ties, axis=1)
    neg = np.add.reduceat(np.where(positive, 0.0, weights), ties, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives with a lower score than each tie group
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(1) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = math.nan
    return auc


def resample_counts(n_volumes: int, n: int = N_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """(n, n_volumes): how often each volume is drawn in each of ``n`` resamples, the same
    draws :func:`bootstrap_statistic` makes with this seed. A statistic that is a sum over
    volumes is then one matrix product for all resamples at once."""
    rng = np.random.default_rng(seed)
    draws = np.stack([rng.integers(0, n_volumes, n_volumes) for _ in range(n)])
    counts = np.zeros((n, n_volumes))
    np.add.at(counts, (np.repeat(np.arange(n), n_volumes), draws.ravel()), 1.0)
    return counts


def bootstrap_statistic(
    n_volumes: int,
    statistic: Callable[[np.ndarray], float],
    n: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over ``n`` resamples of the volumes."""
    rng = np.random.default_rng(seed)
    draws = [statistic(rng.integers(0, n_volumes, n_volumes)) for _ in range(n)]
    return percentile_interval(draws, level)


def bootstrap_detection(
    split: EmbeddedSplit,
    scores: Mapping[str, tuple[np.ndarray, np.ndarray]],
    n: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Any]:
    """95 % intervals of each abnormality's AUC and of the macro AUC, volumes resampled.

    ``scores`` is ``{abnormality: (scores, labels)}`` over the volumes where its anatomy is
    present, in split order (``DetectionResult.scores``). Returns ``per_abnormality`` {name:
    (low, high)}, ``macro`` (low, high), ``n_positive`` / ``n_negative`` per abnormality and ``n``.
    """
    present = split.present.detach().cpu().numpy()
    n_volumes = present.shape[0]
    full: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (s, y) in scores.items():
        if not both_classes(np.asarray(y)):
            continue
        k = ANATOMY_NAMES.index(ABNORMALITY_BY_NAME[name].anatomy)
        rows = np.flatnonzero(present[:, k])
        score, label = np.full(n_volumes, np.nan), np.full(n_volumes, -1)
        score[rows], label[rows] = s, y
        full[name] = (score, label)
    counts = resample_counts(n_volumes, n, seed)
    per: dict[str, np.ndarray] = {}
    for name, (score, label) in full.items():
        kept = label >= 0  # volumes showing the abnormality's anatomy
        per[name] = resampled_aucs(score[kept], label[kept], counts[:, kept])
    table = np.stack(list(per.values()), axis=1) if per else np.full((n, 1), math.nan)
    finite = np.isfinite(table)
    with np.errstate(invalid="ignore"):
        macro = np.where(finite, table, 0.0).sum(1) / finite.sum(1)  # NaN: no label scored
    return {
        "per_abnormality": {name: percentile_interval(v, level) for name, v in per.items()},
        "macro": percentile_interval(macro.tolist(), level),
        "n_positive": {name: int((lab == 1).sum()) for name, (_, lab) in full.items()},
        "n_negative": {name: int((lab == 0).sum()) for name, (_, lab) in full.items()},
        "n": n,
        "level": level,
    }
