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

from cagcl_mini.anatomy import prompt_family_names
from cagcl_mini.evaluation.prompts import load_prompts
from cagcl_mini.experiments.claims import SEEDS, compare_presets
from cagcl_mini.train.config import TrainConfig, resolve_config


def base_config(
    base: str | TrainConfig,
    steps: int | None = None,
    difficulty: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> TrainConfig:
    """``base`` with ``key=value`` ``overrides`` (as ``cagcl-mini train --set``), ``steps``
    optimiser steps (warmup scaled with it) and the phantom's ``difficulty``, each when given."""
    config = resolve_config(base)
    if overrides:
        config = config.with_overrides(list(overrides))
    config = config.with_steps(steps)
    return config if difficulty is None else config.replace(data_difficulty=difficulty)


def prompt_families(prompts: str | Path | None) -> list | None:
    """The built-in prompt families plus those of a prompt file (None: the built-in ones)."""
    if prompts is None:
        return None
    return [*prompt_family_names(), *load_prompts(prompts).values()]


def run_details(
    base: TrainConfig, seeds: int, prompts: str | Path | None, t0: float
) -> dict[str, Any]:
    """What a seeded bench ran with: the config (less preset and seed), seeds, prompt file,
    threads, and the wall time since ``t0``."""
    return {
        "config": {k: v for k, v in base.to_dict().items() if k not in ("loss_preset", "seed")},
        "seeds": seeds,
        "prompts": None if prompts is None else str(prompts),
        "threads": torch.get_num_threads(),
        "wall_seconds": time.perf_counter() - t0,
    }


def benchmark(
    seeds: int = SEEDS,
    out: str | Path | None = None,
    base: str | TrainConfig = "cpu-quick",
    steps: int | None = None,
    difficulty: str | None = None,
    prompts: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    sites: tuple[str, ...] = ("B",),
) -> dict[str, Any]:
    """The claims' figures; ``steps`` replaces the budget of ``base`` (warmup scaled with it),
    ``difficulty`` the phantom's, ``overrides`` (``key=value``) any other field of the config,
    ``prompts`` (a prompt file) adds its families to claim b's spread
    (:mod:`cagcl_mini.evaluation.prompts`) and ``sites`` are the phantom's other hospitals every
    run is scored at without fine-tuning."""
    t0 = time.perf_counter()
    base = base_config(base, steps, difficulty, overrides)
    with tempfile.TemporaryDirectory(prefix="cagcl-claims-") as tmp:
        result = compare_presets(
            seeds,
            base=base,
            out=out if out is not None else tmp,
            families=prompt_families(prompts),
            sites=sites,
        )
    return result | run_details(base, seeds, prompts, t0) | {"sites": list(sites)}
