"""``cagcl-mini bench data``: how fast the embedded dataset is written.

Builds the default dataset (:class:`~cagcl_mini.phantom.plan.PhantomSpec`, all cores) into a
fresh folder per repeat and reports the median wall time, and the per-volume CPU time (robust to
a loaded machine).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cagcl_mini.phantom.build import make_dataset
from cagcl_mini.phantom.plan import PhantomSpec


def benchmark(
    out: Path | str | None = None,
    repeats: int = 3,
    spec: PhantomSpec | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Time full dataset builds (fresh folder each repeat) and per-volume CPU time."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    spec = spec or PhantomSpec()
    base = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="cagcl-bench-data-"))
    seconds, cpu_total, cpu_median, disk = [], [], [], 0
    stats: dict[str, Any] = {}
    try:
        for r in range(repeats):
            target = base / f"run{r}"
            shutil.rmtree(target, ignore_errors=True)
            stats = {}
            t0 = time.perf_counter()
            make_dataset(target, spec, workers=workers, progress=False, stats=stats)
            seconds.append(time.perf_counter() - t0)
            cpu_total.append(sum(stats["cpu_s"]))
            cpu_median.append(statistics.median(stats["cpu_s"]))
            disk = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
            shutil.rmtree(target, ignore_errors=True)
    finally:
        if out is None:
            shutil.rmtree(base, ignore_errors=True)
    volumes = spec.n_train + spec.n_valid
    med = statistics.median(seconds)
    return {
        "volumes": volumes,
        "size": spec.size,
        "workers": stats["workers"],
        "seconds_median": round(med, 3),
        "seconds_all": [round(s, 3) for s in seconds],
        "volumes_per_s": round(volumes / med, 2),
        "cpu_s_per_volume_median": round(statistics.median(cpu_median), 4),
        "cpu_s_all_volumes_median": round(statistics.median(cpu_total), 2),
        "cpu_bound_seconds_on_2_cores": round(statistics.median(cpu_total) / 2, 2),
        "mb_on_disk": round(disk / 1e6, 1),
    }
