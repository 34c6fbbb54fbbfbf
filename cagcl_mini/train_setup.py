"""The building blocks of a training run: device, learning-rate schedule, optimiser groups,
model and dataset construction, and loading a trained model back for evaluation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from cagcl_mini import checkpoint as ckpt
from cagcl_mini import distributed as dist_utils
from cagcl_mini.data import CTReportDataset
from cagcl_mini.model import AnatomyCLIP
from cagcl_mini.text_cache import attach_prefix_cache
from cagcl_mini.train_config import TrainConfig


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA if available, then Apple MPS, then CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warmup ``(step + 1) / warmup`` over the first ``warmup`` steps, then a cosine from 1
    down to ``min_ratio`` at the last step.
    """
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup - 1)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: AnatomyCLIP, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: text-transformer layers at ``text_lr``, the rest at ``lr``; no weight decay
    on biases, norms and the temperature / bias scalars."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_text = name.startswith("text_encoder.")
        decay = p.ndim >= 2
        groups.setdefault((is_text, decay), []).append(p)
    out = []
    for (is_text, decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": config.text_lr if is_text else config.lr,
                "weight_decay": config.weight_decay if decay else 0.0,
                "name": ("text" if is_text else "main") + ("" if decay else "_no_decay"),
            }
        )
    return out


def build_model(config: TrainConfig, for_training: bool = True) -> AnatomyCLIP:
    """The model of ``config``, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    model = AnatomyCLIP(config.model_config())
    if for_training:
        if config.text_prefix_cache:
            attach_prefix_cache(model.text_encoder)
        if not any(term.startswith("sigmoid") for term in config.loss_weights()):
            model.logit_bias.requires_grad_(False)  # unused: keep it out of the optimiser / DDP
    return model


def load_model(
    checkpoint_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[AnatomyCLIP, TrainConfig]:
    """Rebuild the trained model of a checkpoint (``weights_only=True``), in eval mode."""
    state = ckpt.load_checkpoint(checkpoint_path)
    config = TrainConfig.from_dict(state["config"], source=str(checkpoint_path))
    model = build_model(config, for_training=False)
    model.load_checkpoint_state_dict(state["model"])
    return model.to(device).eval(), config


def training_dataset(config: TrainConfig, info: dist_utils.DistInfo) -> CTReportDataset:
    """The training split; rank 0 builds the embedded dataset first when none is given."""
    root = config.data_root
    if root is None:
        from cagcl_mini.phantom import ensure_dataset

        kwargs = dict(
            n_train=config.n_train,
            n_valid=config.n_valid,
            size=config.data_size,
            seed=config.data_seed,
        )
        if info.is_main:
            root = ensure_dataset(None, **kwargs)
        dist_utils.barrier(info)
        if not info.is_main:
            root = ensure_dataset(None, **kwargs)
    return CTReportDataset(root, "train", size=config.image_size, cache=config.data_cache)
