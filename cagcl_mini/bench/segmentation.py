"""``cagcl-mini bench segmentation``: segmentation transfer, scratch vs fvlm vs cagcl encoders.

Runs :func:`cagcl_mini.experiments.segmentation.run_transfer` (one finding, 10 and 30 labelled
volumes, 3 seeds by default) and flattens its tables for the JSON line: ``dice[encoder]["10"]``
is the mean validation Dice over seeds, ``"10_ci95"`` its 95 % t interval over seeds and
``"10_per_seed"`` the values behind it; ``empty_correct`` and ``gain_vs_scratch`` follow the same
layout. ``steps``, the finding, the validation sizes and the wall time come with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from cagcl_mini.experiments.segmentation import (
    DEFAULT_FINDING,
    ENCODERS,
    N_LABELLED,
    TransferSetting,
    run_transfer,
)
from cagcl_mini.train.config import TrainConfig


def flatten(table: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """``{encoder: {n: {mean, ci95, per_seed}}}`` -> ``{encoder: {"n", "n_ci95", "n_per_seed"}}``."""
    out: dict[str, dict[str, Any]] = {}
    for encoder, by_n in table.items():
        row: dict[str, Any] = {}
        for n, summary in by_n.items():
            row[str(n)] = summary["mean"]
            row[f"{n}_ci95"] = list(summary["ci95"])
            row[f"{n}_per_seed"] = list(summary["per_seed"])
        out[encoder] = row
    return out


def benchmark(
    config: TrainConfig | str = "cpu-quick",
    finding: str = DEFAULT_FINDING,
    n_labelled: Sequence[int] = N_LABELLED,
    seeds: int = 3,
    steps: int | None = None,
    encoders: Sequence[str] = ENCODERS,
) -> dict[str, Any]:
    """The transfer figures of the README; ``steps`` replaces the fine-tune's default steps."""
    if int(seeds) < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    setting = TransferSetting()
    if steps is not None:
        setting = dataclasses.replace(setting, steps=int(steps))
    result = run_transfer(
        config, finding, encoders, n_labelled, seeds=range(int(seeds)), setting=setting
    )
    return {
        "dice": flatten(result["dice"]),
        "empty_correct": flatten(result["empty_correct"]),
        "gain_vs_scratch": flatten(result["gain_vs_scratch"]),
        "finding": result["finding"],
        "n_labelled": [int(n) for n in n_labelled],
        "seeds": result["seeds"],
        "steps": result["steps"],
        "batch_size": result["batch_size"],
        "patch": result["patch"],
        "image_size": result["image_size"],
        "n_valid": result["n_valid"],
        "n_empty": result["n_empty"],
        "n_train_pool": result["n_train_pool"],
        "interval": result["interval"],
        "seconds": result["seconds"],
    }
