"""Which model and which data a config means, answered once: :func:`model_for`,
:func:`dataset_for` and :func:`load_model`, used by the trainer, the evaluate command, the claims,
the probes and the notebooks alike; plus the device, the learning-rate schedule and the optimiser
groups of a run."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch

from cagcl_mini.data.dataset import CTReportDataset
from cagcl_mini.layout import check_split
from cagcl_mini.nn.model import AnatomyCLIP
from cagcl_mini.nn.text_cache import attach_prefix_cache
from cagcl_mini.phantom.build import ensure_dataset
from cagcl_mini.train import checkpoint as ckpt
from cagcl_mini.train import distributed as dist_utils
from cagcl_mini.train.config import TrainConfig, resolve_config


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA if available, then Apple MPS, then CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def native_cpu_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX-512 BF16 or AMX, as oneDNN reports); elsewhere
    CPU bf16 is emulated and slower than float32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_for(config: TrainConfig, device: torch.device):
    """A factory of the forward's autocast context: bf16 on CUDA when ``config.amp``, on a CPU
    with native bf16 when ``config.cpu_bf16``, else a no-op."""
    if (device.type == "cuda" and config.amp) or (
        device.type == "cpu" and config.cpu_bf16 and native_cpu_bf16()
    ):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


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


def model_for(
    config: TrainConfig | str | Path, *, seed: int | None = None, for_training: bool = False
) -> AnatomyCLIP:
    """The model of ``config`` initialised from ``seed`` (default ``config.seed``).

    With the frozen-prefix text cache attached (``config.text_prefix_cache``; shared by every
    model of the process, :mod:`cagcl_mini.nn.text_cache`). In eval mode, unless
    ``for_training``: then in train mode, with the SigLIP bias frozen when no sigmoid term uses
    it (so the optimiser and DDP never see an unused parameter).
    """
    config = resolve_config(config)
    torch.manual_seed(config.seed if seed is None else int(seed))
    model = AnatomyCLIP(config.model_config())
    if config.text_prefix_cache:
        attach_prefix_cache(model.text_encoder)
    if not for_training:
        return model.eval()
    if not any(term.startswith("sigmoid") for term in config.loss_weights()):
        model.logit_bias.requires_grad_(False)
    return model.train()


def dataset_for(
    config: TrainConfig | str | Path,
    split: str = "train",
    *,
    root: str | Path | None = None,
    image_size: int | None = None,
    site: str = "A",
    info: dist_utils.DistInfo | None = None,
    progress: bool = False,
) -> CTReportDataset:
    """The ``split`` of a config's data, at its image size and cache.

    The data is ``root``, else ``config.data_root``, else the embedded phantom dataset of
    ``config.phantom_spec()``, built on demand (under torchrun rank 0 builds it while the others
    wait at a barrier). ``site="B"`` asks for the phantom's second hospital instead, as
    :meth:`~cagcl_mini.phantom.plan.PhantomSpec.at_site` and ``make-data --site B`` write it (the
    same difficulty and validation split, few training volumes: transfer is scored, not trained),
    in the spec's own cache folder (:func:`cagcl_mini.phantom.build.default_root`).
    """
    config = resolve_config(config)
    check_split(split)
    root = root if root is not None else config.data_root
    if site != "A" and root is not None:
        raise ValueError(f"site {site!r} is a phantom dataset; a config with data_root has none")
    if root is None:
        info = info or dist_utils.DistInfo()
        spec = config.phantom_spec().at_site(site)
        if info.is_main:
            root = ensure_dataset(None, spec, progress=progress)
        dist_utils.barrier(info)
        if not info.is_main:
            root = ensure_dataset(None, spec, progress=False)
    size = config.image_size if image_size is None else int(image_size)
    return CTReportDataset(
        root, split, size=size, cache=config.data_cache, hu_check=config.hu_check
    )


def load_model(
    checkpoint_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[AnatomyCLIP, TrainConfig]:
    """Rebuild the trained model of a checkpoint (``weights_only=True``), in eval mode.

    A checkpoint whose config disagrees with its weights (its config edited by hand, say) is a
    one-line ValueError naming the file and the first parameter whose shapes differ."""
    state = ckpt.load_checkpoint(checkpoint_path)
    config = TrainConfig.from_dict(state["config"], source=str(checkpoint_path))
    model = model_for(config)
    check_shapes(model.state_dict(), state["model"], str(checkpoint_path))
    try:
        model.load_checkpoint_state_dict(state["model"])
    except KeyError as exc:
        raise ValueError(f"{checkpoint_path}: {exc.args[0]} (was its config edited?)") from None
    return model.to(device).eval(), config


def check_shapes(expected: dict[str, Any], stored: dict[str, Any], source: str) -> None:
    """Raise a ValueError naming ``source`` and the first tensor of ``stored`` whose shape differs
    from ``expected``'s (what the config builds), with both shapes."""
    for key, value in stored.items():
        want = expected.get(key)
        if want is not None and tuple(want.shape) != tuple(value.shape):
            raise ValueError(
                f"{source}: its config does not match its weights: {key} has shape "
                f"{tuple(value.shape)} in the file but {tuple(want.shape)} in the model the config "
                "builds (was the config edited?)"
            )
