"""``cagcl-mini bench reports``: report splitting on the 50 real CT-RATE cases in ../shared/data.

Routing accuracy and abnormal-flag accuracy / precision / recall
(:mod:`cagcl_mini.evaluation.splitting`) in the reports' own sentence order and with the
anatomies shuffled, and the median time to split and flag one report. The same reports lower-cased
and without punctuation (:func:`~cagcl_mini.evaluation.splitting.evaluate_unpunctuated`): how many
of the 4 x 50 abnormal flags change (``unpunctuated_flag_flips``), how many sentences / words
still reach their own anatomy, and the time per such report.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from cagcl_mini import paths
from cagcl_mini.evaluation.splitting import (
    evaluate_splitting,
    evaluate_unpunctuated,
    load_cases,
    strip_preamble,
    unpunctuate,
)
from cagcl_mini.text.findings import is_abnormal
from cagcl_mini.text.reports import split_report

SHARED_REPORTS = Path("ct_rate_reports") / "per_anatomy_findings.json"


def shared_reports_path() -> Path:
    """Where the project's machines keep the real per-anatomy findings: ../shared/data/..."""
    shared = paths.shared_data_dir()
    root = paths.repo_root()
    base = shared if shared is not None else Path(root or ".").parent / "shared" / "data"
    return base / SHARED_REPORTS


def benchmark(path: str | Path | None = None, shuffle_seeds: int = 3, repeats: int = 3) -> dict:
    """The figures of ``cagcl-mini bench reports``: both orders, flag precision/recall, speed, and
    the unpunctuated lower-case reports' flag flips and routing.

    Raises FileNotFoundError naming the path when the shared data is absent.
    """
    path = Path(path) if path is not None else shared_reports_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"bench reports needs the real CT-RATE per-anatomy findings at {path} "
            "(present only on the project's machines, next to the repository in shared/data)"
        )
    cases = load_cases(path)
    ordered = evaluate_splitting(cases)
    shuffled = [evaluate_splitting(cases, shuffle_seed=s) for s in range(max(1, shuffle_seeds))]
    plain = evaluate_unpunctuated(cases)
    plain_shuffled = [
        evaluate_unpunctuated(cases, shuffle_seed=s) for s in range(max(1, shuffle_seeds))
    ]
    reports = [" ".join(strip_preamble(a, t)[0] for a, t in c.items()) for c in cases.values()]
    times = _seconds_per_report(reports, repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no sentence punctuation", expected here
        plain_times = _seconds_per_report([unpunctuate(r) for r in reports], repeats)
    keys = ("routing_accuracy", "abnormal_accuracy", "abnormal_precision", "abnormal_recall")
    result = {k: round(ordered[k], 4) for k in (*keys, "abnormal_f1")}
    for k in keys:
        result[f"{k}_shuffled_mean"] = round(float(np.mean([r[k] for r in shuffled])), 4)
        result[f"{k}_shuffled_min"] = round(float(np.min([r[k] for r in shuffled])), 4)
    result.update(
        n_cases=len(cases),
        n_sentences=ordered["n_sentences"],
        n_pairs=ordered["n_pairs"],
        shuffle_seeds=len(shuffled),
        n_misrouted=len(ordered["misrouted"]),
        n_flag_disagreements=len(ordered["flag_disagreements"]),
        flag_disagreements=[
            f"{d['case']}/{d['anatomy']}: label {'abnormal' if d['label'] else 'normal'}, "
            f"predicted {'abnormal' if d['predicted'] else 'normal'}"
            for d in ordered["flag_disagreements"]
        ],
        misrouted=[
            f"{m['case']}: {m['sentence']!r} {m['true']} -> {m['got']}"
            for m in ordered["misrouted"]
        ],
        confusion=ordered["confusion"],
        ms_per_report=round(1000 * float(np.median(times)), 3),
        unpunctuated_flag_flips=plain["flag_flips"],
        unpunctuated_flag_flips_shuffled_max=max(r["flag_flips"] for r in plain_shuffled),
        unpunctuated_routing_accuracy=round(plain["routing_accuracy"], 4),
        unpunctuated_word_routing_accuracy=round(plain["word_routing_accuracy"], 4),
        unpunctuated_abnormal_accuracy=round(plain["abnormal_accuracy"], 4),
        unpunctuated_flips=[
            f"{d['case']}/{d['anatomy']}: punctuated "
            f"{'abnormal' if d['punctuated'] else 'normal'}, unpunctuated "
            f"{'abnormal' if d['unpunctuated'] else 'normal'}"
            for d in plain["flips"]
        ],
        ms_per_unpunctuated_report=round(1000 * float(np.median(plain_times)), 3),
        path=str(path),
    )
    return result


def _seconds_per_report(reports: list[str], repeats: int) -> list[float]:
    """Per repeat, the mean seconds to split one report and flag its anatomies."""
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        for report in reports:
            out = split_report(report)
            for name, text in out.items():
                is_abnormal(name, text)
        times.append((time.perf_counter() - start) / max(len(reports), 1))
    return times
