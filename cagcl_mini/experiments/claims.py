"""The CA-GCL claims, measured: ``fvlm`` (local loss only) against ``cagcl`` (local + global +
text augmentation) with the same budget and seeds, on the validation split of the run's data.

Three claims (DESIGN.md, "Objectives"):

a. **collapse**: with the local loss alone, descriptions of *different* anatomies end up close in
   the shared text space (high mean cosine, mass near 1); the global cross-anatomy term spreads
   them out (a much lower mean, a bell-shaped histogram). Measured over the distinct per-anatomy
   descriptions of the validation split, projected into the shared space
   (:func:`cagcl_mini.evaluation.evaluate.collapse_stats`).
b. **prompt robustness**: the standard deviation of macro zero-shot AUC across the prompt families
   (:func:`cagcl_mini.evaluation.zero_shot.prompt_robustness`) is at most half of fvlm's with cagcl.
c. **detection**: cagcl's macro zero-shot AUC is at least 0.90 and above fvlm's.

:func:`evaluate_run` gives one checkpoint's numbers and :func:`compare_presets` trains (or reuses)
every (preset, seed) run and aggregates means and standard deviations over seeds;
``cagcl-mini bench claims`` (:mod:`cagcl_mini.bench.claims`) runs it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cagcl_mini.anatomy import prompt_family_names
from cagcl_mini.evaluation.embed import as_embedded
from cagcl_mini.evaluation.evaluate import collapse_stats
from cagcl_mini.evaluation.prompts import PromptFamily
from cagcl_mini.evaluation.retrieval import anatomy_recognition
from cagcl_mini.evaluation.uncertainty import t_interval
from cagcl_mini.evaluation.zero_shot import prompt_robustness, zero_shot_detection
from cagcl_mini.phantom.sites import SITES, result_key
from cagcl_mini.phantom.sites import site as get_site
from cagcl_mini.train.config import TrainConfig, resolve_config
from cagcl_mini.train.loop import ensure_trained
from cagcl_mini.train.setup import dataset_for, load_model

CLAIM_PRESETS: tuple[str, ...] = ("fvlm", "ctglip", "cagcl")
SEEDS = 5  # training seeds per preset (claims are means over them, with 95 % t intervals)
HEADLINE: tuple[str, ...] = ("cross_anatomy_text_cos_mean", "prompt_auc_std", "macro_auc")
AUC_TARGET = 0.90  # claim c
STD_RATIO = 0.5  # claim b: cagcl's prompt-family std at most this fraction of fvlm's


def claim_metrics(
    model: Any,
    valid: Any,
    families: Sequence[str | PromptFamily] | None = None,
    transfer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims' numbers of one model on one split (a dataset or an ``EmbeddedSplit``).

    Keys: ``cross_anatomy_text_cos_mean`` / ``_std`` / ``share_above_0.9``,
    ``within_anatomy_text_cos_mean``, ``effective_rank``, ``prompt_auc_std``,
    ``prompt_auc_mean``, ``family_auc`` {family: macro AUC}, ``macro_auc`` (the fVLM prompt family),
    ``macro_auc_ct_rate``, ``macro_f1`` (weighted F1 at the threshold closest to the ROC corner,
    as fVLM and CT-CLIP pick it), ``per_abnormality_auc``, ``anatomy_top1``. ``transfer`` maps
    other sites to their validation splits ({"B": split}); per site, e.g. for B,
    ``site_b_macro_auc``, ``site_b_minus_a`` (the change of macro AUC over the 18 CT-RATE
    findings, the ones the other sites label) and ``site_b_per_abnormality_auc``. ``families``
    are the prompt families of the robustness spread (default: the built-in ones).
    """
    split = as_embedded(model, valid)
    detection = zero_shot_detection(model, split)
    robustness = prompt_robustness(model, split, families or prompt_family_names())
    collapse = collapse_stats(split)
    extra = {"anatomy_top1": anatomy_recognition(model, split)["top1"]}
    for site, split in (transfer or {}).items():
        other, key = zero_shot_detection(model, as_embedded(model, split)), result_key(site)
        extra[f"{key}_macro_auc"] = other.macro["auc"]
        # the other sites label only the 18 CT-RATE findings: compare like with like
        extra[f"{key}_minus_a"] = other.macro_ct_rate["auc"] - detection.macro_ct_rate["auc"]
        extra[f"{key}_per_abnormality_auc"] = _auc_table(other)
    return extra | {
        "cross_anatomy_text_cos_mean": collapse["across"]["mean"],
        "cross_anatomy_text_cos_std": collapse["across"]["std"],
        "share_above_0.9": collapse["across"]["share_above"],
        "within_anatomy_text_cos_mean": collapse["within"]["mean"],
        "effective_rank": collapse["effective_rank"],
        "prompt_auc_std": robustness["std"],
        "prompt_auc_mean": robustness["mean"],
        "family_auc": dict(robustness["macro_auc"]),
        "macro_auc": detection.macro["auc"],
        "macro_auc_ct_rate": detection.macro_ct_rate["auc"],
        "macro_f1": detection.macro["f1_weighted"],
        "per_abnormality_auc": _auc_table(detection),
    }


def _auc_table(detection: Any) -> dict[str, float]:
    """{abnormality: AUC} of a detection result (the labels with both classes)."""
    return {n: float(a) for n, a in detection.table.get("auc", pd.Series(dtype=float)).items()}


def evaluate_run(
    checkpoint: str | Path,
    families: Sequence[str | PromptFamily] | None = None,
    sites: Sequence[str] = (),
) -> dict[str, Any]:
    """:func:`claim_metrics` of a trained checkpoint on its own config's validation split and,
    without fine-tuning, on the phantom's other ``sites`` (e.g. ``("B",)``)."""
    model, config = load_model(checkpoint)
    transfer = {site: dataset_for(config, "valid", site=site) for site in sites}
    return claim_metrics(model, dataset_for(config, "valid"), families, transfer)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds of every scalar, ``<key>_std`` (sample standard deviation), ``<key>_ci95``
    (the 95 % Student-t interval of the mean over seeds, :func:`t_interval`) and ``per_seed``."""
    scalars = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and k != "seed"]
    out: dict[str, Any] = {}
    for key in scalars:
        mean, std = _mean_std([r[key] for r in runs])
        out[key] = mean
        out[f"{key}_std"] = std
        out[f"{key}_ci95"] = list(t_interval([r[key] for r in runs]))
    out["per_seed"] = {key: [r[key] for r in runs] for key in ["seed", *scalars]}
    families = list(runs[0]["family_auc"])
    out["family_auc"] = {f: _mean_std([r["family_auc"][f] for r in runs])[0] for f in families}
    return out


def _value(agg: dict[str, Any], key: str, i: int | None) -> float:
    """The mean over seeds (``i`` None) or seed number ``i``'s value of ``key``."""
    return agg[key] if i is None else agg["per_seed"][key][i]


def claim_holds(
    fvlm: dict[str, Any], cagcl: dict[str, Any], i: int | None = None
) -> dict[str, bool]:
    """Claims a, b, c on the means (``i`` None) or on seed number ``i`` (see the module doc)."""
    cos_f, cos_c = (_value(d, "cross_anatomy_text_cos_mean", i) for d in (fvlm, cagcl))
    std_f, std_c = (_value(d, "prompt_auc_std", i) for d in (fvlm, cagcl))
    auc_f, auc_c = (_value(d, "macro_auc", i) for d in (fvlm, cagcl))
    return {
        "a": cos_c < cos_f,
        "b": std_c <= STD_RATIO * std_f,
        "c": auc_c >= AUC_TARGET and auc_c > auc_f,
        "c_above_fvlm": auc_c > auc_f,
    }


def verdicts(fvlm: dict[str, Any], cagcl: dict[str, Any]) -> dict[str, Any]:
    """Whether each claim holds on the means over seeds, and in how many seeds it holds."""
    n = len(cagcl["per_seed"]["seed"])
    per_seed = [claim_holds(fvlm, cagcl, i) for i in range(n)]
    on_means = claim_holds(fvlm, cagcl)
    out: dict[str, Any] = {
        key: {"holds": on_means[key], "seeds": sum(s[key] for s in per_seed)} for key in on_means
    }
    out["a"]["fvlm_share_above_0.9"] = fvlm["share_above_0.9"]
    out["a"]["cagcl_share_above_0.9"] = cagcl["share_above_0.9"]
    std_f = fvlm["prompt_auc_std"]
    out["b"]["ratio"] = cagcl["prompt_auc_std"] / std_f if std_f else math.nan
    stds = zip(cagcl["per_seed"]["prompt_auc_std"], fvlm["per_seed"]["prompt_auc_std"], strict=True)
    ratios = [c / f if f else math.nan for c, f in stds]
    out["b"]["ratio_ci95"] = list(t_interval(ratios))
    for key, claim in (("cross_anatomy_text_cos_mean", "a"), ("macro_auc", "c")):
        pairs = zip(cagcl["per_seed"][key], fvlm["per_seed"][key], strict=True)
        diffs = [c - f for c, f in pairs]
        out[claim]["cagcl_minus_fvlm"] = _mean_std(diffs)[0]
        out[claim]["cagcl_minus_fvlm_ci95"] = list(t_interval(diffs))
    for site in SITES:
        scored = f"{result_key(site)}_macro_auc"
        if scored in cagcl.get("per_seed", {}) and scored in fvlm["per_seed"]:
            out[transfer_name(site)] = _transfer(fvlm, cagcl, site)
    out["n_seeds"] = n
    return out


def transfer_name(site: str, prefix: str = "transfer") -> str:
    """Where a site's transfer figures go in the claims JSON: ``transfer`` for site B (the
    second hospital of the tutorial), ``transfer_c`` for site C."""
    return prefix if site == "B" else f"{prefix}_{site.lower()}"


def _transfer(fvlm: dict[str, Any], cagcl: dict[str, Any], site: str = "B") -> dict[str, Any]:
    """The other site, paired by seed: cagcl minus fvlm of the macro AUC there and of the drop
    there - A (the 18 findings it labels), each with its 95 % t interval, and the seeds where
    cagcl is ahead."""
    out: dict[str, Any] = {}
    prefix = result_key(site)
    for key, name in ((f"{prefix}_macro_auc", prefix), (f"{prefix}_minus_a", "drop")):
        pairs = zip(cagcl["per_seed"][key], fvlm["per_seed"][key], strict=True)
        diffs = [c - f for c, f in pairs]
        out[f"{name}_cagcl_minus_fvlm"] = _mean_std(diffs)[0]
        out[f"{name}_cagcl_minus_fvlm_ci95"] = list(t_interval(diffs))
        out[f"{name}_seeds_cagcl_ahead"] = sum(d > 0 for d in diffs)
    return out


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """``range(seeds)`` for a count, else the given seeds; at least one."""
    out = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not out:
        raise ValueError("at least one seed is needed")
    return out


def score_run(
    config: TrainConfig,
    out: str | Path | None = None,
    families: Sequence[str | PromptFamily] | None = None,
    sites: Sequence[str] = ("B",),
    progress: bool = False,
) -> dict[str, Any]:
    """Train (or reuse) one run and :func:`evaluate_run` it, with its seed and the seconds spent
    training and evaluating. ``out`` holds the run folder (None = the cache); ``sites`` are the
    phantom's other hospitals it is scored at too (phantom data only)."""
    config = config.replace(progress=progress)
    if out is not None:
        config = config.replace(out_dir=str(Path(out) / config.run_name()))
    t0 = time.perf_counter()
    checkpoint = ensure_trained(config, progress=progress)
    t1 = time.perf_counter()
    metrics = evaluate_run(checkpoint, families, sites if config.data_root is None else ())
    return metrics | {
        "seed": config.seed,
        "train_seconds": t1 - t0,
        "eval_seconds": time.perf_counter() - t1,
    }


TABLE_SUFFIX = "per_abnormality_auc"  # the per-abnormality tables: at site A and at each other


def without_tables(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Every run's metrics without the per-abnormality tables (the JSON's ``runs``)."""
    return {
        name: [{k: v for k, v in r.items() if not k.endswith(TABLE_SUFFIX)} for r in rs]
        for name, rs in runs.items()
    }


def per_finding_transfer(
    runs: Sequence[dict[str, Any]], site: str = "B"
) -> dict[str, dict[str, float]]:
    """Per finding labelled at both sites, means over seeds: AUC at site A (``auc``), at the
    other ``site`` without fine-tuning (``site_b_auc`` for B) and the drop there - A paired by
    seed (``drop``, with its ``drop_ci95``). Which findings a model loses at the other site,
    where the macro drop cannot say."""
    table = f"{result_key(site)}_{TABLE_SUFFIX}"
    if not runs or table not in runs[0]:
        return {}
    names = [n for n in runs[0][table] if n in runs[0]["per_abnormality_auc"]]
    out = {}
    for name in names:
        a = [r["per_abnormality_auc"].get(name, math.nan) for r in runs]
        b = [r[table].get(name, math.nan) for r in runs]
        drops = [y - x for x, y in zip(a, b, strict=True)]
        out[name] = {
            "auc": _mean_std(a)[0],
            f"{result_key(site)}_auc": _mean_std(b)[0],
            "drop": _mean_std(drops)[0],
            "drop_ci95": list(t_interval(drops)),
        }
    return out


def compare_presets(
    seeds: int | Sequence[int] = SEEDS,
    presets: Sequence[str] = CLAIM_PRESETS,
    base: str | TrainConfig = "cpu-quick",
    out: str | Path | None = None,
    progress: bool = False,
    families: Sequence[str | PromptFamily] | None = None,
    sites: Sequence[str] = ("B",),
) -> dict[str, Any]:
    """Train (or reuse) ``base`` with each loss preset and seed, and aggregate the claims.

    Runs differ only in ``loss_preset`` (and the augmentation it implies) and ``seed``. ``out``
    holds the run folders (a matching finished run there is reused); None = the cache
    (``$CAGCL_MINI_HOME/checkpoints``). ``families`` are the prompt families of claim b (default:
    the built-in ones); ``sites`` are the phantom's other hospitals every run is also scored at
    (phantom data only; ``("B",)``: the second hospital, ``("B", "C")`` both). Returns
    ``{preset: aggregate}`` plus ``runs`` (every run's metrics, training and evaluation
    seconds), ``claims`` (:func:`verdicts`; per other site its ``transfer`` entry, see
    :func:`transfer_name`) and, per other site, ``per_finding_transfer`` (``_c`` for site C:
    {preset: :func:`per_finding_transfer`}).
    """
    for site in sites:
        get_site(site)  # ValueError naming the sites
        if site == "A":
            raise ValueError("sites are the other hospitals scored without fine-tuning, not 'A'")
    base = resolve_config(base)
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in presets}
    for seed in seed_list(seeds):
        for name in presets:
            config = base.replace(loss_preset=name, seed=seed)
            runs[name].append(score_run(config, out, families, sites, progress))
    result: dict[str, Any] = {name: aggregate(r) for name, r in runs.items()}
    if "fvlm" in result and "cagcl" in result:
        result["claims"] = verdicts(result["fvlm"], result["cagcl"])
    for site in sites:
        transfer = {name: per_finding_transfer(r, site) for name, r in runs.items()}
        if any(transfer.values()):
            result[transfer_name(site, "per_finding_transfer")] = transfer
    result["runs"] = without_tables(runs)
    return result
