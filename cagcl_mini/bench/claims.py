"""``cagcl-mini bench claims``: the CA-GCL claims, fvlm vs cagcl over seeds, trained afresh.

Trains ``cpu-quick`` (or ``base``) with each loss preset for ``seeds`` seeds in a fresh folder (so
every run is trained and timed) unless ``out`` names one to reuse, evaluates each on the
validation split (:func:`cagcl_mini.experiments.claims.compare_presets`) and adds the config and
the wall time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from cagcl_mini.experiments.claims import compare_presets
from cagcl_mini.train.config import TrainConfig, resolve_config


def benchmark(
    seeds: int = 3,
    out: str | Path | None = None,
    base: str | TrainConfig = "cpu-quick",
    steps: int | None = None,
) -> dict[str, Any]:
    """The claims' figures; ``steps`` replaces the budget of ``base`` (warmup scaled with it)."""
    t0 = time.perf_counter()
    base = resolve_config(base).with_steps(steps)
    with tempfile.TemporaryDirectory(prefix="cagcl-claims-") as tmp:
        result = compare_presets(seeds, base=base, out=out if out is not None else tmp)
    result["config"] = {k: v for k, v in base.to_dict().items() if k not in ("loss_preset", "seed")}
    result["seeds"] = seeds
    result["threads"] = torch.get_num_threads()
    result["wall_seconds"] = time.perf_counter() - t0
    return result
