"""Embedding a split once: the model's per-anatomy image and text embeddings, kept as tensors.

:func:`embed_dataset` runs the model over a dataset (eval mode, no gradients) and keeps everything
in an :class:`EmbeddedSplit`; zero-shot detection, robustness, recognition, retrieval and collapse
statistics all work on those tensors, so a notebook embeds once and asks many questions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from cagcl_mini.anatomy import ALL_LABELS
from cagcl_mini.data.dataset import collate
from cagcl_mini.evaluation import embed_cache
from cagcl_mini.nn.text_cache import save_shared_prefix_states
from cagcl_mini.progress import progress_bar


@dataclass
class EmbeddedSplit:
    """A split run through the model once (CPU tensors).

    ``v`` (N,K,E) visual anatomy embeddings (zero where absent), ``present`` (N,K) bool, ``t``
    (N,K,E) description embeddings (zero where the text is ""), ``labels`` (N,A) float in
    ``ALL_LABELS`` order, ``abnormal`` (N,K) bool, ``ids`` N strings, ``texts`` N lists of K
    strings, ``scale`` the model's logit scale when embedded, ``reports`` the N full report texts
    (Findings_EN) when the dataset gives them: report generation scores against them.
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
    reports: list[str] | None = None

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
    cache: bool = False,
) -> EmbeddedSplit:
    """Run ``model`` over ``dataset`` once (eval mode, no gradients) and keep every embedding.

    ``dataset`` yields items of the batch layout (``data.CTReportDataset``); ``device`` moves the
    model there (default: where it is). The model's train/eval mode is restored afterwards.
    ``cache=True`` keeps the result on disk, keyed by the model's weights and the dataset's files
    (:mod:`~cagcl_mini.evaluation.embed_cache`): the same model on the same split is embedded once.
    """
    if len(dataset) == 0:
        raise ValueError(f"dataset {getattr(dataset, 'split', '')!r} is empty: nothing to embed")
    if device is not None:
        model.to(device)
    stored = embed_cache.cache_path(model, dataset, batch_size) if cache else None
    fields = embed_cache.load_fields(stored) if stored is not None else None
    if fields is not None:
        return EmbeddedSplit(**{k: v for k, v in fields.items() if k != "format"})
    split = _embed(model, dataset, batch_size, num_workers, progress)
    save_shared_prefix_states()  # the descriptions' frozen text states, for the next process
    if stored is not None:
        embed_cache.save_fields(stored, vars(split))
    return split


def _embed(
    model: Any, dataset: Any, batch_size: int, num_workers: int, progress: bool
) -> EmbeddedSplit:
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
    if progress:
        loader = progress_bar(loader, desc="embedding", leave=False)
    parts: dict[str, list] = {k: [] for k in ("v", "present", "t", "labels", "abnormal")}
    ids: list[str] = []
    texts: list[list[str]] = []
    reports: list[str] = []
    with inference(model):
        for batch in loader:
            v, present = model.encode_image(batch)
            parts["v"].append(v.float().cpu())
            parts["present"].append(present.bool().cpu())
            parts["t"].append(model.encode_batch_texts(batch["texts"]).float().cpu())
            parts["labels"].append(torch.as_tensor(batch["labels"]).float().cpu())
            parts["abnormal"].append(torch.as_tensor(batch["abnormal"]).bool().cpu())
            ids.extend(str(i) for i in batch["id"])
            texts.extend([list(row) for row in batch["texts"]])
            reports.extend(str(r) for r in batch.get("report", ()))
        scale = model_scale(model)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    if cat["labels"].shape[1] != len(ALL_LABELS):
        raise ValueError(
            f"labels have {cat['labels'].shape[1]} columns, expected {len(ALL_LABELS)} (ALL_LABELS)"
        )
    return EmbeddedSplit(
        v=cat["v"], present=cat["present"], t=cat["t"], labels=cat["labels"],
        abnormal=cat["abnormal"], ids=ids, texts=texts, scale=scale,
        name=str(getattr(dataset, "split", "")),
        reports=reports if len(reports) == len(ids) else None,
    )  # fmt: skip


@contextlib.contextmanager
def inference(model: Any) -> Iterator[Any]:
    """Eval mode and no gradients inside; the model's train/eval mode is restored on exit."""
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        if was_training:
            model.train(True)


def model_scale(model: Any) -> float:
    """The model's logit scale ``exp(logit_scale)`` (clamped) as a float."""
    scale = model.scale()
    return float(scale.detach()) if isinstance(scale, torch.Tensor) else float(scale)


def as_embedded(model: Any, split: Any, **kwargs: Any) -> EmbeddedSplit:
    """``split`` itself if already embedded, else :func:`embed_dataset` of it."""
    return split if isinstance(split, EmbeddedSplit) else embed_dataset(model, split, **kwargs)
