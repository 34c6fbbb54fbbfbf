"""Zero-shot anatomy recognition and volume-report retrieval on an :class:`EmbeddedSplit`.

Anatomy recognition (CT-GLIP): each present token ``v_ik`` is assigned the anatomy whose prompt
"This is the {anatomy} in the CT scan." it is most similar to; top-1 accuracy overall and per
anatomy.

Retrieval: a volume's embedding is the re-normalised mean of its present anatomies' ``v``, a
report's the re-normalised mean of its non-empty descriptions' ``t``; recall@k image->text and
text->image. Ties (identical reports embed identically) count as a random tie-break would on
average, so a collapsed model cannot score by ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cagcl_mini.anatomy import ANATOMY_NAMES
from cagcl_mini.evaluation.embed import EmbeddedSplit, inference
from cagcl_mini.evaluation.uncertainty import bootstrap_statistic

RECALL_KS: tuple[int, ...] = (1, 5, 10)


def anatomy_recognition_from_embeddings(
    v: torch.Tensor, present: torch.Tensor, prompts: torch.Tensor
) -> dict[str, Any]:
    """Top-1 of ``argmax_j <v_ik, prompt_j>`` == k over present tokens: overall, per anatomy,
    and the confusion matrix (rows true anatomy, columns predicted; K x K counts)."""
    v, present, prompts = (
        torch.as_tensor(v).float(),
        torch.as_tensor(present).bool(),
        torch.as_tensor(prompts).float(),
    )
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
    with inference(model):
        prompts = model.anatomy_prompt_embeddings().float().cpu()
    return anatomy_recognition_from_embeddings(split.v, split.present, prompts)


def volume_report_embeddings(
    split: EmbeddedSplit,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def _hits(sim: torch.Tensor, k: int) -> np.ndarray:
    """Per query: the chance that its own pair is among the top ``k`` (ties broken at random)."""
    own = sim.diagonal()[:, None]
    greater = (sim > own).sum(1).double()
    ties = (sim == own).sum(1).double() - 1.0  # other candidates scoring exactly the same
    return ((k - greater) / (ties + 1.0)).clamp(0.0, 1.0).numpy()


def _recall(sim: torch.Tensor, ks: Sequence[int], n_bootstrap: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in ks:
        hits = _hits(sim, k)
        out[f"recall@{k}"] = float(hits.mean())
        if n_bootstrap:
            ci = bootstrap_statistic(len(hits), lambda i, h=hits: float(h[i].mean()), n_bootstrap)
            out[f"recall@{k}_ci95"] = list(ci)
    return out


def retrieval_from_embeddings(
    image: torch.Tensor, text: torch.Tensor, ks: Sequence[int] = RECALL_KS, n_bootstrap: int = 0
) -> dict[str, Any]:
    """recall@k of row i's pair being row i, image->text and text->image (ties: expected value);
    with ``n_bootstrap`` replicates, each recall's 95 % interval over resampled queries."""
    image, text = torch.as_tensor(image).double(), torch.as_tensor(text).double()
    if image.shape != text.shape or image.dim() != 2:
        raise ValueError(
            f"image and text must both be (N, E), got {tuple(image.shape)} and {tuple(text.shape)}"
        )
    sim = image @ text.T
    return {
        "image_to_text": _recall(sim, ks, n_bootstrap),
        "text_to_image": _recall(sim.T, ks, n_bootstrap),
        "n": int(image.shape[0]),
        "chance": {f"recall@{k}": min(1.0, k / max(1, image.shape[0])) for k in ks},
    }


def retrieval_recall(
    split: EmbeddedSplit, ks: Sequence[int] = RECALL_KS, n_bootstrap: int = 0
) -> dict[str, Any]:
    """Volume-report retrieval recall@k of an embedded split (see the module docstring)."""
    img, txt, _ = volume_report_embeddings(split)
    return retrieval_from_embeddings(img, txt, ks, n_bootstrap)
