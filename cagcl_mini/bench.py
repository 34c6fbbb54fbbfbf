"""The project's benchmarks, run as ``cagcl-mini bench NAME [--json]``.

Each benchmark is a function returning a flat-ish dict of measured figures. The runner prints a short
human summary and, with ``--json``, one JSON object as the last line so scripts can parse it.
Timings are medians over repeats; wall-clock numbers depend on the machine, so ratios against a
naive or reference version are reported next to them.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_data(args) -> dict:
    """Embedded dataset generation speed (issue: 300 volumes of 64^3 in <= 30 s on 2 cores).

    Builds the default dataset (240 train + 60 valid, 64^3, all cores) into a fresh folder per
    repeat and reports wall time plus per-volume CPU time (robust to a loaded machine).
    """
    from cagcl_mini.phantom import benchmark

    return benchmark(out=args.out, repeats=args.repeats)


def bench_reports(args) -> dict:
    """Report splitting accuracy on the real CT-RATE cases in ../shared/data."""
    from cagcl_mini.report_eval import benchmark

    return benchmark(shuffle_seeds=getattr(args, "seeds", 3), repeats=getattr(args, "repeats", 3))


def bench_pooling(args) -> dict:
    """Mask pooling speed against feature.sum() and a per-anatomy loop."""
    from cagcl_mini.pooling_bench import benchmark

    return benchmark(repeats=max(5, 5 * int(getattr(args, "repeats", 3))))


def bench_train(args) -> dict:
    """Training throughput, peak memory and the text-cache speedup."""
    from cagcl_mini.train_bench import run_train_bench

    return run_train_bench(repeats=args.repeats, out=args.out)


def bench_claims(args) -> dict:
    """The CA-GCL claims, fvlm vs cagcl, means over seeds (``cagcl_mini.claims``).

    Trains ``cpu-quick`` with each loss preset for ``--seeds`` seeds in a fresh folder (or reuses
    the runs in ``--out``) and evaluates each on the validation split. ``--steps`` changes the
    training budget (default: the preset's).
    """
    from cagcl_mini.claims import benchmark

    return benchmark(seeds=args.seeds, out=args.out, steps=getattr(args, "steps", None))


def bench_probe(args) -> dict:
    """Zero-shot AUC next to a linear probe of the frozen embeddings and a supervised image tower
    (``cagcl_mini.probe``): where the detection ceiling of the tutorial budget lies."""
    from cagcl_mini.probe import benchmark

    return benchmark(steps=getattr(args, "steps", None))


BENCHMARKS: dict[str, Callable[[Any], dict]] = {
    "data": bench_data,
    "reports": bench_reports,
    "pooling": bench_pooling,
    "train": bench_train,
    "claims": bench_claims,
    "probe": bench_probe,
}


def run(name: str, args) -> dict:
    """Run one benchmark, print its figures, and print the JSON object last when asked."""
    result = BENCHMARKS[name](args)
    if getattr(args, "json", False):
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return result
