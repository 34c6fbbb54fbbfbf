"""Intervals: bootstrap over validation volumes, Student-t over seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cagcl_mini.anatomy import ALL_LABELS, ANATOMY_ID, NUM_ANATOMIES
from cagcl_mini.evaluation.embed import EmbeddedSplit
from cagcl_mini.evaluation.metrics import auc
from cagcl_mini.evaluation.uncertainty import (
    bootstrap_detection,
    bootstrap_statistic,
    percentile_interval,
    rank_auc,
    resampled_aucs,
    t_interval,
)


def test_t_interval_matches_the_textbook_formula():
    lo, hi = t_interval([0.5, 0.6, 0.7])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (lo, hi) == pytest.approx((0.6 - half, 0.6 + half))
    assert all(math.isnan(x) for x in t_interval([0.5]))
    assert t_interval([0.5, float("nan"), 0.7]) == pytest.approx(t_interval([0.5, 0.7]))


def test_percentile_interval_and_statistic_bootstrap():
    assert percentile_interval(list(range(101))) == pytest.approx((2.5, 97.5))
    values = np.random.default_rng(0).normal(size=400)
    lo, hi = bootstrap_statistic(len(values), lambda i: float(values[i].mean()), n=400)
    assert lo < values.mean() < hi and hi - lo == pytest.approx(0.2, abs=0.06)  # 4 sd/sqrt(400)


def _split(n: int, rng) -> tuple[EmbeddedSplit, dict]:
    present = torch.ones(n, NUM_ANATOMIES, dtype=torch.bool)
    present[: n // 4, ANATOMY_ID["lung"] - 1] = False  # a quarter of the volumes lack a lung
    labels = torch.from_numpy((rng.random((n, len(ALL_LABELS))) < 0.3).astype(np.float32))
    z = torch.zeros(n, NUM_ANATOMIES, 4)
    split = EmbeddedSplit(z, present, labels, present.clone(), [str(i) for i in range(n)],
                          [[""] * NUM_ANATOMIES] * n)  # fmt: skip
    scores = {}
    for name, k in (("Lung nodule", "lung"), ("Cardiomegaly", "heart")):
        rows = present[:, ANATOMY_ID[k] - 1].numpy()
        y = labels[rows, ALL_LABELS.index(name)].numpy().astype(int)
        scores[name] = (y + rng.normal(scale=1.0, size=y.size), y)  # informative, not perfect
    return split, scores


def test_bootstrap_detection_covers_the_point_estimate_and_shrinks_with_more_volumes():
    rng = np.random.default_rng(1)
    widths = []
    for n in (80, 640):
        split, scores = _split(n, rng)
        out = bootstrap_detection(split, scores, n=300, seed=0)
        for name, (s, y) in scores.items():
            lo, hi = out["per_abnormality"][name]
            assert lo < auc(s, y) < hi, name
            assert (
                out["n_positive"][name] == int(y.sum())
                and out["n_negative"][name] == y.size - y.sum()
            )
        widths.append(np.subtract(*out["macro"][::-1]))
    assert widths[1] < 0.6 * widths[0]  # about 1/sqrt(8) of the width


def test_rank_auc_equals_scikit_learns_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.random(50) < 0.3
        s = np.round(rng.normal(size=50) + y, 1)  # rounding makes ties
        assert rank_auc(s, y) == pytest.approx(auc(s, y.astype(int)), abs=1e-12)
    assert math.isnan(rank_auc(np.arange(3.0), np.zeros(3)))


def test_resampled_aucs_equal_rank_auc_of_each_resampled_replicate():
    rng = np.random.default_rng(4)
    s = np.round(rng.normal(size=60), 1)  # ties
    y = (rng.random(60) < 0.3).astype(int)
    draws = rng.integers(0, 60, (200, 60))
    counts = np.stack([np.bincount(d, minlength=60) for d in draws])
    expected = [rank_auc(s[d], y[d]) for d in draws]
    np.testing.assert_allclose(resampled_aucs(s, y, counts), expected, rtol=0, atol=1e-12)
    one_class = np.zeros((1, 60))
    one_class[0, np.flatnonzero(y == 0)[:5]] = 2.0  # a replicate of negatives only
    assert math.isnan(resampled_aucs(s, y, one_class)[0])


def test_bootstrap_detection_equals_the_replicate_by_replicate_loop():
    rng = np.random.default_rng(5)
    split, scores = _split(90, rng)
    out = bootstrap_detection(split, scores, n=200, seed=3)
    present = split.present.numpy()
    full = {}  # the straightforward version: every replicate, every label, rank_auc
    for name, (sc, y) in scores.items():
        k = ANATOMY_ID["lung" if name == "Lung nodule" else "heart"] - 1
        score, label = np.full(90, np.nan), np.full(90, -1)
        score[present[:, k]], label[present[:, k]] = sc, y
        full[name] = (score, label)
    draw = np.random.default_rng(3)
    per = {name: [] for name in full}
    macro = []
    for _ in range(200):
        idx = draw.integers(0, 90, 90)
        values = []
        for name, (score, label) in full.items():
            keep = label[idx] >= 0
            per[name].append(rank_auc(score[idx][keep], label[idx][keep]))
            values.append(per[name][-1])
        macro.append(float(np.nanmean(values)))
    for name in full:
        assert out["per_abnormality"][name] == pytest.approx(percentile_interval(per[name]))
    assert out["macro"] == pytest.approx(percentile_interval(macro))
