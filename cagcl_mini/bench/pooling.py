"""The figures of ``cagcl-mini bench pooling``: mask downsampling and mask pooling speed on CPU.

For each feature size (16^3, 32^3; labels at 4x that) and anatomy count (K = 8, 32), with B = 4,
C = 128, on all cores:

- ``ratio_to_sum``: pooling time / ``features.sum()`` on the same tensor (target <= 3);
- ``speedup_vs_loop``: a per-anatomy boolean-index loop / pooling (target >= 10 at K = 32);
- ``k_scaling``: pooling time at K = 32 / at K = 8 (target <= 1.5).

Pooling is timed from weights prepared once at feature resolution (``prepare_weights``), as a
training step reuses them; preparing them (``masks_count_ms``, ``masks_onehot_ms`` for the
textbook one-hot reference, ``prepare_ms`` for the sparse bags) is reported separately. Every figure
exists twice: for channels-last features (``"auto"`` = the sparse path) and, suffixed
``_channel_first``, for ``(B,C,h,w,d)``-contiguous ones (``"auto"`` = the dense matmul).
Times are medians in milliseconds (:func:`cagcl_mini.bench.timing.median_time`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from cagcl_mini.bench.timing import median_time
from cagcl_mini.nn.pooling import (
    AttentionMaskPool,
    MaskWeights,
    downsample_labels,
    masks_to_feature_resolution,
    mean_mask_pool,
    prepare_weights,
)

LAYOUTS = ("", "_channel_first")  # key suffixes: channels-last, channel-first


def bench_labels(batch: int, size: int, num_anatomies: int, seed: int = 0) -> Tensor:
    """Organs tiling a body: Voronoi cells of K random seeds inside a centred ball, (B,S,S,S).

    Denser than a real CT (every body voxel, about half the cube, belongs to an anatomy), so the
    sparse path is timed on more work than it would see in practice.
    """
    gen = torch.Generator().manual_seed(seed)
    axis = torch.linspace(-1, 1, size)
    x, y, z = axis.view(-1, 1, 1), axis.view(1, -1, 1), axis.view(1, 1, -1)
    body = (x**2 + y**2 + z**2) <= 1.0
    labels = torch.zeros(batch, size, size, size, dtype=torch.long)
    for b in range(batch):
        seeds = (torch.rand(num_anatomies, 3, generator=gen) * 1.4 - 0.7).tolist()
        best = torch.full((size, size, size), float("inf"))
        for k, (sx, sy, sz) in enumerate(seeds, start=1):
            dist = (x - sx) ** 2 + (y - sy) ** 2 + (z - sz) ** 2
            closer = dist < best
            best = torch.where(closer, dist, best)
            labels[b].masked_fill_(closer & body, k)
    return labels


def _sig(x: float) -> float:
    """``x`` to 4 significant digits (ratios span 0.01 to 1000)."""
    return float(f"{x:.4g}")


def _ms(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    return _sig(1e3 * median_time(fn, repeats=repeats, warmup=warmup))


def _loop_pool(features: Tensor, masks: list[list[Tensor]]) -> list[Tensor]:
    """The naive baseline: one boolean-index mean per sample and anatomy, in the tensor's layout."""
    b, c = features.shape[:2]
    if features.permute(0, 2, 3, 4, 1).is_contiguous():  # channels-last: rows are tokens
        tokens = features.permute(0, 2, 3, 4, 1).reshape(b, -1, c)
        return [tokens[i][m].mean(0) for i in range(b) for m in masks[i]]
    flat = features.reshape(b, c, -1)
    return [flat[i][:, m].mean(-1) for i in range(b) for m in masks[i]]


def _bench_case(
    result: dict, size_key: str, layouts: dict[str, Tensor], labels: Tensor, k: int, repeats: int
) -> None:
    """One (feature size, K) case; fills ``result`` with ``{size_key}_k{k}_...`` figures."""
    key = f"{size_key}_k{k}"
    features = layouts[""]
    batch, channels, *shape = features.shape
    shape = tuple(shape)
    result[f"{key}_masks_count_ms"] = _ms(
        lambda: masks_to_feature_resolution(labels, shape, k), 3, 1
    )
    result[f"{key}_masks_onehot_ms"] = _ms(
        lambda: masks_to_feature_resolution(labels, shape, k, method="onehot"), 1, 0
    )
    weights = masks_to_feature_resolution(labels, shape, k)
    result[f"{key}_prepare_ms"] = _ms(lambda: prepare_weights(weights, shape, k).bags, 3, 1)
    mw: MaskWeights = prepare_weights(weights, shape, k)
    result[f"{key}_nonzero_fraction"] = _sig(mw.bags[0].numel() / mw.dense.numel())
    hard = downsample_labels(labels, shape, k).reshape(batch, -1)
    masks = [[hard[b] == j for j in range(1, k + 1)] for b in range(batch)]
    for suffix, feats in layouts.items():
        for method in ("auto", "sparse", "dense"):
            result[f"{key}_{method}_ms{suffix}"] = _ms(
                lambda f=feats, m=method: mean_mask_pool(f, mw, k, method=m), repeats
            )
        t_pool = result[f"{key}_auto_ms{suffix}"]
        result[f"{key}_loop_ms{suffix}"] = _ms(
            lambda f=feats: _loop_pool(f, masks), max(3, repeats // 5), 1
        )
        result[f"{key}_ratio_to_sum{suffix}"] = _sig(t_pool / result[f"{size_key}_sum_ms{suffix}"])
        result[f"{key}_speedup_vs_loop{suffix}"] = _sig(result[f"{key}_loop_ms{suffix}"] / t_pool)
    attention = AttentionMaskPool(channels, k)
    result[f"{key}_attention_ms"] = _ms(lambda: attention(features, mw), 1, 1)


def benchmark(
    feature_sizes: tuple[int, ...] = (16, 32),
    anatomy_counts: tuple[int, ...] = (8, 32),
    batch: int = 4,
    channels: int = 128,
    upsample: int = 4,
    repeats: int = 15,
) -> dict:
    """Run every case (module doc) and add the ``targets_met_*`` verdicts; returns a flat dict."""
    threads = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores or threads)
    result: dict = {"batch": batch, "channels": channels, "threads": torch.get_num_threads()}
    gen = torch.Generator().manual_seed(0)
    try:
        with torch.no_grad():
            for s in feature_sizes:
                features = torch.randn(batch, channels, s, s, s, generator=gen)
                layouts = dict(
                    zip(
                        LAYOUTS,
                        (features.contiguous(memory_format=torch.channels_last_3d), features),
                        strict=True,
                    )
                )
                for suffix, feats in layouts.items():
                    result[f"f{s}_sum_ms{suffix}"] = _ms(feats.sum, repeats)
                for k in anatomy_counts:
                    labels = bench_labels(batch, s * upsample, k, seed=s * 1000 + k)
                    _bench_case(result, f"f{s}", layouts, labels, k, repeats)
                lo, hi = min(anatomy_counts), max(anatomy_counts)
                for suffix in LAYOUTS:
                    result[f"f{s}_k_scaling{suffix}"] = _sig(
                        result[f"f{s}_k{hi}_auto_ms{suffix}"]
                        / result[f"f{s}_k{lo}_auto_ms{suffix}"]
                    )
    finally:
        torch.set_num_threads(threads)
    for suffix in LAYOUTS:
        ratios = [v for key, v in result.items() if key.endswith(f"_ratio_to_sum{suffix}")]
        speedups = [
            result[f"f{s}_k{max(anatomy_counts)}_speedup_vs_loop{suffix}"] for s in feature_sizes
        ]
        scaling = [result[f"f{s}_k_scaling{suffix}"] for s in feature_sizes]
        ok = max(ratios) <= 3.0 and min(speedups) >= 10.0
        if len(anatomy_counts) > 1:
            ok = ok and max(scaling) <= 1.5
        result[f"targets_met{suffix or '_channels_last'}"] = bool(ok)
    return result
