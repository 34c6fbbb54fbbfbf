"""``cagcl-mini bench localisation``: intra-scan snippet localisation, mean absolute error in mm.

For each loss preset (pretrained with the config's budget, reused from the cache when present), a
localisation head on the frozen encoders predicts the depth of each cited validation snippet
(:func:`cagcl_mini.experiments.localisation.run_localisation`). Reports ``mae_mm`` per preset
with its 95 % bootstrap interval over pairs (``mae_mm_ci95``), and under ``baselines`` the
``anatomy_centroid`` and ``dataset_mean`` predictions, with the numbers of pairs. The
``cagcl+localisation`` row is cagcl pretrained with the optional localisation term; its
``own_head`` is the error of the head that pretraining trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cagcl_mini.evaluation.uncertainty import N_BOOTSTRAP
from cagcl_mini.experiments.localisation import (
    HEAD_STEPS,
    PRESETS,
    TERM_PRESET,
    TERM_WEIGHT,
    run_localisation,
)
from cagcl_mini.train.config import TrainConfig


def benchmark(
    config: TrainConfig | str = "cpu-quick",
    presets: Sequence[str] | None = None,
    steps: int | None = None,
    seed: int = 0,
    head_steps: int = HEAD_STEPS,
    n_bootstrap: int = N_BOOTSTRAP,
    term_weight: float = TERM_WEIGHT,
) -> dict[str, Any]:
    """Every preset's localisation error and the baselines' (module doc); with ``term_weight``
    > 0 (the default) also cagcl pretrained with the localisation term (``cagcl+localisation``)."""
    if presets is None:
        presets = (*PRESETS, TERM_PRESET) if term_weight > 0 else PRESETS
    return run_localisation(
        config, presets, steps=steps, head_steps=head_steps, seed=seed,
        n_bootstrap=n_bootstrap, term_weight=term_weight,
    )  # fmt: skip
