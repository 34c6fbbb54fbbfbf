"""``cagcl-mini bench probe``: zero-shot AUC next to its label-aware bounds, one seed.

For the untrained model and each loss preset (trained with the config's budget, reused from the
cache when present): zero-shot macro AUC and the linear-probe macro AUC of its frozen embeddings;
then the end-to-end supervised probe with the same budget, and the intensity probe of the data
(:mod:`cagcl_mini.experiments.probe`).
"""

from __future__ import annotations

from typing import Any

from cagcl_mini.evaluation.embed import embed_dataset
from cagcl_mini.evaluation.zero_shot import zero_shot_detection
from cagcl_mini.experiments.probe import intensity_probe, linear_probe, supervised_probe
from cagcl_mini.train.config import TrainConfig, resolve_config
from cagcl_mini.train.loop import trained_model
from cagcl_mini.train.setup import dataset_for, model_for


def benchmark(
    config: TrainConfig | str = "cpu-quick",
    presets: tuple[str, ...] = ("fvlm", "cagcl"),
    steps: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The probes' figures; ``steps`` replaces the config's steps (and scales its warmup)."""
    config = resolve_config(config).replace(seed=seed).with_steps(steps)
    train_set, valid_set = dataset_for(config, "train"), dataset_for(config, "valid")
    models = {"untrained": model_for(config)}
    models |= {p: trained_model(config, loss_preset=p) for p in presets}
    rows: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        train_split = embed_dataset(model, train_set)
        valid_split = embed_dataset(model, valid_set)
        zero_shot = zero_shot_detection(model, valid_split)
        rows[name] = {
            "zero_shot_macro_auc": float(zero_shot.macro["auc"]),
            "linear_probe": linear_probe(train_split, valid_split),
        }
    supervised = supervised_probe(config, seed=seed)
    return {
        "models": rows,
        "supervised": supervised,
        "intensity": intensity_probe([train_set, valid_set]),
        "config": config.name,
        "image_size": config.image_size,
        "steps": config.steps,
        "seed": seed,
    }
