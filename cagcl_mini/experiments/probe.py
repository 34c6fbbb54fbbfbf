"""Supervised probes: how much of the labels can the image side see at all?

Zero-shot detection can only be as good as the visual anatomy embeddings. Two probes bound it from
above, on the same data and split as the claims:

- :func:`linear_probe`: a logistic regression (scikit-learn) per abnormality on the *frozen*
  embeddings ``v(i, k)`` of its anatomy, fitted on the training split, scored by AUC on the
  validation split. It asks whether a pretrained image tower already separates the findings, even
  if the text side does not point at them.
- :func:`intensity_probe`: no network at all: five intensity statistics of each anatomy (mean,
  std, 1st and 99th percentile of the [0, 1] image, voxel count), and per abnormality the AUC of the
  single best one, chosen on the same volumes it is scored on (so optimistic). It shows what the
  phantom makes visible at the config's image size.
- :func:`supervised_probe`: the config's image tower (vision encoder + mask pooling, from scratch)
  trained end to end with binary cross-entropy on the labels, one logit per abnormality from its
  anatomy's pooled features, for ``steps`` steps. The ceiling of this encoder, resolution and
  budget when the labels are given: a zero-shot AUC above it would be surprising.

Both return ``{"macro_auc", "auc": {label: AUC}, ...}`` over the labels with both classes in the
validation split (the same rule as zero-shot detection). ``cagcl-mini bench probe``
(:mod:`cagcl_mini.bench.probe`) runs them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn

from cagcl_mini.anatomy import ALL_LABELS, ANATOMY_NAMES, CT_RATE_LABELS
from cagcl_mini.data.appearance import augment_appearance
from cagcl_mini.data.dataset import collate
from cagcl_mini.evaluation.embed import EmbeddedSplit
from cagcl_mini.evaluation.metrics import auc, both_classes
from cagcl_mini.losses.targets import catalog_label_anatomy
from cagcl_mini.nn.model import ModelConfig, image_and_anatomy
from cagcl_mini.nn.pooling import AttentionMaskPool, mean_mask_pool
from cagcl_mini.nn.vision import build_vision_encoder
from cagcl_mini.phantom.sites import result_key
from cagcl_mini.progress import progress_bar
from cagcl_mini.train.config import TrainConfig, resolve_config
from cagcl_mini.train.setup import autocast_for, dataset_for, lr_factor

LABEL_ANATOMY: np.ndarray = catalog_label_anatomy().numpy()  # (A,) anatomy 0..K-1 of each label


def _summary(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Per-label AUC of ``scores`` (N,A) against ``labels`` (N,A); macro over the scorable ones."""
    per_label = {
        name: auc(scores[:, a], labels[:, a])
        for a, name in enumerate(ALL_LABELS)
        if both_classes(labels[:, a])
    }
    values = [v for v in per_label.values() if not math.isnan(v)]
    return {
        "macro_auc": float(np.mean(values)) if values else math.nan,
        "n_labels": len(values),
        "auc": per_label,
    }


def linear_probe(train: EmbeddedSplit, valid: EmbeddedSplit, c: float = 1.0) -> dict[str, Any]:
    """Logistic regression per label on the frozen ``v`` of its anatomy (train -> valid AUC).

    A label with one class in the training split scores 0.5 on every validation volume.
    """
    x_train, x_valid = train.v.numpy(), valid.v.numpy()
    y_train, y_valid = train.labels.numpy() > 0.5, valid.labels.numpy() > 0.5
    scores = np.full(y_valid.shape, 0.5)
    for a, k in enumerate(LABEL_ANATOMY):
        if not (both_classes(y_train[:, a]) and both_classes(y_valid[:, a])):
            continue
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        clf.fit(x_train[:, k], y_train[:, a])
        scores[:, a] = clf.decision_function(x_valid[:, k])
    return _summary(scores, y_valid) | {"kind": "linear", "c": c}


INTENSITY_STATISTICS: tuple[str, ...] = ("mean", "std", "p1", "p99", "voxels")


def anatomy_statistics(image: np.ndarray, anatomy_map: np.ndarray, k: int) -> list[float]:
    """:data:`INTENSITY_STATISTICS` of ``image`` inside anatomy ``k`` (1..K); zeros if absent."""
    values = image[anatomy_map == k]
    if values.size == 0:
        return [0.0] * len(INTENSITY_STATISTICS)
    p1, p99 = np.percentile(values, [1, 99])
    return [float(values.mean()), float(values.std()), float(p1), float(p99), float(values.size)]


def intensity_probe(datasets: Sequence[Any]) -> dict[str, Any]:
    """Per label, the best single intensity statistic of its anatomy, scored on ``datasets``.

    ``datasets`` are CT-report datasets (items with ``image``, ``anatomy``, ``labels``). The AUC
    of a statistic is taken in its better direction (``max(auc, 1 - auc)``) and the best statistic
    is picked on the scored volumes themselves: an optimistic, label-aware bound, not a model.
    """
    features, labels = [], []
    for dataset in datasets:
        for i in range(len(dataset)):
            item = dataset[i]
            image = np.asarray(item["image"])[0]
            amap = np.asarray(item["anatomy"])
            features.append(
                [anatomy_statistics(image, amap, k) for k in range(1, len(ANATOMY_NAMES) + 1)]
            )
            labels.append(np.asarray(item["labels"]))
    x, y = np.asarray(features), np.asarray(labels) > 0.5  # (N,K,S), (N,A)
    best, chosen = {}, {}
    for a, name in enumerate(ALL_LABELS):
        if not both_classes(y[:, a]):
            continue
        k = LABEL_ANATOMY[a]
        aucs = [auc(x[:, k, j], y[:, a]) for j in range(len(INTENSITY_STATISTICS))]
        aucs = [max(v, 1.0 - v) for v in aucs]
        j = int(np.argmax(aucs))
        best[name], chosen[name] = aucs[j], INTENSITY_STATISTICS[j]
    return {
        "macro_auc": float(np.mean(list(best.values()))) if best else math.nan,
        "n_labels": len(best),
        "n_volumes": int(len(y)),
        "auc": best,
        "statistic": chosen,
        "kind": "intensity",
    }


class SupervisedProbe(nn.Module):
    """The model's image tower (vision encoder + its mask pooling) + one logit per label from its
    anatomy's pooled features."""

    def __init__(self, model: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = model or ModelConfig()
        if int(LABEL_ANATOMY.max()) >= cfg.num_anatomies:
            raise ValueError(
                f"the labels need all {len(ANATOMY_NAMES)} anatomies, got {cfg.num_anatomies}"
            )
        self.vision = build_vision_encoder(cfg.vision, **cfg.vision_kwargs)
        self.num_anatomies, self.min_coverage = cfg.num_anatomies, cfg.min_coverage
        channels = int(self.vision.out_channels)
        self.attention_pool = (
            AttentionMaskPool(
                channels, cfg.num_anatomies, cfg.attention_heads, min_coverage=cfg.min_coverage
            )
            if cfg.pooling == "attention"
            else None
        )
        self.weight = nn.Parameter(torch.empty(len(ALL_LABELS), channels))
        self.bias = nn.Parameter(torch.zeros(len(ALL_LABELS)))
        # initialised as nn.Linear's weight: a zero head would pass the encoder no gradient
        # until the head itself had grown, a handicap the contrastive heads do not have
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.register_buffer("label_anatomy", torch.as_tensor(LABEL_ANATOMY), persistent=False)

    def forward(self, image: torch.Tensor, anatomy: torch.Tensor) -> torch.Tensor:
        """(B,A) logits from an image batch (B,1,H,W,D) and its anatomy map (B,H,W,D)."""
        features = self.vision(image)
        if self.attention_pool is not None:
            pooled, _ = self.attention_pool(features, anatomy)
        else:
            pooled, _ = mean_mask_pool(features, anatomy, self.num_anatomies, self.min_coverage)
        per_label = pooled[:, self.label_anatomy]  # (B,A,C): each label sees its anatomy
        return (per_label * self.weight).sum(-1) + self.bias


def _arrays(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked image, anatomy map (as the model reads them) and float labels of a batch."""
    image, anatomy = image_and_anatomy(batch, torch.device("cpu"))
    return image, anatomy, torch.as_tensor(batch["labels"]).float()


def _score_supervised(probe: SupervisedProbe, dataset: Any) -> dict[str, Any]:
    """Per-label AUC of a trained supervised tower on one split."""
    probe.eval()
    scores, labels = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, collate_fn=collate)
    with torch.no_grad():
        for batch in loader:
            image, anatomy, y = _arrays(batch)
            scores.append(probe(image, anatomy))
            labels.append(y)
    return _summary(torch.cat(scores).numpy(), torch.cat(labels).numpy() > 0.5)


def _ct_rate_macro(summary: dict[str, Any]) -> float:
    """Macro AUC over the 18 CT-RATE findings a summary scores."""
    values = [summary["auc"][name] for name in CT_RATE_LABELS if name in summary["auc"]]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def supervised_probe(
    config: TrainConfig | str = "cpu-quick",
    steps: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    sites: Sequence[str] = (),
) -> dict[str, Any]:
    """Train the config's image tower on the labels (BCE) and report validation AUC per label.

    Uses the config's data, image size, vision encoder, batch size, learning rate, warmup and
    cosine schedule; ``steps`` defaults to the config's (the tutorial budget). ``sites`` (e.g.
    ``("B",)``) also score the tower, without fine-tuning, at the phantom's other hospitals:
    the label-aware bound of what transfer can lose (keys ``site_b_macro_auc``, ``site_b_auc``,
    ``site_b_minus_a`` for B).
    """
    config = resolve_config(config)
    steps = int(steps or config.steps)
    seed = config.seed if seed is None else int(seed)
    train_set, valid_set = dataset_for(config, "train"), dataset_for(config, "valid")
    if len(train_set) < config.batch_size:
        raise ValueError(
            f"the training split has {len(train_set)} volumes, fewer than one batch of "
            f"{config.batch_size}: lower batch_size"
        )
    model_cfg = config.model_config()
    torch.manual_seed(seed)
    probe = SupervisedProbe(model_cfg)
    optimizer = torch.optim.AdamW(
        probe.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, steps, config.min_lr_ratio)
    )
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
    autocast = autocast_for(config, torch.device("cpu"))  # the arithmetic the presets train with
    start, step, losses = time.perf_counter(), 0, []
    bar = progress_bar(total=steps, desc="supervised probe", disable=not progress, leave=False)
    probe.train()
    while step < steps:
        for batch in loader:
            image, anatomy, labels = _arrays(batch)
            if config.image_augment:
                image = augment_appearance(image, seed, step)
            with autocast():
                logits = probe(image, anatomy)
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad:
                nn.utils.clip_grad_norm_(probe.parameters(), config.clip_grad)
            optimizer.step()
            scheduler.step()
            losses.append(loss.detach().item())
            step += 1
            bar.update()
            if step == steps:
                break
    bar.close()
    train_seconds = time.perf_counter() - start

    result = _score_supervised(probe, valid_set)
    for site in sites:
        transfer = _score_supervised(probe, dataset_for(config, "valid", site=site))
        key = result_key(site)
        result[f"{key}_macro_auc"] = transfer["macro_auc"]
        result[f"{key}_auc"] = transfer["auc"]
        # the other sites label only the 18 CT-RATE findings: compare like with like
        result[f"{key}_minus_a"] = _ct_rate_macro(transfer) - _ct_rate_macro(result)
    return result | {
        "kind": "supervised",
        "steps": steps,
        "seed": seed,
        "image_size": config.image_size,
        "vision": model_cfg.vision,
        "first_loss": float(np.mean(losses[:10])),
        "last_loss": float(np.mean(losses[-10:])),
        "train_seconds": train_seconds,
    }
