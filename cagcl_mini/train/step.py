"""One training step's losses: batch -> model -> losses, the same for ``fit`` and ``bench train``.

:func:`step_losses` augments the texts when the objective says so (the abnormal flags were taken
from the full texts), runs the model, which returns the loss inputs by their loss names
(:data:`cagcl_mini.losses.objective.INPUT_KEYS`), adds what the batch holds (``abnormal``, the
encoded ``texts``, for CT-GLIP's diagnosis term the dictionary's anatomies and the sentences
that describe each sample's own findings, for the disease term the prompts' anatomies and
labels), gathers the per-sample inputs across processes and
calls :func:`~cagcl_mini.losses.objective.compute_losses`. The caller runs ``backward``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch.profiler import record_function

from cagcl_mini.losses.objective import compute_losses
from cagcl_mini.train.batches import DiagnosisDictionary, DiseasePrompts, augment_texts
from cagcl_mini.train.config import TrainConfig
from cagcl_mini.train.distributed import DistInfo, gather_loss_inputs


@dataclass(frozen=True)
class Objective:
    """What a config asks of a step: loss weights, text augmentation, the CT-GLIP extras."""

    weights: dict[str, float]
    augment: bool = False
    seed: int = 0
    dictionary: DiagnosisDictionary | None = None
    augment_variants: int | None = None
    disease: DiseasePrompts | None = None

    @classmethod
    def of(cls, config: TrainConfig) -> Objective:
        """The objective of a training config (the dictionary and the disease prompts only when
        a term uses them; an empty dictionary is none)."""
        weights = config.loss_weights()
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
        )

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
    dictionary = objective.dictionary
    with autocast(), record_function("forward"):
        out = model(
            {"image": batch["image"], "anatomy": batch["anatomy"]},
            texts=texts,
            dictionary=dictionary.sentences if dictionary else None,
            with_prompts=objective.with_prompts,
            disease_prompts=objective.disease.prompts if objective.disease else None,
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
