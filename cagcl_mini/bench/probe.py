"""``cagcl-mini bench probe``: zero-shot detection next to its label-aware bounds, one seed.

For the untrained model and each loss preset (trained with the config's budget, reused from the
cache when present), on the validation split: zero-shot macro AUC with its 95 % interval (volumes
bootstrapped), every abnormality's zero-shot AUC, the linear-probe macro AUC of the same frozen
embeddings and the gap to it, and zero-shot anatomy recognition. Then the bounds of the data:
the same image tower trained end to end on the labels (supervised probe) and the best single
intensity statistic per finding (:mod:`cagcl_mini.experiments.probe`). These are the figures the
README's targets name. The supervised tower is also trained with ``supervised_seeds`` seeds
(``supervised_seeds`` block: per-seed macro AUC, the mean with its 95 % t interval, and each
finding's mean and lowest AUC over those seeds), because one seed's bound moves by a few points.
``supervised_only`` runs the supervised tower alone (no trained presets, no intensity probe):
with ``overrides`` (``--set``) it measures what an optimiser or data change does to the bound.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cagcl_mini.evaluation.embed import embed_dataset
from cagcl_mini.evaluation.retrieval import anatomy_recognition
from cagcl_mini.evaluation.uncertainty import bootstrap_detection, t_interval
from cagcl_mini.evaluation.zero_shot import zero_shot_detection
from cagcl_mini.experiments.probe import intensity_probe, linear_probe, supervised_probe
from cagcl_mini.train.config import TrainConfig, resolve_config
from cagcl_mini.train.loop import trained_model
from cagcl_mini.train.setup import dataset_for, model_for

PRESETS: tuple[str, ...] = ("fvlm", "ctglip", "cagcl")
VISIBLE = 0.75  # the tutorial difficulty's per-finding target for the supervised tower


def zero_shot_row(model: Any, train_set: Any, valid_set: Any, seed: int = 0) -> dict[str, Any]:
    """One model's zero-shot figures and the linear probe of its embeddings (see module doc)."""
    train_split, valid_split = embed_dataset(model, train_set), embed_dataset(model, valid_set)
    detection = zero_shot_detection(model, valid_split)
    per = {n: float(a) for n, a in detection.table["auc"].items()} if len(detection.table) else {}
    interval = bootstrap_detection(valid_split, detection.scores, seed=seed)
    linear = linear_probe(train_split, valid_split)
    macro = float(detection.macro["auc"])
    return {
        "zero_shot_macro_auc": macro,
        "zero_shot_macro_auc_ci95": list(interval["macro"]),
        "zero_shot_auc": per,
        "zero_shot_min_auc": min(per.values()) if per else math.nan,
        "labels_below_0.4": sorted(n for n, a in per.items() if a < 0.4),
        "linear_probe": linear,
        "gap_to_linear_probe": linear["macro_auc"] - macro,
        "anatomy_top1": anatomy_recognition(model, valid_split)["top1"],
    }


def supervised_spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed supervised probes summarised: macro AUC per seed, its mean with a 95 % t
    interval, and per finding the mean and the lowest AUC over the seeds."""
    macros = [float(r["macro_auc"]) for r in runs]
    names = list(runs[0]["auc"])
    per = {n: [float(r["auc"][n]) for r in runs] for n in names}
    mean = {n: float(np.mean(v)) for n, v in per.items()}
    return {
        "seeds": [int(r["seed"]) for r in runs],
        "macro_auc": macros,
        "macro_auc_mean": float(np.mean(macros)),
        "macro_auc_ci95": list(t_interval(macros)),
        "auc_mean": mean,
        "auc_min": {n: float(min(v)) for n, v in per.items()},
        f"findings_mean_at_least_{VISIBLE}": sum(m >= VISIBLE for m in mean.values()),
        "findings": len(names),
    }


def benchmark(
    config: TrainConfig | str = "cpu-quick",
    presets: tuple[str, ...] = PRESETS,
    steps: int | None = None,
    seed: int = 0,
    difficulty: str | None = None,
    supervised_seeds: int = 3,
    overrides: list[str] | tuple[str, ...] = (),
    supervised_only: bool = False,
) -> dict[str, Any]:
    """The probes' figures; ``overrides`` (``key=value``, as ``cagcl-mini train --set``) change
    the config, ``steps`` replaces its steps (and scales its warmup) and ``difficulty`` the
    phantom's (default: the config's)."""
    if supervised_seeds < 1:
        raise ValueError(f"supervised_seeds must be >= 1, got {supervised_seeds}")
    config = resolve_config(config)
    if overrides:
        config = config.with_overrides(list(overrides))
    config = config.replace(seed=seed).with_steps(steps)
    if difficulty is not None:
        config = config.replace(data_difficulty=difficulty)
    train_set, valid_set = dataset_for(config, "train"), dataset_for(config, "valid")
    out: dict[str, Any] = {}
    if not supervised_only:
        models = {"untrained": model_for(config)}
        models |= {p: trained_model(config, loss_preset=p) for p in presets}
        out["models"] = {
            name: zero_shot_row(m, train_set, valid_set, seed) for name, m in models.items()
        }
    supervised = supervised_probe(
        config,
        seed=seed,
        progress=False,
        sites=("B",) if config.data_root is None and not supervised_only else (),
    )
    more = [
        supervised_probe(config, seed=seed + k, progress=False) for k in range(1, supervised_seeds)
    ]
    out["supervised"] = supervised
    out["supervised_seeds"] = supervised_spread([supervised, *more])
    if not supervised_only:
        out["intensity"] = intensity_probe([train_set, valid_set])
    return out | {
        "overrides": list(overrides),
        "batch_size": config.batch_size,
        "lr": config.lr,
        "config": config.name,
        "difficulty": config.data_difficulty,
        "image_size": config.image_size,
        "n_train": len(train_set),
        "n_valid": len(valid_set),
        "steps": config.steps,
        "seed": seed,
    }
