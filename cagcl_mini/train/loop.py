"""Pretraining: :func:`fit` a config, or :func:`ensure_trained` it once per cache.

One optimiser step, in order (the loop in :func:`_fit`):

1. for each of ``grad_accum`` micro-batches: load the seeded global batch (this rank's slice) and
   take its losses with :func:`cagcl_mini.train.step.step_losses` (augment, model, gather,
   losses); stop on a non-finite term; ``backward``;
2. clip the gradient norm, AdamW step, warmup + cosine learning-rate step;
3. log a JSONL (or CSV) line; every ``checkpoint_every`` steps write a checkpoint atomically.

Gradient accumulation with contrastive losses: each micro-batch is its own contrastive problem
(its own in-batch negatives), and the gradients of the micro-batch losses are averaged. That is
not the gradient of one big batch (InfoNCE does not decompose over samples); it is what open_clip
does without its feature cache. Use more processes, not accumulation, for more negatives.

Resume: the checkpoint holds the model, optimiser, scheduler, every RNG state and the sampler's
micro-step; batches and augmentations are pure functions of (seed, step), so a resumed run
continues the loss curve of an uninterrupted one exactly (tested with a real SIGKILL).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.profiler import record_function

from cagcl_mini.data.dataset import collate
from cagcl_mini.fileio import folder_lock, refuse_in_reimported_main, remove_stale_temporaries
from cagcl_mini.nn.model import AnatomyCLIP
from cagcl_mini.nn.text_cache import save_shared_prefix_states
from cagcl_mini.progress import progress_bar
from cagcl_mini.train import checkpoint as ckpt
from cagcl_mini.train import distributed as dist_utils
from cagcl_mini.train.batches import GlobalBatchSampler
from cagcl_mini.train.config import TrainConfig, resolve_config
from cagcl_mini.train.log import MetricsLogger, read_log
from cagcl_mini.train.setup import (
    autocast_for,
    dataset_for,
    load_model,
    lr_factor,
    model_for,
    param_groups,
    pick_device,
)
from cagcl_mini.train.step import Objective, check_finite, step_losses

PREVIOUS_RUN = ".previous-run"  # where an overwritten run waits for the new one's first checkpoint


class RunExistsError(FileExistsError):
    """The run folder holds another run, and neither resume nor overwrite was asked for."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run after a step; the checkpoint of that step was written."""

    def __init__(self, step: int, checkpoint: Path | None, signum: int) -> None:
        where = f"checkpoint {checkpoint}" if checkpoint is not None else "no checkpoint"
        super().__init__(f"interrupted at step {step}; {where}")
        self.step, self.checkpoint, self.signum = step, checkpoint, signum


@dataclass
class TrainResult:
    """What a run left behind: the final checkpoint, the metrics log, the last metrics."""

    checkpoint: Path
    log: Path
    out_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    resumed_from: int | None = None


def fit(
    config: TrainConfig | str | Path,
    *,
    resume: bool = False,
    overwrite: bool = True,
    progress: bool | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train one config (preset name, YAML path or ``TrainConfig``); see the module docstring.

    ``resume=True`` continues from the newest checkpoint in the run folder (or returns at once
    when ``final.pt`` of the same config exists). Without it, a folder holding another run (its
    checkpoints or log) raises :class:`RunExistsError` when ``overwrite=False`` (what
    ``cagcl-mini train`` passes unless ``--overwrite``); with ``overwrite=True`` the old run is
    moved to ``<run>/.previous-run`` (a line on stderr says so) and deleted only once the new run
    has written its first checkpoint, so a new run that fails early loses nothing.

    Checked before the dataset and the model are built: that the run folder can be written, and
    that the phantom's training split holds one batch. Stale temporary files of a run killed
    mid-write are removed at the start (under the run folder's lock). SIGINT and SIGTERM stop the
    run after the current step: its checkpoint is written, then :class:`TrainingInterrupted` (a
    ``KeyboardInterrupt``) is raised, naming the step and the file; ``resume=True`` continues.

    ``stop_after=n`` (< ``config.steps``) stops after optimiser step n as an interrupted run
    would, leaving a resumable checkpoint of step n (the schedule stays that of ``steps``);
    the result's ``checkpoint`` is that file. Under torchrun (RANK/WORLD_SIZE set) this is
    data-parallel over the processes.
    """
    refuse_in_reimported_main("cagcl_mini.train.loop.fit")
    config = resolve_config(config)
    if stop_after is not None and int(stop_after) < 1:
        raise ValueError(f"stop_after must be >= 1 optimiser step, got {stop_after}")
    config.check_runnable()
    out_dir = config.run_dir()
    created = _check_writable(out_dir)
    device = pick_device(config.device)
    info = dist_utils.init_distributed(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    show = (config.progress if progress is None else progress) and info.is_main
    deterministic = torch.are_deterministic_algorithms_enabled()
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with folder_lock(out_dir) if info.is_main else contextlib.nullcontext():
            final = ckpt.final_path(out_dir)
            if resume and final.is_file():
                state = ckpt.load_checkpoint(final)
                if TrainConfig.from_dict(state["config"]).fingerprint() == config.fingerprint():
                    log = MetricsLogger.path_for(out_dir, config.log_format)
                    return TrainResult(final, log, out_dir, state.get("metrics", {}), config.steps)
            held = None if resume or overwrite else existing_run(out_dir)
            if held is not None:
                raise RunExistsError(
                    f"{out_dir} already holds a run ({held}); pass --resume to continue it or "
                    "--overwrite to start again"
                )
            if info.is_main:
                remove_stale_temporaries(out_dir)
            return _fit(config, device, info, out_dir, resume, show, stop_after)
    except BaseException:
        if created and info.is_main:  # leave no empty run folder behind a failed start
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    finally:
        torch.use_deterministic_algorithms(deterministic)
        if info.enabled:
            dist_utils.shutdown_distributed()


def existing_run(out_dir: str | Path) -> str | None:
    """What run ``out_dir`` already holds: ``"step N checkpoint"`` (its newest), ``"a log, no
    checkpoint"``, or None for a folder a new run may use."""
    out_dir = Path(out_dir)
    final = ckpt.final_path(out_dir)
    if final.is_file():
        try:
            return f"step {int(ckpt.load_checkpoint(final)['step'])} checkpoint"
        except (ValueError, KeyError, TypeError):
            return f"an unreadable {final.name}"
    found = ckpt.list_checkpoints(out_dir)
    if found:
        return f"step {found[-1][0]} checkpoint"
    if any(MetricsLogger.path_for(out_dir, fmt).is_file() for fmt in ("jsonl", "csv")):
        return "a log, no checkpoint"
    return None


def _check_writable(out_dir: Path) -> bool:
    """Create ``out_dir`` and write a probe in it, or raise a PermissionError naming the folder.
    Whether the folder was created here."""
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir, prefix=".write-probe"):
            pass
    except OSError as exc:
        raise PermissionError(
            f"cannot write the run folder {out_dir}: {exc.strerror or exc}"
        ) from None
    return created


def _set_aside(out_dir: Path) -> Path | None:
    """Move an earlier run's files into ``out_dir/.previous-run`` (replacing an older one there);
    that folder, or None when there was nothing to move."""
    names = [p for _, p in ckpt.list_checkpoints(out_dir)]
    names += [ckpt.final_path(out_dir), out_dir / "config.yaml"]
    names += [MetricsLogger.path_for(out_dir, fmt) for fmt in ("jsonl", "csv")]
    present = [p for p in names if p.is_file()]
    aside = out_dir / PREVIOUS_RUN
    if aside.is_dir() and not any(p.suffix == ".pt" for p in present):
        for path in present:  # a failed start's log beside a kept run: the kept run stays
            path.unlink()
        return aside
    if not present:
        return None
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for path in present:
        path.replace(aside / path.name)
    print(
        f"cagcl-mini train: note: moved the earlier run in {out_dir} to {aside}; it is deleted "
        "once this run writes its first checkpoint",
        file=sys.stderr,
    )
    return aside


def _drop(aside: Path | None) -> None:
    """Delete the earlier run set aside by :func:`_set_aside` (this run has a checkpoint now)."""
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


class _StopSignals:
    """Turn the first SIGINT / SIGTERM into a request to stop after the current step (the
    handlers go back to the previous ones at once, so a second signal acts as usual)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        self.restore()

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc: Any) -> None:
        self.restore()


def _fit(config, device, info, out_dir, resume, show, stop_after=None) -> TrainResult:
    accum, steps = config.grad_accum, config.steps
    stop = steps if stop_after is None else min(steps, int(stop_after))

    dataset = dataset_for(config, "train", info=info)
    if len(dataset) < config.batch_size:
        raise ValueError(
            f"the train split of {dataset.dataset_dir} holds {len(dataset)} volumes, fewer than one "
            f"batch (batch_size {config.batch_size})"
        )
    objective = Objective.of(config, dataset)
    model = model_for(config, for_training=True).to(device)
    if info.enabled and device.type == "cuda":  # batch-norm statistics of the global batch
        # (PyTorch's SyncBatchNorm is CUDA-only: on CPU each process normalises its own slice)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.AdamW(param_groups(model, config), betas=(0.9, 0.98), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, steps, config.min_lr_ratio)
    )
    start, resumed_from, aside = 0, None, None
    latest = ckpt.latest_checkpoint(out_dir) if resume else None
    if latest is not None:
        start = resumed_from = _restore(latest, config, model, optimizer, scheduler)
    elif info.is_main:
        aside = _set_aside(out_dir)
    if info.is_main:
        config.save_yaml(out_dir / "config.yaml")
    logger = MetricsLogger(out_dir, config.log_format, truncate_after=start, enabled=info.is_main)
    dist_utils.barrier(info)

    ddp = model
    if info.enabled:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    sampler = GlobalBatchSampler(
        len(dataset), config.batch_size, config.seed, start * accum, steps * accum, info
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=config.num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed + start),
    )
    batches = iter(loader)
    autocast = autocast_for(config, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    metrics: dict[str, Any] = {}
    bar = progress_bar(
        total=steps, initial=start, disable=not show, desc=f"train {config.loss_tag()}"
    )
    t_start = time.perf_counter()
    with _StopSignals() as signals:
        for s in range(start, stop):
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            for a in range(accum):
                micro = s * accum + a
                with record_function("data"):
                    batch = next(batches)
                sync = a == accum - 1 or not info.enabled
                with contextlib.nullcontext() if sync else ddp.no_sync():
                    losses = step_losses(
                        ddp, batch, objective, micro_step=micro, first_index=sampler.slice.start,
                        info=info, autocast=autocast,
                    )  # fmt: skip
                    check_finite(losses, s + 1, batch.get("id"))
                    with record_function("backward"):
                        (losses["total"] / accum).backward()
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) / accum
            with record_function("optimizer"):
                # clip_grad None: max_norm inf only measures the norm
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.clip_grad or math.inf)
                lr = _group_lr(optimizer, "main")
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            seconds = time.perf_counter() - t0
            metrics = {
                "step": s + 1,
                "epoch": sampler.position((s + 1) * accum - 1)[0],
                "lr": lr,
                "text_lr": _group_lr(optimizer, "text"),
                "loss": sums.pop("total"),
                **sums,
                "grad_norm": float(grad_norm),
                "temperature": float(1.0 / model.scale().detach()),
                "seconds": seconds,
                "volumes_per_s": config.batch_size * accum / seconds,
                "elapsed": time.perf_counter() - t_start,
            }
            if (s + 1) % config.log_every == 0 or s + 1 == steps:
                logger.write(metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            periodic = config.checkpoint_every and (s + 1) % config.checkpoint_every == 0
            if (periodic or s + 1 == stop) and s + 1 < steps:
                if info.is_main:
                    _save_periodic(
                        out_dir, config, model, optimizer, scheduler, sampler, s + 1, metrics
                    )
                dist_utils.barrier(info)
            if signals.signum is not None and s + 1 < stop:
                if info.is_main and not ckpt.step_path(out_dir, s + 1).exists():
                    _save_periodic(
                        out_dir, config, model, optimizer, scheduler, sampler, s + 1, metrics
                    )
                dist_utils.barrier(info)
                bar.close()
                logger.close()
                _drop(aside)
                raise TrainingInterrupted(s + 1, ckpt.step_path(out_dir, s + 1), signals.signum)
            if aside is not None and (s + 1 < steps and (periodic or s + 1 == stop)):
                aside = _drop(aside)
    bar.close()
    logger.close()
    if info.is_main:
        save_shared_prefix_states()  # the descriptions' frozen text states, for the next process
    if stop < steps:  # stopped early on purpose: the step checkpoint is the result
        done = max(stop, start)
        return TrainResult(
            ckpt.step_path(out_dir, done), logger.path, out_dir, metrics, done, resumed_from
        )
    final = ckpt.final_path(out_dir)
    if info.is_main:
        ckpt.save_checkpoint(
            final,
            {
                "step": steps,
                "config": config.to_dict(),
                "model": model.checkpoint_state_dict(),
                "metrics": metrics,
            },
        )
        _drop(aside)
    dist_utils.barrier(info)
    return TrainResult(final, logger.path, out_dir, metrics, steps, resumed_from)


def _restore(path: Path, config: TrainConfig, model, optimizer, scheduler) -> int:
    """Load a periodic checkpoint into the run's objects; returns the steps it had done."""
    state = ckpt.load_checkpoint(path)
    stored = TrainConfig.from_dict(state["config"], source=str(path))
    if stored.fingerprint() != config.fingerprint():
        a, b = stored.to_dict(), config.to_dict()
        diff = sorted(k for k in a if a[k] != b[k])
        raise ValueError(f"cannot resume from {path}: it was written by another config ({diff})")
    model.load_checkpoint_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ckpt.set_rng_state(state["rng"])
    return int(state["step"])


def _group_lr(optimizer: torch.optim.Optimizer, prefix: str) -> float | None:
    """Current learning rate of the first param group whose name starts with ``prefix``."""
    for group in optimizer.param_groups:
        if group.get("name", "").startswith(prefix):
            return float(group["lr"])
    return None


def _save_periodic(out_dir, config, model, optimizer, scheduler, sampler, done, metrics) -> None:
    ckpt.save_checkpoint(
        ckpt.step_path(out_dir, done),
        {
            "step": done,
            "config": config.to_dict(),
            "model": model.checkpoint_state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": ckpt.rng_state(),
            "sampler": sampler.state_at(done * config.grad_accum),
            "metrics": metrics,
        },
    )
    ckpt.prune_checkpoints(out_dir, config.keep_checkpoints)


# ----------------------------------------------------------------------------- cached runs
def ensure_trained(
    spec: TrainConfig | str | Path = "cpu-quick", *, progress: bool | None = None, **overrides: Any
) -> Path:
    """The final checkpoint of a config, training it only when no matching one is cached.

    ``spec`` is a preset name, a YAML path or a ``TrainConfig``; ``overrides`` change fields
    (e.g. ``loss_preset="fvlm"``). The run folder is named by the config's fingerprint, so each
    distinct config is trained once per cache (``$CAGCL_MINI_HOME/checkpoints``); an interrupted
    run resumes from its last checkpoint.
    """
    refuse_in_reimported_main("cagcl_mini.train.loop.ensure_trained")
    config = resolve_config(spec)
    if overrides:
        config = config.replace(**overrides)
    final = ckpt.final_path(config.run_dir())
    if final.is_file():
        try:
            state = ckpt.load_checkpoint(final)
            if TrainConfig.from_dict(state["config"]).fingerprint() == config.fingerprint():
                return final
        except (ValueError, KeyError):
            pass  # unreadable or foreign: train again
    return fit(config, resume=True, progress=progress).checkpoint


def trained_model(
    spec: TrainConfig | str | Path = "cpu-quick", *, progress: bool | None = None, **overrides: Any
) -> AnatomyCLIP:
    """The trained model of a config (eval mode, CPU), training it first if it is not cached."""
    return load_model(ensure_trained(spec, progress=progress, **overrides))[0]


def training_log(path: str | Path) -> list[dict[str, Any]]:
    """The logged metrics rows of a run, given its folder or any checkpoint in it."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    for fmt in ("jsonl", "csv"):
        log = MetricsLogger.path_for(folder, fmt)
        if log.is_file():
            return read_log(log)
    raise FileNotFoundError(f"no log.jsonl or log.csv in {folder}")
