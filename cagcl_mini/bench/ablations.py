"""``cagcl-mini bench ablations``: CT-GLIP's dictionary scale and prompt-based disease supervision.

Runs :func:`cagcl_mini.experiments.ablations.dictionary_scale` and / or
:func:`~cagcl_mini.experiments.ablations.disease_supervision` on ``cpu-quick`` (3 seeds by
default) in a fresh folder unless ``out`` names one to reuse (the claims' folder holds the
``ctglip`` and ``cagcl`` reference runs), and adds the config and the wall time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from cagcl_mini.bench.claims import base_config, prompt_families, run_details
from cagcl_mini.experiments.ablations import (
    ABLATION_SEEDS,
    DISEASE_WEIGHT,
    dictionary_scale,
    disease_supervision,
)
from cagcl_mini.train.config import TrainConfig

ABLATIONS: tuple[str, ...] = ("dictionary", "disease")


def benchmark(
    which: tuple[str, ...] | list[str] = ABLATIONS,
    seeds: int = ABLATION_SEEDS,
    out: str | Path | None = None,
    base: str | TrainConfig = "cpu-quick",
    steps: int | None = None,
    difficulty: str | None = None,
    prompts: str | Path | None = None,
    weight: float = DISEASE_WEIGHT,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """``{"dictionary": ..., "disease": ...}`` for the ablations in ``which``; ``steps``,
    ``difficulty``, ``prompts`` and ``overrides`` as in ``bench claims``, ``weight`` the disease
    term's."""
    unknown = sorted(set(which) - set(ABLATIONS))
    if unknown:
        raise ValueError(f"unknown ablation {unknown[0]!r}; choose from {', '.join(ABLATIONS)}")
    t0 = time.perf_counter()
    base = base_config(base, steps, difficulty, overrides)
    families = prompt_families(prompts)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cagcl-ablations-") as tmp:
        folder = out if out is not None else tmp
        if "dictionary" in which:
            result["dictionary"] = dictionary_scale(seeds, base, out=folder, families=families)
        if "disease" in which:
            result["disease"] = disease_supervision(
                seeds, base, weight, out=folder, families=families
            )
    return result | run_details(base, seeds, prompts, t0)
