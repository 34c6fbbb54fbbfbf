"""Zero-shot abnormality detection and prompt-family robustness on an :class:`EmbeddedSplit`.

Detection of abnormality ``a`` of anatomy ``k`` (fVLM / CT-CLIP): with the prompt pair
``(t_neg, t_pos)`` of a family (``anatomy.prompt_pair``) and the model's own logit scale ``s``
(``model.scale()``, the learned inverse temperature, 1/0.07 at initialisation)::

    score_i = softmax(s * [<v_ik, t_neg>, <v_ik, t_pos>])[1] = sigmoid(s * (<v_ik, t_pos> - <v_ik, t_neg>))

over the volumes where anatomy ``k`` is present; the truth is the volume's label column of ``a``.
AUC does not depend on ``s``; the thresholded metrics do, through the fixed threshold grid (see
:mod:`cagcl_mini.evaluation.metrics`). Abnormalities with a single class in the split are skipped and listed.
Macro averages run over every evaluated abnormality of the catalog (``macro``, the headline) and
over the 18 CT-RATE ones only (``macro_ct_rate``, comparable to the papers).

Prompt robustness: the macro AUC of each prompt family; the spread is their mean and population
standard deviation (``np.std``, ddof=0: the families are the whole set we ask about, not a sample).

A family is a built-in name (``anatomy.prompt_family_names()``) or a
:class:`~cagcl_mini.evaluation.prompts.PromptFamily` (the user's templates and pairs, such as
``prompts.load_prompts(FILE.yaml)`` gives); results are keyed by the family's name. An ensemble
family with several pairs for an abnormality scores with the re-normalised mean of the pairs'
L2-normalised embeddings (CLIP's prompt ensembling), negatives and positives apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.special import expit

from cagcl_mini.anatomy import (
    ABNORMALITIES,
    ALL_LABELS,
    ANATOMY_NAMES,
    Abnormality,
    prompt_family_names,
)
from cagcl_mini.evaluation.embed import EmbeddedSplit, inference, model_scale
from cagcl_mini.evaluation.metrics import METRICS, auc, both_classes, detection_metrics
from cagcl_mini.evaluation.prompts import PromptFamily, as_family

DEFAULT_FAMILY = "fvlm"
MACRO_METRICS: tuple[str, ...] = ("auc", *METRICS, *(f"honest_{m}" for m in METRICS))
ABNORMALITY_LOOKUP: dict[str, Abnormality] = {ab.name: ab for ab in ABNORMALITIES}


def prompt_embeddings(
    model: Any,
    family: str | PromptFamily,
    abnormalities: Sequence[Abnormality] = ABNORMALITIES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(negative (M,E), positive (M,E)) prompt embeddings of ``abnormalities`` in ``family``.

    One text-encoder call per family. An ensemble family averages each abnormality's pairs
    (module docstring); a non-ensemble family with several pairs is refused, as its pairs are
    separate families (``PromptFamily.expand``).
    """
    fam = as_family(family)
    groups = [fam.prompts(ab) for ab in abnormalities]
    averaged = fam.ensemble and fam.n_pairs > 1
    if not averaged and any(len(g) > 1 for g in groups):
        raise ValueError(
            f"prompt family {fam.name!r} has several pairs for an abnormality but is no "
            "ensemble: score its PromptFamily.expand() variants, or set ensemble=True"
        )
    with inference(model):
        emb = model.encode_text([p for g in groups for pair in g for p in pair]).float().cpu()
    neg, pos = emb[0::2], emb[1::2]
    if not averaged:
        return neg, pos
    sizes = [len(g) for g in groups]
    return _ensemble_mean(neg, sizes), _ensemble_mean(pos, sizes)


def _ensemble_mean(emb: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Rows grouped by ``sizes``: per group, the normalised mean of the normalised rows."""
    chunks = torch.split(F.normalize(emb, dim=-1), list(sizes))
    return F.normalize(torch.stack([c.mean(dim=0) for c in chunks]), dim=-1)


def detection_scores(
    split: EmbeddedSplit,
    negative: torch.Tensor,
    positive: torch.Tensor,
    scale: float,
    abnormalities: Sequence[Abnormality] = ABNORMALITIES,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{abnormality: (scores, labels)}`` over the volumes where its anatomy is present.

    ``softmax(s * [c_neg, c_pos])[1]`` is computed as ``expit(s * (c_pos - c_neg))`` (identical,
    numerically stable) in float64.
    """
    v_all = split.v.detach().double().cpu().numpy()
    present = split.present.detach().cpu().numpy()
    labels = split.labels.detach().cpu().numpy()
    neg, pos = (x.detach().double().cpu().numpy() for x in (negative, positive))
    out = {}
    for m, ab in enumerate(abnormalities):
        k = ANATOMY_NAMES.index(ab.anatomy)
        v = v_all[present[:, k], k]
        score = expit(scale * (v @ pos[m] - v @ neg[m]))
        label = labels[present[:, k], ALL_LABELS.index(ab.name)] > 0.5
        out[ab.name] = (score, label.astype(np.int64))
    return out


@dataclass
class DetectionResult:
    """Per-abnormality metrics (``table``, index = abnormality name), macro averages, skips."""

    family: str
    table: pd.DataFrame
    macro: dict[str, float]
    macro_ct_rate: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN kept; :func:`jsonable` turns it into null)."""
        return {
            "family": self.family,
            "macro": dict(self.macro),
            "macro_ct_rate": dict(self.macro_ct_rate),
            "per_abnormality": {
                name: {c: _plain(x) for c, x in row.items()}
                for name, row in self.table.to_dict(orient="index").items()
            },
            "skipped": dict(self.skipped),
        }


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def macro_average(table: pd.DataFrame) -> dict[str, float]:
    """Mean of each metric over the abnormalities where it is defined, and their count."""
    out: dict[str, float] = {"n_abnormalities": int(len(table))}
    for col in MACRO_METRICS:
        vals = table[col].to_numpy(dtype=np.float64) if col in table else np.array([])
        vals = vals[np.isfinite(vals)]
        out[col] = float(vals.mean()) if vals.size else math.nan
    return out


def _skip_reason(labels: np.ndarray) -> str | None:
    if labels.size == 0:
        return "anatomy absent from every volume"
    if not both_classes(labels):
        return f"one class only: {int(labels.sum())} of {labels.size} positive"
    return None


def detection_from_scores(
    scores: Mapping[str, tuple[np.ndarray, np.ndarray]],
    train_scores: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    family: str = DEFAULT_FAMILY,
    grid: str = "unit",
) -> DetectionResult:
    """Metrics of every abnormality from ``{name: (scores, labels)}``; the honest variant picks
    each threshold on ``train_scores[name]`` instead."""
    rows = {}
    skipped = {}
    for name, (s, y) in scores.items():
        reason = _skip_reason(y)
        if reason is not None:
            skipped[name] = reason
            continue
        ts, ty = (train_scores or {}).get(name, (None, None))
        ab = ABNORMALITY_LOOKUP.get(name)
        rows[name] = {
            "anatomy": ab.anatomy if ab else "",
            "ct_rate": bool(ab.ct_rate) if ab else False,
            **detection_metrics(s, y, ts, ty, grid=grid),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "abnormality"
    ct = table[table["ct_rate"]] if len(table) else table
    return DetectionResult(
        family=family,
        table=table,
        macro=macro_average(table),
        macro_ct_rate=macro_average(ct),
        skipped=skipped,
        scores=dict(scores),
    )


def zero_shot_detection(
    model: Any,
    valid_split: EmbeddedSplit,
    train_split: EmbeddedSplit | None = None,
    family: str | PromptFamily = DEFAULT_FAMILY,
    grid: str = "unit",
) -> DetectionResult:
    """Zero-shot detection of every catalog abnormality with one prompt family (a built-in
    name or a :class:`PromptFamily`; the result's ``family`` is its name).

    Thresholds: closest ROC point to (0, 1) on the validation scores, and (honest variant) on the
    ``train_split`` scores when given. ``grid`` is ``"unit"`` or ``"range"`` (metrics module).
    """
    fam = as_family(family)
    neg, pos = prompt_embeddings(model, fam)
    scale = model_scale(model)
    valid = detection_scores(valid_split, neg, pos, scale)
    train = None if train_split is None else detection_scores(train_split, neg, pos, scale)
    return detection_from_scores(valid, train, family=fam.name, grid=grid)


def prompt_robustness(
    model: Any,
    split: EmbeddedSplit,
    families: Sequence[str | PromptFamily] = prompt_family_names(),
) -> dict[str, Any]:
    """Macro AUC per prompt family, and their mean and population std (all findings / CT-RATE).

    ``families`` are built-in names or :class:`PromptFamily` objects; a non-ensemble family with
    several pairs per abnormality counts as its ``expand()`` variants. Returns ``families`` (the
    names), ``macro_auc`` {family: AUC}, ``macro_auc_ct_rate``, ``mean``, ``std``,
    ``mean_ct_rate``, ``std_ct_rate`` and ``per_abnormality_auc`` {family: {abnormality: AUC}}.
    """
    fams = [f for spec in families for f in as_family(spec).expand()]
    if not fams:
        raise ValueError("prompt_robustness needs at least one prompt family")
    names = [f.name for f in fams]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"prompt families are keyed by name; {', '.join(twice)} given twice")
    scale = model_scale(model)
    per: dict[str, dict[str, float]] = {}
    macro, macro_ct = {}, {}
    for fam in fams:
        neg, pos = prompt_embeddings(model, fam)
        scores = detection_scores(split, neg, pos, scale)
        aucs = {n: auc(s, y) for n, (s, y) in scores.items() if _skip_reason(y) is None}
        per[fam.name] = aucs
        macro[fam.name] = float(np.mean(list(aucs.values()))) if aucs else math.nan
        ct = [a for n, a in aucs.items() if ABNORMALITY_LOOKUP[n].ct_rate]
        macro_ct[fam.name] = float(np.mean(ct)) if ct else math.nan
    out: dict[str, Any] = {"families": names, "macro_auc": macro, "macro_auc_ct_rate": macro_ct}
    for suffix, vals in (("", macro), ("_ct_rate", macro_ct)):
        arr = np.array([x for x in vals.values() if np.isfinite(x)])
        out[f"mean{suffix}"] = float(arr.mean()) if arr.size else math.nan
        out[f"std{suffix}"] = float(arr.std(ddof=0)) if arr.size else math.nan
    out["per_abnormality_auc"] = per
    return out


def robustness_table(robustness: Mapping[str, Any]) -> pd.DataFrame:
    """One row per prompt family: ``macro_auc`` and ``macro_auc_ct_rate``."""
    fams = list(robustness["families"])
    return pd.DataFrame(
        {
            "macro_auc": [robustness["macro_auc"][f] for f in fams],
            "macro_auc_ct_rate": [robustness["macro_auc_ct_rate"][f] for f in fams],
        },
        index=pd.Index(fams, name="family"),
    )
