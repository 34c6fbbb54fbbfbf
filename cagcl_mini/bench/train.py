"""``cagcl-mini bench train``: training throughput, peak memory, and what the text caches buy.

- ``volumes_per_s``: the real ``fit`` loop of ``cpu-quick`` (data loading, augmentation, both
  encoders, losses, backward, AdamW) over ``steps`` timed steps after ``warmup`` steps; the median
  over ``repeats`` runs.
- ``bf16_speedup``: on a CPU with native bf16 (AMX / AVX-512 BF16, as oneDNN reports) and
  ``cpu_bf16`` on, the same ``fit`` steps in float32 against bf16 autocast of the forward, ratio of
  the median step times; ``None`` where the step runs in float32 anyway (``autocast`` says which).
- ``peak_rss_mb``: the process's peak resident memory (``getrusage``), after everything above.
- ``text_cache_speedup``: with a *frozen* text encoder, one training step (forward, losses,
  backward, optimiser) re-encoding every description vs reading the pooled-output cache, in steady
  state (the cache holds the split's descriptions, as after one epoch); median step times, ratio
  re-encode / cached.
- ``prefix_cache_speedup``: the same with the ``cpu-quick`` text encoder (its trainable last
  layers), full encoder vs the frozen-prefix cache of :mod:`cagcl_mini.nn.text_cache`.
- ``cls_absorb_speedup``: with the prefix cache, the CLS-only last layer projecting every
  cached token's key and value (and the descriptions in length buckets, to pad less) vs the
  query absorbed into the projections (one padded batch: a padded token costs next to nothing).
- ``length_buckets_speedup``: with the prefix cache, one padded batch of a step's descriptions
  vs the cache's length buckets (a short sentence padded to the longest lung description). With
  the absorbed CLS query the step's live layer runs as one padded batch either way (about 1x);
  the buckets pay in the frozen bottom (below) and in trainable layers below the last.
- ``prefix_fill_speedup``: what a first embedding (or a first epoch) pays, with an empty prefix
  store: encoding the descriptions of ``fill_volumes`` validation volumes, one batch of volumes per
  call as ``embed_dataset`` does, through the frozen bottom as one padded batch per call vs in
  length groups; seconds and their ratio.

Both time the trainer's own step (:func:`cagcl_mini.train.step.step_losses`), so the benchmark
cannot drift from what ``fit`` computes.
"""

from __future__ import annotations

import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from cagcl_mini.bench.timing import median_time
from cagcl_mini.data.dataset import collate
from cagcl_mini.nn.text_cache import clear_shared_prefix_states, memory_only
from cagcl_mini.train.batches import GlobalBatchSampler
from cagcl_mini.train.config import TrainConfig, preset
from cagcl_mini.train.log import read_log
from cagcl_mini.train.loop import fit
from cagcl_mini.train.setup import (
    autocast_for,
    dataset_for,
    model_for,
    native_cpu_bf16,
    param_groups,
)
from cagcl_mini.train.step import Objective, step_losses


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports KB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def throughput(config: TrainConfig, steps: int, warmup: int) -> dict[str, float]:
    """Run ``fit`` for ``warmup + steps`` steps; volumes/s and seconds/step of the timed steps."""
    result = fit(config.replace(steps=warmup + steps), progress=False)
    rows = [r for r in read_log(result.log) if r["step"] > warmup]
    seconds = sum(r["seconds"] for r in rows)
    volumes = config.batch_size * config.grad_accum * len(rows)
    return {"volumes_per_s": volumes / seconds, "step_seconds": seconds / len(rows)}


# The record_function labels of a step (train/loop.py, train/step.py, nn/model.py): the top-level
# phases sum to the step; vision / pooling / text are the parts of "forward".
PHASES: tuple[str, ...] = ("data", "augment", "forward", "losses", "backward", "optimizer")
FORWARD_PARTS: tuple[str, ...] = ("vision", "pooling", "text")


def profile_step(config: TrainConfig, steps: int = 10, warmup: int | None = None) -> dict[str, Any]:
    """Where a steady-state training step's time goes, and how many operations it does.

    The text caches fill during the first epoch, so the phases are measured on ``steps`` steps
    after ``warmup`` steps (default: one epoch): ``fit`` runs under ``torch.profiler`` for
    ``warmup`` and for ``warmup + steps`` steps (the same seeded run twice) and the difference of
    the two gives each labelled phase's CPU milliseconds per step, and what no label covers
    (``other_ms``: logging, progress, Python between the phases). The FLOPs of one forward +
    backward (``torch.utils.flop_counter``: convolutions and matrix products) give the GFLOP/s
    the step's wall time achieves; the vision encoder's forward + backward is also timed alone.
    """
    config = config.replace(checkpoint_every=0, progress=False)
    if warmup is None:
        warmup = max(1, config.n_train // config.batch_size)
    labels = PHASES + FORWARD_PARTS
    totals, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="cagcl-profile-") as tmp:
        # an unprofiled epoch first fills the data set's disk cache, as a finished run leaves it
        fit(config.replace(steps=warmup, out_dir=str(Path(tmp) / "cache")), progress=False)
        for n in (warmup, warmup + steps):
            run = config.replace(steps=n, warmup_steps=min(config.warmup_steps, n))
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                result = fit(run.replace(out_dir=str(Path(tmp) / f"run{n}")), progress=False)
            totals[n] = {e.key: e.cpu_time_total / 1e3 for e in prof.key_averages()}
            rows = read_log(result.log)
    step_ms = 1e3 * statistics.fmean(r["seconds"] for r in rows[warmup:])
    phases = {
        name: round(
            (totals[warmup + steps].get(name, 0.0) - totals[warmup].get(name, 0.0)) / steps, 2
        )
        for name in labels
    }
    work = step_work(config)
    return {
        "step_ms": round(step_ms, 2),
        "phase_ms": phases,
        "other_ms": round(step_ms - sum(phases[p] for p in PHASES), 2),
        "gflop_per_step": round(work["flops"] / 1e9, 3),
        "gflop_per_s": round(work["flops"] / 1e9 / (step_ms / 1e3), 1),
        "vision_fwd_bwd_ms": round(1e3 * work["vision_seconds"], 2),
        "vision_gflop": round(work["vision_flops"] / 1e9, 3),
        "vision_gflop_per_s": round(work["vision_flops"] / 1e9 / work["vision_seconds"], 1),
        "profiled_steps": steps,
        "warmup_steps": warmup,
    }


def step_work(config: TrainConfig, repeats: int = 5) -> dict[str, float]:
    """FLOPs of one forward + backward of ``config``'s training step, and of its vision encoder
    alone (``torch.utils.flop_counter.FlopCounterMode``), with the encoder's median seconds under
    the autocast the step trains with."""
    dataset = dataset_for(config, "train")
    model = model_for(config, for_training=True)
    sampler = GlobalBatchSampler(len(dataset), config.batch_size, config.seed)
    batch = collate([dataset[i] for i in sampler.global_batch(0)])
    objective = Objective.of(config, dataset)
    step_losses(model, batch, objective)  # fills the text caches, as in steady state
    with FlopCounterMode(display=False) as counter:
        step_losses(model, batch, objective)["total"].backward()
    flops = counter.get_total_flops()

    autocast = autocast_for(config, torch.device("cpu"))

    def vision_step() -> None:
        with autocast():
            features = model.image_features(batch["image"])
        features.float().sum().backward()

    with FlopCounterMode(display=False) as counter:
        vision_step()
    seconds = median_time(vision_step, repeats=repeats, warmup=1)
    return {
        "flops": float(flops),
        "vision_flops": float(counter.get_total_flops()),
        "vision_seconds": seconds,
    }


def step_times(
    config: TrainConfig,
    cached: bool,
    steps: int,
    length_buckets: bool = True,
    absorb_query: bool = True,
) -> list[float]:
    """Seconds of ``steps`` training steps of ``config`` with the text caches on or off.

    With the caches on, every description of the training split is encoded once first (what the
    first epoch does), so the timed steps show the steady state of later epochs. Without
    ``length_buckets`` the prefix cache pads every call's strings to its longest (the naive way);
    without ``absorb_query`` its CLS-only layer projects every token (``cls_only_layer``).
    """
    dataset = dataset_for(config, "train")
    model = model_for(config.replace(text_prefix_cache=cached), for_training=True)
    model.set_text_cache(cached)
    prefix = getattr(model.text_encoder, "prefix_cache", None)
    if prefix is not None and not length_buckets:
        prefix.bucket_growth = None
    if prefix is not None:
        prefix.absorb_query = absorb_query
    if cached:
        with torch.no_grad():
            every = {t for i in range(len(dataset)) for t in dataset.anatomy_texts(i)[0] if t}
            model.encode_text(sorted(every))
    objective = Objective.of(config, dataset)
    optimizer = torch.optim.AdamW(param_groups(model, config))
    sampler = GlobalBatchSampler(len(dataset), config.batch_size, config.seed)
    times = []
    for m in range(steps + 1):  # the first step is a warm-up (allocations, lazy init)
        batch = collate([dataset[i] for i in sampler.global_batch(m)])
        start = time.perf_counter()
        step_losses(model, batch, objective, micro_step=m)["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if m > 0:
            times.append(time.perf_counter() - start)
    return times


def prefix_fill_seconds(config: TrainConfig, length_buckets: bool, volumes: int = 96) -> float:
    """Seconds to encode the descriptions of ``volumes`` validation volumes (calls of one batch
    of volumes each) with an empty prefix store: the frozen bottom runs for every new string."""
    clear_shared_prefix_states()
    dataset = dataset_for(config, "valid")
    model = model_for(config)
    prefix = getattr(model.text_encoder, "prefix_cache", None)
    if prefix is None:
        raise ValueError("prefix_fill_seconds needs the frozen-prefix cache (text_prefix_cache)")
    if not length_buckets:
        prefix.bucket_growth = None
    n = min(volumes, len(dataset))
    calls = [
        [t for i in range(k, min(k + config.batch_size, n)) for t in dataset.anatomy_texts(i)[0]]
        for k in range(0, n, config.batch_size)
    ]
    start = time.perf_counter()
    with torch.no_grad():
        for texts in calls:
            model.encode_text([t for t in texts if t])
    seconds = time.perf_counter() - start
    clear_shared_prefix_states()
    return seconds


def run_train_bench(
    repeats: int = 3,
    steps: int = 30,
    warmup: int = 5,
    out: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """All figures of ``cagcl-mini bench train`` (see the module docstring); ``overrides``
    (``key=value``) change the ``cpu-quick`` config first. The text prefix states stay in memory
    (:func:`~cagcl_mini.nn.text_cache.memory_only`): the fills are timed cold, as before."""
    with memory_only():
        return _run_train_bench(repeats, steps, warmup, out, overrides)


def _run_train_bench(repeats, steps, warmup, out, overrides) -> dict[str, Any]:
    scratch = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="cagcl-bench-train-"))
    base = preset("cpu-quick", progress=False, checkpoint_every=0)
    if overrides:
        base = base.with_overrides(list(overrides))
    runs = [
        throughput(base.replace(out_dir=str(scratch / f"throughput{r}")), steps, warmup)
        for r in range(max(1, repeats))
    ]
    bf16 = base.cpu_bf16 and native_cpu_bf16()
    fp32_runs = [
        throughput(base.replace(cpu_bf16=False, out_dir=str(scratch / f"fp32_{r}")), steps, warmup)
        for r in range(max(1, repeats) if bf16 else 0)
    ]
    # frozen encoder, no augmentation (fvlm): the pooled-output cache vs re-encoding
    frozen = base.replace(
        loss_preset="fvlm", model={**base.model, "text_train_layers": 0}, out_dir=str(scratch / "f")
    )
    timed = 5
    frozen_on = statistics.median(step_times(frozen, True, timed))
    frozen_off = statistics.median(step_times(frozen, False, timed))
    partial = base.replace(loss_preset="fvlm", out_dir=str(scratch / "p"))
    prefix_on = statistics.median(step_times(partial, True, timed))
    prefix_off = statistics.median(step_times(partial, False, timed))
    one_pad = statistics.median(step_times(partial, True, timed, length_buckets=False))
    projected = statistics.median(step_times(partial, True, timed, absorb_query=False))
    profile = profile_step(base)  # before the fills below empty the shared prefix store
    fill_volumes = 96
    fill_grouped = prefix_fill_seconds(partial, True, fill_volumes)
    fill_one_pad = prefix_fill_seconds(partial, False, fill_volumes)
    return {
        "profile": profile,
        "volumes_per_s": statistics.median(r["volumes_per_s"] for r in runs),
        "volumes_per_s_runs": [round(r["volumes_per_s"], 3) for r in runs],
        "step_seconds": statistics.median(r["step_seconds"] for r in runs),
        "autocast": "bf16" if bf16 else "none",
        "fp32_step_seconds": (
            statistics.median(r["step_seconds"] for r in fp32_runs) if bf16 else None
        ),
        "bf16_speedup": (
            statistics.median(r["step_seconds"] for r in fp32_runs)
            / statistics.median(r["step_seconds"] for r in runs)
            if bf16
            else None
        ),
        "steps": steps,
        "warmup_steps": warmup,
        "batch_size": base.batch_size,
        "image_size": base.image_size,
        "threads": torch.get_num_threads(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "text_cache_speedup": frozen_off / frozen_on,
        "frozen_step_seconds": {"cached": frozen_on, "re_encoding": frozen_off},
        "prefix_cache_speedup": prefix_off / prefix_on,
        "partial_step_seconds": {
            "prefix_cached": prefix_on,
            "full_encoder": prefix_off,
            "prefix_cached_one_padded_batch": one_pad,
            "prefix_cached_projected_keys": projected,
        },
        "cls_absorb_speedup": projected / prefix_on,
        "length_buckets_speedup": one_pad / prefix_on,
        "prefix_fill_seconds": {"length_groups": fill_grouped, "one_padded_batch": fill_one_pad},
        "prefix_fill_speedup": fill_one_pad / fill_grouped,
        "fill_volumes": fill_volumes,
        "max_length": base.model_config().max_length,
    }
