"""One training step's losses: batch -> model -> losses, the same for ``fit`` and ``bench train``.

:func:`step_losses` augments the texts when the objective says so (the abnormal flags were taken
from the full texts), runs the model, which returns the loss inputs by their loss names
(:data:`cagcl_mini.losses.objective.INPUT_KEYS`), adds what the batch holds (``abnormal``, the
encoded ``texts``, for CT-GLIP's diagnosis term the dictionary's anatomies and the sentences
that describe each sample's own findings, for the disease term the prompts' anatomies and
labels, for the localisation term the cited positions of the batch's report snippets), gathers the per-sample inputs across processes and
calls :func:`~cagcl_mini.losses.objective.compute_losses`. The caller runs ``backward``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch.profiler import record_function

from cagcl_mini.data.appearance import augment_appearance
from cagcl_mini.data.citations import mine_pairs, targets_by_volume
from cagcl_mini.data.dataset import CTReportDataset
from cagcl_mini.losses.objective import compute_losses
from cagcl_mini.train.batches import DiagnosisDictionary, DiseasePrompts, augment_texts
from cagcl_mini.train.config import TrainConfig
from cagcl_mini.train.distributed import DistInfo, gather_loss_inputs


@dataclass(frozen=True)
class Objective:
    """What a config asks of a step: loss weights, text and image augmentation, the CT-GLIP
    extras."""

    weights: dict[str, float]
    augment: bool = False
    seed: int = 0
    dictionary: DiagnosisDictionary | None = None
    augment_variants: int | None = None
    disease: DiseasePrompts | None = None
    # volume id -> its cited (snippet, axial position) pairs, for the localisation term
    citations: Mapping[str, tuple[tuple[str, float], ...]] | None = None
    image_augment: bool = False  # random scanner appearance of the training volumes

    @classmethod
    def of(cls, config: TrainConfig, dataset: CTReportDataset | None = None) -> Objective:
        """The objective of a training config (the dictionary, the disease prompts and the
        training split's slice citations only when a term uses them; an empty dictionary is
        none). The localisation term needs ``dataset``, the split it trains on, with at least
        one citation in its reports."""
        weights = config.loss_weights()
        citations = None
        if "localisation" in weights:
            if dataset is None:
                raise ValueError("loss term 'localisation' needs the training split's citations")
            citations = targets_by_volume(mine_pairs(dataset))
            if not citations:
                raise ValueError(
                    f"loss term 'localisation': no slice citations ('(series N, image M)') in the "
                    f"{dataset.split} reports (Findings_EN) of {dataset.dataset_dir}"
                )
        k = config.model_config().num_anatomies
        dictionary = None
        if "diagnosis" in weights and config.dictionary_fraction > 0:
            dictionary = DiagnosisDictionary.build(k, config.dictionary_fraction, config.seed)
        disease = DiseasePrompts.build(k) if "disease" in weights else None
        return cls(
            weights,
            config.use_augment(),
            config.seed,
            dictionary,
            config.augment_variants,
            disease,
            citations,
            config.image_augment,
        )

    def snippets(self, ids: Sequence[str]) -> tuple[torch.Tensor, list[str], torch.Tensor] | None:
        """``(rows (P,), snippets, targets (P,))`` of the cited snippets of a batch's volumes
        (``ids``), or None when the objective has no localisation term."""
        if self.citations is None:
            return None
        rows, texts, targets = [], [], []
        for row, vid in enumerate(ids):
            for snippet, target in self.citations.get(str(vid), ()):
                rows.append(row)
                texts.append(snippet)
                targets.append(target)
        return torch.tensor(rows, dtype=torch.long), texts, torch.tensor(targets)

    @property
    def with_prompts(self) -> bool:
        """Whether a term needs the anatomy prompt embeddings (CT-GLIP's anatomy term)."""
        return "anatomy" in self.weights


def step_losses(
    model: Callable[..., Mapping[str, Any]],
    batch: Mapping[str, Any],
    objective: Objective,
    *,
    micro_step: int = 0,
    first_index: int = 0,
    info: DistInfo | None = None,
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, torch.Tensor]:
    """Every loss term of one (micro-)batch and their weighted ``total``.

    ``model`` is the model or its DistributedDataParallel wrapper; ``micro_step`` and
    ``first_index`` (the global position of this rank's first sample) seed the augmentation, so
    every process and a resumed run augment a sample alike. ``autocast`` wraps the forward only:
    the losses run in float32.
    """
    texts = batch["texts"]
    if objective.augment:
        with record_function("augment"):
            texts = augment_texts(
                texts, objective.seed, micro_step, first_index, objective.augment_variants
            )
    image = batch["image"]
    if objective.image_augment:
        with record_function("augment"):
            image = augment_appearance(image, objective.seed, micro_step, first_index)
    dictionary = objective.dictionary
    cited = objective.snippets(batch.get("id", ()))
    with autocast(), record_function("forward"):
        out = model(
            {"image": image, "anatomy": batch["anatomy"]},
            texts=texts,
            dictionary=dictionary.sentences if dictionary else None,
            with_prompts=objective.with_prompts,
            disease_prompts=objective.disease.prompts if objective.disease else None,
            snippets=None if cited is None else cited[:2],
        )
    with record_function("losses"):
        device = out["v"].device
        inputs = {**out, "abnormal": batch["abnormal"].to(device), "texts": texts}
        if dictionary:
            inputs["dictionary_anatomy"] = dictionary.anatomy_index(device)
            inputs["exclude"] = dictionary.exclude(batch["texts"], device)
        if objective.disease:
            inputs["disease_anatomy"] = objective.disease.anatomy_index(device)
            inputs["disease_labels"] = objective.disease.labels(batch["labels"], device)
        if cited is not None:
            inputs["snippet_target"] = cited[2].to(device)
        return compute_losses(objective.weights, gather_loss_inputs(inputs, info or DistInfo()))


def check_finite(losses: Mapping[str, torch.Tensor], step: int, ids: Any = None) -> None:
    """Raise naming the step, the first non-finite term and the batch's volumes."""
    for name in [k for k in losses if k != "total"] + ["total"]:
        value = float(losses[name].detach())
        if not math.isfinite(value):
            where = f" (volumes {', '.join(map(str, ids))})" if ids else ""
            raise FloatingPointError(
                f"non-finite loss at step {step}: term '{name}' = {value}{where}"
            )
