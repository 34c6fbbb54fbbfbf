"""Two ablations the seeds suggest: CT-GLIP's abnormality-dictionary scale, and prompt-based
disease supervision beside the contrastive terms.

- :func:`dictionary_scale` trains ``ctglip`` with none, a quarter, half and all of each anatomy's
  abnormality dictionary (the diagnosis term's extra negatives; ``TrainConfig.dictionary_fraction``,
  the subset drawn with the run's seed) and reports zero-shot AUC and F1.
- :func:`disease_supervision` trains ``cagcl`` with and without the ``disease`` term (binary
  cross-entropy of the model's own zero-shot score against the labels, arXiv 2603.02026) and
  reports zero-shot AUC, the prompt-family spread and the collapse statistics. The term trains on
  the fVLM prompt family, the family of the headline ``macro_auc``; the other families (and a
  prompt file's) are wordings it never saw.

Each setting is aggregated over seeds as the claims are (:func:`~.claims.aggregate`: means,
``_ci95`` Student-t intervals over seeds, ``per_seed``), and ``vs_reference`` holds the paired
difference of each setting from the reference setting (all of the dictionary; no disease term),
seed by seed, with its interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cagcl_mini.evaluation.prompts import PromptFamily
from cagcl_mini.evaluation.uncertainty import t_interval
from cagcl_mini.experiments.claims import aggregate, score_run, seed_list, without_tables
from cagcl_mini.losses.objective import LOSS_PRESETS
from cagcl_mini.train.config import TrainConfig, resolve_config

ABLATION_SEEDS = 3
DICTIONARY_FRACTIONS: dict[str, float] = {"none": 0.0, "quarter": 0.25, "half": 0.5, "all": 1.0}
DISEASE_WEIGHT = 1.0
COMPARED: tuple[str, ...] = (
    "macro_auc",
    "macro_f1",
    "prompt_auc_mean",
    "prompt_auc_std",
    "cross_anatomy_text_cos_mean",
    "anatomy_top1",
)


def paired_differences(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], reference: str, keys: Sequence[str] = COMPARED
) -> dict[str, dict[str, Any]]:
    """``{setting: {key: mean difference from reference, key_ci95: t interval}}``, seed by seed
    (the runs of a setting and of the reference share their seeds, in order)."""
    out: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        if name == reference:
            continue
        row: dict[str, Any] = {}
        for key in keys:
            diffs = [r[key] - ref[key] for r, ref in zip(rs, runs[reference], strict=True)]
            row[key] = sum(diffs) / len(diffs)
            row[f"{key}_ci95"] = list(t_interval(diffs))
        out[name] = row
    return out


def _run_settings(
    settings: Mapping[str, TrainConfig],
    seeds: int | Sequence[int],
    reference: str,
    out: str | Path | None,
    families: Sequence[str | PromptFamily] | None,
    progress: bool,
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    for seed in seed_list(seeds):
        for name, config in settings.items():
            runs[name].append(score_run(config.replace(seed=seed), out, families, (), progress))
    return {
        "settings": {name: aggregate(rs) for name, rs in runs.items()},
        "vs_reference": paired_differences(runs, reference),
        "reference": reference,
        "runs": without_tables(runs),
    }


def dictionary_scale(
    seeds: int | Sequence[int] = ABLATION_SEEDS,
    base: str | TrainConfig = "cpu-quick",
    fractions: Mapping[str, float] = DICTIONARY_FRACTIONS,
    out: str | Path | None = None,
    families: Sequence[str | PromptFamily] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """``ctglip`` with each share of the abnormality dictionary; reference: the largest share."""
    base = resolve_config(base).replace(loss_preset="ctglip")
    settings = {name: base.replace(dictionary_fraction=f) for name, f in fractions.items()}
    reference = max(fractions, key=lambda name: fractions[name])
    result = _run_settings(settings, seeds, reference, out, families, progress)
    result["fractions"] = dict(fractions)
    return result


def disease_supervision(
    seeds: int | Sequence[int] = ABLATION_SEEDS,
    base: str | TrainConfig = "cpu-quick",
    weight: float = DISEASE_WEIGHT,
    preset: str = "cagcl",
    out: str | Path | None = None,
    families: Sequence[str | PromptFamily] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """``preset`` with and without the ``disease`` term at ``weight``; reference: without.

    The run with the term keeps the preset's text augmentation (a weights dict has none by
    default)."""
    base = resolve_config(base).replace(loss_preset=preset)
    with_term = base.replace(
        loss_preset={**LOSS_PRESETS[preset], "disease": float(weight)},
        augment=base.use_augment(),
    )
    settings = {preset: base, f"{preset}+disease": with_term}
    result = _run_settings(settings, seeds, preset, out, families, progress)
    result["weight"] = float(weight)
    return result
