"""One model, every evaluation: :func:`evaluate_model` bundles DESIGN.md's "Evaluation" into one
JSON-ready dict, and :func:`format_report` prints it as aligned tables.

The pieces, each in its own module of this package:

- :mod:`~cagcl_mini.evaluation.embed`: :func:`embed_dataset` -> ``EmbeddedSplit`` (run the
  model once, ask many questions);
- :mod:`~cagcl_mini.evaluation.zero_shot`: zero-shot detection and prompt-family robustness;
- :mod:`~cagcl_mini.evaluation.prompts`: the user's prompt families, from a YAML file;
- :mod:`~cagcl_mini.evaluation.metrics`: AUC, the closest-ROC-point threshold, thresholded metrics;
- :mod:`~cagcl_mini.evaluation.collapse`: text-embedding collapse statistics;
- :mod:`~cagcl_mini.evaluation.retrieval`: anatomy recognition and volume-report retrieval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cagcl_mini.anatomy import prompt_family_names
from cagcl_mini.evaluation.collapse import split_text_embeddings, text_collapse_stats
from cagcl_mini.evaluation.embed import EmbeddedSplit, as_embedded, model_scale
from cagcl_mini.evaluation.metrics import METRICS
from cagcl_mini.evaluation.prompts import PromptFamily
from cagcl_mini.evaluation.retrieval import anatomy_recognition, retrieval_recall
from cagcl_mini.evaluation.uncertainty import N_BOOTSTRAP, bootstrap_detection
from cagcl_mini.evaluation.zero_shot import (
    DEFAULT_FAMILY,
    MACRO_METRICS,
    prompt_robustness,
    zero_shot_detection,
)

MIN_CLASS_COUNT = 5  # fewer positives (or negatives) than this: the AUC is a guess


def collapse_stats(split: EmbeddedSplit) -> dict[str, Any]:
    """:func:`~cagcl_mini.evaluation.collapse.text_collapse_stats` of the split's distinct
    descriptions, from the text embeddings already in the split."""
    emb, index, strings = split_text_embeddings(split.t, split.texts)
    return text_collapse_stats(emb, index, strings)


def evaluate_model(
    model: Any,
    valid: Any,
    train: Any = None,
    *,
    family: str | PromptFamily = DEFAULT_FAMILY,
    families: Sequence[str | PromptFamily] = prompt_family_names(),
    grid: str = "unit",
    batch_size: int = 16,
    n_bootstrap: int = N_BOOTSTRAP,
) -> dict[str, Any]:
    """Every evaluation of DESIGN.md in one JSON-ready dict (NaN kept as float;
    :func:`cagcl_mini.fileio.write_json` writes it as strict JSON).

    ``valid`` / ``train`` are datasets or :class:`EmbeddedSplit`s; ``train`` only serves the
    honest thresholds. ``family`` (detection) and ``families`` (robustness) are built-in names
    or :class:`~cagcl_mini.evaluation.prompts.PromptFamily` objects, such as
    :func:`~cagcl_mini.evaluation.prompts.load_prompts` reads from a file; results name them.
    Keys: ``summary`` (headline numbers), ``detection``, ``prompt_robustness``, ``collapse``,
    ``anatomy_recognition``, ``retrieval``, ``n_volumes``, ``logit_scale``. With
    ``n_bootstrap`` > 0 the AUCs and recalls get 95 % intervals over resampled validation volumes
    (``*_ci95``; :mod:`~cagcl_mini.evaluation.uncertainty`), every abnormality its counts of
    positives and negatives, and a metric resting on fewer than :data:`MIN_CLASS_COUNT` of
    either warns.
    """
    valid = as_embedded(model, valid, batch_size=batch_size)
    train = None if train is None else as_embedded(model, train, batch_size=batch_size)
    detection = zero_shot_detection(model, valid, train, family=family, grid=grid)
    robustness = prompt_robustness(model, valid, families)
    collapse = collapse_stats(valid)
    recognition = anatomy_recognition(model, valid)
    retrieval = retrieval_recall(valid, n_bootstrap=n_bootstrap)
    detection_dict = detection.to_dict()
    intervals = None
    if n_bootstrap:
        intervals = bootstrap_detection(valid, detection.scores, n=n_bootstrap)
        for name, row in detection_dict["per_abnormality"].items():
            row["auc_ci95"] = list(intervals["per_abnormality"].get(name, (math.nan, math.nan)))
            row["n_positive"] = intervals["n_positive"].get(name, 0)
            row["n_negative"] = intervals["n_negative"].get(name, 0)
        _warn_small_classes(intervals)
    summary = {
        "macro_auc": detection.macro["auc"],
        "macro_auc_ci95": list(intervals["macro"]) if intervals else [math.nan, math.nan],
        "macro_auc_ct_rate": detection.macro_ct_rate["auc"],
        **{f"macro_{m}": detection.macro[m] for m in MACRO_METRICS if m != "auc"},
        "family_auc_mean": robustness["mean"],
        "family_auc_std": robustness["std"],
        "cross_anatomy_cosine_mean": collapse["across"]["mean"],
        "cross_anatomy_share_above": collapse["across"]["share_above"],
        "within_anatomy_cosine_mean": collapse["within"]["mean"],
        "effective_rank": collapse["effective_rank"],
        "anatomy_top1": recognition["top1"],
        **{f"i2t_{k}": v for k, v in retrieval["image_to_text"].items()},
        **{f"t2i_{k}": v for k, v in retrieval["text_to_image"].items()},
    }
    return {
        "summary": summary,
        "detection": detection_dict,
        "prompt_robustness": robustness,
        "collapse": collapse,
        "anatomy_recognition": recognition,
        "retrieval": retrieval,
        "n_volumes": len(valid),
        "n_train_volumes": 0 if train is None else len(train),
        "logit_scale": model_scale(model),
        "grid": grid,
    }


def _warn_small_classes(intervals: dict[str, Any]) -> None:
    """One warning naming the abnormalities whose AUC rests on a handful of volumes."""
    small = [
        f"{name} ({intervals['n_positive'][name]} positive, {intervals['n_negative'][name]} "
        "negative)"
        for name in intervals["n_positive"]
        if min(intervals["n_positive"][name], intervals["n_negative"][name]) < MIN_CLASS_COUNT
    ]
    if small:
        warnings.warn(
            f"AUC rests on fewer than {MIN_CLASS_COUNT} volumes of one class for: "
            + "; ".join(small)
            + " (see the intervals; evaluate more volumes)",
            UserWarning,
            stacklevel=3,
        )


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, (list, tuple)) and len(x) == 2:
        return (
            "-"
            if any(v is None or math.isnan(v) for v in x)
            else (f"[{x[0]:.{digits}f}, {x[1]:.{digits}f}]")
        )
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(rows: Mapping[str, Mapping[str, Any]], columns: list[str], index_name: str) -> str:
    frame = pd.DataFrame.from_dict(
        {k: {c: _fmt(r.get(c)) for c in columns} for k, r in rows.items()}, orient="index"
    )
    frame.index.name = index_name or None
    return frame.to_string() if len(frame) else "(none)"


def format_report(results: Mapping[str, Any]) -> str:
    """Plain-text aligned tables of an :func:`evaluate_model` dict (or its JSON)."""
    det = results["detection"]
    cols = ["anatomy", "n", "n_pos", "auc", "auc_ci95", *METRICS, "honest_accuracy",
            "honest_sensitivity", "honest_specificity"]  # fmt: skip
    out = [
        f"Zero-shot detection, prompt family {det['family']!r} "
        f"({results['n_volumes']} volumes; threshold: closest ROC point to (0,1), "
        f"honest_* = threshold picked on {results.get('n_train_volumes', 0)} training volumes)",
        _table(det["per_abnormality"], cols, "abnormality"),
    ]
    macro_cols = ["n_abnormalities", "auc", *METRICS, *(f"honest_{m}" for m in METRICS)]
    ci = results.get("summary", {}).get("macro_auc_ci95")
    out += [
        "",
        f"Macro averages (macro AUC 95 % interval over resampled volumes: {_fmt(ci)})",
        _table({"all findings": det["macro"], "CT-RATE 18": det["macro_ct_rate"]}, macro_cols, ""),
    ]
    if det["skipped"]:
        out += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in det["skipped"].items())]
    rob = results["prompt_robustness"]
    fam_rows = {
        f: {"macro_auc": rob["macro_auc"][f], "macro_auc_ct_rate": rob["macro_auc_ct_rate"][f]}
        for f in rob["families"]
    }
    out += [
        "",
        "Prompt families (macro AUC)",
        _table(fam_rows, ["macro_auc", "macro_auc_ct_rate"], "family"),
        f"mean {_fmt(rob['mean'])}  std {_fmt(rob['std'])}   "
        f"(CT-RATE 18: mean {_fmt(rob['mean_ct_rate'])}  std {_fmt(rob['std_ct_rate'])})",
    ]
    rec = results["anatomy_recognition"]
    out += [
        "",
        f"Anatomy recognition top-1: {_fmt(rec['top1'])} over {rec['n_tokens']} tokens",
        _table({"top1": rec["per_anatomy"]}, list(rec["per_anatomy"]), ""),
    ]
    ret = results["retrieval"]
    out += [
        "",
        f"Volume-report retrieval ({ret['n']} volumes)",
        _table(
            {
                "image->text": ret["image_to_text"],
                "text->image": ret["text_to_image"],
                "chance": ret["chance"],
            },
            list(ret["chance"]),
            "",
        ),  # fmt: skip
    ]
    col = results["collapse"]
    out += [
        "",
        f"Text collapse ({col['n_texts']} distinct descriptions, effective rank "
        f"{_fmt(col['effective_rank'], 2)})",
        _table(
            {g: col[g] for g in ("within", "across")},
            ["n_pairs", "mean", "std", "share_above"],
            "anatomy pairs",
        ),
    ]
    return "\n".join(out)
