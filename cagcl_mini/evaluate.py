"""Zero-shot evaluation of a model, all of DESIGN.md's "Evaluation" in one call.

The pieces live in their own modules and are re-exported here, so ``evaluate.X`` reaches them all:

- :mod:`cagcl_mini.embed`: :func:`embed_dataset` -> :class:`EmbeddedSplit` (run the model once);
- :mod:`cagcl_mini.zero_shot`: :func:`zero_shot_detection`, :func:`prompt_robustness`;
- :mod:`cagcl_mini.metrics`: AUC, the closest-ROC-point threshold, thresholded metrics;
- :mod:`cagcl_mini.collapse`: text-embedding collapse statistics;
- :mod:`cagcl_mini.retrieval`: :func:`anatomy_recognition`, :func:`retrieval_recall`.

:func:`evaluate_model` bundles them into one JSON-ready dict; :func:`main` is
``cagcl-mini evaluate`` (:mod:`cagcl_mini.evaluate_cli`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cagcl_mini.anatomy import prompt_family_names
from cagcl_mini.collapse import split_text_embeddings, text_collapse_stats
from cagcl_mini.embed import EmbeddedSplit, as_embedded, embed_dataset, model_scale
from cagcl_mini.retrieval import (
    RECALL_KS,
    anatomy_recognition,
    anatomy_recognition_from_embeddings,
    retrieval_from_embeddings,
    retrieval_recall,
    volume_report_embeddings,
)
from cagcl_mini.zero_shot import (
    DEFAULT_FAMILY,
    MACRO_METRICS,
    DetectionResult,
    detection_from_scores,
    detection_scores,
    macro_average,
    prompt_embeddings,
    prompt_robustness,
    robustness_table,
    zero_shot_detection,
)

__all__ = [
    "DEFAULT_FAMILY",
    "MACRO_METRICS",
    "RECALL_KS",
    "DetectionResult",
    "EmbeddedSplit",
    "anatomy_recognition",
    "anatomy_recognition_from_embeddings",
    "as_embedded",
    "collapse_stats",
    "detection_from_scores",
    "detection_scores",
    "embed_dataset",
    "evaluate_model",
    "jsonable",
    "macro_average",
    "main",
    "model_scale",
    "prompt_embeddings",
    "prompt_robustness",
    "retrieval_from_embeddings",
    "retrieval_recall",
    "robustness_table",
    "volume_report_embeddings",
    "zero_shot_detection",
]


def collapse_stats(split: EmbeddedSplit) -> dict[str, Any]:
    """:func:`collapse.text_collapse_stats` of the split's distinct descriptions."""
    emb, index, strings = split_text_embeddings(split.t, split.texts)
    return text_collapse_stats(emb, index, strings)


def evaluate_model(
    model: Any,
    valid: Any,
    train: Any = None,
    *,
    family: str = DEFAULT_FAMILY,
    families: Sequence[str] = prompt_family_names(),
    grid: str = "unit",
    batch_size: int = 16,
) -> dict[str, Any]:
    """Every evaluation of DESIGN.md in one JSON-ready dict (NaN as float; see :func:`jsonable`).

    ``valid`` / ``train`` are datasets or :class:`EmbeddedSplit`s; ``train`` only serves the
    honest thresholds. Keys: ``summary`` (headline numbers), ``detection``,
    ``prompt_robustness``, ``collapse``, ``anatomy_recognition``, ``retrieval``, ``n_volumes``,
    ``logit_scale``.
    """
    valid = as_embedded(model, valid, batch_size=batch_size)
    train = None if train is None else as_embedded(model, train, batch_size=batch_size)
    detection = zero_shot_detection(model, valid, train, family=family, grid=grid)
    robustness = prompt_robustness(model, valid, families)
    collapse = collapse_stats(valid)
    recognition = anatomy_recognition(model, valid)
    retrieval = retrieval_recall(valid)
    summary = {
        "macro_auc": detection.macro["auc"],
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
        "detection": detection.to_dict(),
        "prompt_robustness": robustness,
        "collapse": collapse,
        "anatomy_recognition": recognition,
        "retrieval": retrieval,
        "n_volumes": len(valid),
        "n_train_volumes": 0 if train is None else len(train),
        "logit_scale": model_scale(model),
        "grid": grid,
    }


def jsonable(obj: Any) -> Any:
    """A copy with NaN / inf as None and numpy / torch scalars as Python numbers (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.generic, torch.Tensor)) and np.ndim(obj) == 0:
        obj = obj.item()
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(argv: list[str] | None = None) -> int:
    """``cagcl-mini evaluate``: see :mod:`cagcl_mini.evaluate_cli`."""
    from cagcl_mini.evaluate_cli import main as cli_main

    return cli_main(argv)
