"""Zero-shot evaluation: abnormality detection, prompt robustness, anatomy recognition, retrieval.

Everything starts from :func:`embed_dataset`, which runs the model once over a split (eval mode, no
gradients) and keeps the tensors in an :class:`EmbeddedSplit`; every other function works on those
tensors, so a notebook embeds once and asks many questions.

Zero-shot detection of abnormality ``a`` of anatomy ``k`` (fVLM / CT-CLIP): with the prompt pair
``(t_neg, t_pos)`` of a family (``anatomy.prompt_pair``) and the model's own logit scale ``s``
(``model.scale()``, the learned inverse temperature, 1/0.07 at initialisation)::

    score_i = softmax(s * [<v_ik, t_neg>, <v_ik, t_pos>])[1] = sigmoid(s * (<v_ik, t_pos> - <v_ik, t_neg>))

over the volumes where anatomy ``k`` is present; the truth is the volume's label column of ``a``.
AUC does not depend on ``s``; the thresholded metrics do, through the fixed threshold grid (see
:mod:`cagcl_mini.metrics`). Abnormalities with a single class in the split are skipped and listed.
Macro averages run over every evaluated abnormality of the catalog (``macro``, the headline) and
over the 18 CT-RATE ones only (``macro_ct_rate``, comparable to the papers).

Prompt robustness: the macro AUC of each prompt family; the spread is their mean and population
standard deviation (``np.std``, ddof=0: the families are the whole set we ask about, not a sample).

Retrieval: a volume's embedding is the re-normalised mean of its present anatomies' ``v``, a
report's the re-normalised mean of its non-empty descriptions' ``t``; recall@k image->text and
text->image. Ties (identical reports embed identically) count as a random tie-break would on
average, so a collapsed model cannot score by ties.
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
from torch.utils.data import DataLoader

from cagcl_mini.anatomy import (
    ABNORMALITIES,
    ALL_LABELS,
    ANATOMY_NAMES,
    Abnormality,
    prompt_family_names,
    prompt_pair,
)
from cagcl_mini.collapse import split_text_embeddings, text_collapse_stats
from cagcl_mini.metrics import METRICS, auc, both_classes, detection_metrics

DEFAULT_FAMILY = "fvlm"
RECALL_KS: tuple[int, ...] = (1, 5, 10)
MACRO_METRICS: tuple[str, ...] = ("auc", *METRICS, *(f"honest_{m}" for m in METRICS))


# ----------------------------------------------------------------------------- embedding a split
@dataclass
class EmbeddedSplit:
    """A split run through the model once (CPU tensors).

    ``v`` (N,K,E) visual anatomy embeddings (zero where absent), ``present`` (N,K) bool, ``t``
    (N,K,E) description embeddings (zero where the text is ""), ``labels`` (N,A) float in
    ``ALL_LABELS`` order, ``abnormal`` (N,K) bool, ``ids`` N strings, ``texts`` N lists of K
    strings, ``scale`` the model's logit scale when embedded.
    """

    v: torch.Tensor
    present: torch.Tensor
    labels: torch.Tensor
    abnormal: torch.Tensor
    ids: list[str]
    texts: list[list[str]]
    t: torch.Tensor | None = None
    scale: float = 1.0 / 0.07
    name: str = ""

    def __len__(self) -> int:
        return int(self.v.shape[0])

    @property
    def text_present(self) -> torch.Tensor:
        """(N,K) bool: the description is non-empty."""
        return torch.tensor([[bool(x) for x in row] for row in self.texts], dtype=torch.bool)


def embed_dataset(
    model: Any,
    dataset: Any,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> EmbeddedSplit:
    """Run ``model`` over ``dataset`` once (eval mode, no gradients) and keep every embedding.

    ``dataset`` yields items of the batch layout (``data.CTReportDataset``); ``device`` moves the
    model there (default: where it is). The model's train/eval mode is restored afterwards.
    """
    from cagcl_mini.data import collate

    if len(dataset) == 0:
        raise ValueError(f"dataset {getattr(dataset, 'split', '')!r} is empty: nothing to embed")
    if device is not None:
        model.to(device)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="embedding", leave=False)
    parts: dict[str, list] = {k: [] for k in ("v", "present", "t", "labels", "abnormal")}
    ids: list[str] = []
    texts: list[list[str]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                v, present = model.encode_image(batch)
                parts["v"].append(v.float().cpu())
                parts["present"].append(present.bool().cpu())
                parts["t"].append(model.encode_batch_texts(batch["texts"]).float().cpu())
                parts["labels"].append(torch.as_tensor(batch["labels"]).float().cpu())
                parts["abnormal"].append(torch.as_tensor(batch["abnormal"]).bool().cpu())
                ids.extend(str(i) for i in batch["id"])
                texts.extend([list(row) for row in batch["texts"]])
            scale = float(model.scale())
    finally:
        model.train(was_training)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    if cat["labels"].shape[1] != len(ALL_LABELS):
        raise ValueError(
            f"labels have {cat['labels'].shape[1]} columns, expected {len(ALL_LABELS)} (ALL_LABELS)"
        )
    return EmbeddedSplit(
        v=cat["v"], present=cat["present"], t=cat["t"], labels=cat["labels"],
        abnormal=cat["abnormal"], ids=ids, texts=texts, scale=scale,
        name=str(getattr(dataset, "split", "")),
    )  # fmt: skip


def as_embedded(model: Any, split: Any, **kwargs: Any) -> EmbeddedSplit:
    """``split`` itself if already embedded, else :func:`embed_dataset` of it."""
    return split if isinstance(split, EmbeddedSplit) else embed_dataset(model, split, **kwargs)


# ----------------------------------------------------------------------------- zero-shot detection
def prompt_embeddings(
    model: Any, family: str, abnormalities: Sequence[Abnormality] = ABNORMALITIES
) -> tuple[torch.Tensor, torch.Tensor]:
    """(negative (M,E), positive (M,E)) prompt embeddings of ``abnormalities`` in ``family``."""
    pairs = [prompt_pair(ab, family) for ab in abnormalities]
    with torch.no_grad():
        emb = model.encode_text([p for pair in pairs for p in pair]).float().cpu()
    return emb[0::2], emb[1::2]


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
    v_all = split.v.double().numpy()
    present = split.present.numpy()
    labels = split.labels.numpy()
    neg, pos = negative.double().numpy(), positive.double().numpy()
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
        return f"one class only ({int(labels.sum())} of {labels.size} positive)"
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


ABNORMALITY_LOOKUP: dict[str, Abnormality] = {ab.name: ab for ab in ABNORMALITIES}


def zero_shot_detection(
    model: Any,
    valid_split: EmbeddedSplit,
    train_split: EmbeddedSplit | None = None,
    family: str = DEFAULT_FAMILY,
    grid: str = "unit",
) -> DetectionResult:
    """Zero-shot detection of every catalog abnormality with one prompt family.

    Thresholds: closest ROC point to (0, 1) on the validation scores, and (honest variant) on the
    ``train_split`` scores when given. ``grid`` is ``"unit"`` or ``"range"`` (metrics module).
    """
    neg, pos = prompt_embeddings(model, family)
    scale = float(model.scale())
    valid = detection_scores(valid_split, neg, pos, scale)
    train = None if train_split is None else detection_scores(train_split, neg, pos, scale)
    return detection_from_scores(valid, train, family=family, grid=grid)


def prompt_robustness(
    model: Any,
    split: EmbeddedSplit,
    families: Sequence[str] = prompt_family_names(),
) -> dict[str, Any]:
    """Macro AUC per prompt family, and their mean and population std (all findings / CT-RATE).

    Returns ``families``, ``macro_auc`` {family: AUC}, ``macro_auc_ct_rate``, ``mean``, ``std``,
    ``mean_ct_rate``, ``std_ct_rate`` and ``per_abnormality_auc`` {family: {abnormality: AUC}}.
    """
    families = list(families)
    if not families:
        raise ValueError("prompt_robustness needs at least one prompt family")
    scale = float(model.scale())
    per: dict[str, dict[str, float]] = {}
    macro, macro_ct = {}, {}
    for fam in families:
        neg, pos = prompt_embeddings(model, fam)
        scores = detection_scores(split, neg, pos, scale)
        aucs = {n: auc(s, y) for n, (s, y) in scores.items() if _skip_reason(y) is None}
        per[fam] = aucs
        macro[fam] = float(np.mean(list(aucs.values()))) if aucs else math.nan
        ct = [a for n, a in aucs.items() if ABNORMALITY_LOOKUP[n].ct_rate]
        macro_ct[fam] = float(np.mean(ct)) if ct else math.nan
    out: dict[str, Any] = {"families": families, "macro_auc": macro, "macro_auc_ct_rate": macro_ct}
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


# ----------------------------------------------------------------------------- anatomy recognition
def anatomy_recognition_from_embeddings(
    v: torch.Tensor, present: torch.Tensor, prompts: torch.Tensor
) -> dict[str, Any]:
    """Top-1 of ``argmax_j <v_ik, prompt_j>`` == k over present tokens: overall, per anatomy,
    and the confusion matrix (rows true anatomy, columns predicted; K x K counts)."""
    v, present, prompts = torch.as_tensor(v).float(), torch.as_tensor(present).bool(), torch.as_tensor(prompts).float()
    k = v.shape[1]
    if prompts.shape != (k, v.shape[2]):
        raise ValueError(f"prompts must be (K={k}, E={v.shape[2]}), got {tuple(prompts.shape)}")
    sample, anat = present.nonzero(as_tuple=True)
    if sample.numel() == 0:
        raise ValueError("no present anatomy token to recognise")
    pred = (v[sample, anat] @ prompts.T).argmax(1)
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((anat, pred), torch.ones_like(pred), accumulate=True)
    per = {
        ANATOMY_NAMES[j]: float(confusion[j, j] / confusion[j].sum())
        for j in range(k)
        if confusion[j].sum() > 0
    }
    return {
        "top1": float((pred == anat).float().mean()),
        "per_anatomy": per,
        "n_tokens": int(sample.numel()),
        "confusion": confusion.tolist(),
        "anatomies": list(ANATOMY_NAMES[:k]),
    }


def anatomy_recognition(model: Any, split: EmbeddedSplit) -> dict[str, Any]:
    """Zero-shot anatomy recognition against the CT-GLIP anatomy prompts of ``model``."""
    with torch.no_grad():
        prompts = model.anatomy_prompt_embeddings().float().cpu()
    return anatomy_recognition_from_embeddings(split.v, split.present, prompts)


# ----------------------------------------------------------------------------- retrieval
def volume_report_embeddings(split: EmbeddedSplit) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image (M,E), report (M,E), kept row indices (M,)): re-normalised means over present
    anatomies / non-empty descriptions; volumes lacking either are left out."""
    if split.t is None:
        raise ValueError("the split has no text embeddings t; embed it with embed_dataset")
    pv = split.present.float().unsqueeze(-1)
    pt = split.text_present.float().unsqueeze(-1)
    keep = (split.present.any(1) & split.text_present.any(1)).nonzero(as_tuple=True)[0]
    img = F.normalize((split.v * pv).sum(1)[keep], dim=-1)
    txt = F.normalize((split.t * pt).sum(1)[keep], dim=-1)
    return img, txt, keep


def _recall(sim: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    own = sim.diagonal()[:, None]
    greater = (sim > own).sum(1).double()
    ties = (sim == own).sum(1).double() - 1.0  # other candidates scoring exactly the same
    return {
        f"recall@{k}": float(((k - greater) / (ties + 1.0)).clamp(0.0, 1.0).mean()) for k in ks
    }


def retrieval_from_embeddings(
    image: torch.Tensor, text: torch.Tensor, ks: Sequence[int] = RECALL_KS
) -> dict[str, Any]:
    """recall@k of row i's pair being row i, image->text and text->image (ties: expected value)."""
    image, text = torch.as_tensor(image).double(), torch.as_tensor(text).double()
    if image.shape != text.shape or image.dim() != 2:
        raise ValueError(f"image and text must both be (N, E), got {tuple(image.shape)} and {tuple(text.shape)}")
    sim = image @ text.T
    return {
        "image_to_text": _recall(sim, ks),
        "text_to_image": _recall(sim.T, ks),
        "n": int(image.shape[0]),
        "chance": {f"recall@{k}": min(1.0, k / max(1, image.shape[0])) for k in ks},
    }


def retrieval_recall(split: EmbeddedSplit, ks: Sequence[int] = RECALL_KS) -> dict[str, Any]:
    """Volume-report retrieval recall@k of an embedded split (see the module docstring)."""
    img, txt, _ = volume_report_embeddings(split)
    return retrieval_from_embeddings(img, txt, ks)


# ----------------------------------------------------------------------------- everything
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
        "logit_scale": float(model.scale()),
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
