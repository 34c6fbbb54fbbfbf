"""Data-parallel training under ``torchrun``: process group, batch sharding, gathering with gradient.

Every contrastive loss here compares each embedding with the whole batch, so with N processes each
holding B/N samples, the loss must see the *global* batch or it would only have B/N negatives.
The recipe (the open_clip one, with exact gradients):

1. ``torchrun --nproc_per_node N -m cagcl_mini train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK;
   :func:`init_distributed` opens the process group (``gloo`` on CPU, ``nccl`` on CUDA).
2. The sampler draws the same global batch of ``batch_size`` indices on every rank; rank r takes the
   contiguous slice ``[r * B/N, (r+1) * B/N)``, so gathering restores the single-process order.
3. :func:`gather_loss_inputs` all-gathers the per-sample loss inputs: v, t with
   :func:`gather_with_grad`, the masks with :func:`gather_tensor` and the strings with
   :func:`gather_objects`. Every rank then computes the *same* global loss L.
4. Gradients: the backward of :class:`_GatherWithGrad` all-reduces (sums) the incoming gradient
   and keeps the rank's own slice, so rank r holds N * dL/d(its slice); parameters used directly
   by the loss (``logit_scale``, the anatomy prompts) get dL/dp on every rank. DDP then *averages*
   over the N ranks, which yields exactly the single-process gradient of L for both kinds. (The
   plain open_clip trick, "gather without gradient, put the local tensor back in", would leave
   shared parameters right but the encoder gradients N times too small, which then needs
   a loss scale of N and gets ``logit_scale`` wrong by N.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cagcl_mini.losses.objective import DIFFERENTIABLE_KEYS, PER_SAMPLE_KEYS


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size, local rank (GPU index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the environment holds a torchrun rendezvous (WORLD_SIZE and RANK)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str) -> DistInfo:
    """Open the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    if not launched_by_torchrun():
        return DistInfo()
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if world <= 1:
        return DistInfo(rank, world, local)
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def shutdown_distributed() -> None:
    """Close the process group if this process opened one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_slice(global_size: int, info: DistInfo) -> slice:
    """Rank ``info.rank``'s contiguous slice of a global batch (sizes must divide evenly)."""
    if global_size % info.world_size:
        raise ValueError(
            f"batch_size {global_size} must be divisible by the number of processes "
            f"{info.world_size}"
        )
    n = global_size // info.world_size
    return slice(info.rank * n, (info.rank + 1) * n)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0; backward sums the gradients of all ranks and keeps own slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.size = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather_with_grad(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, differentiable (see module docstring)."""
    if not info.enabled:
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def gather_tensor(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 (no gradient; masks, labels)."""
    if not info.enabled:
        return tensor
    src = tensor.contiguous()
    # gloo has no bool all_gather: send as uint8
    cast = src.dtype == torch.bool
    if cast:
        src = src.to(torch.uint8)
    parts = [torch.empty_like(src) for _ in range(info.world_size)]
    dist.all_gather(parts, src)
    out = torch.cat(parts)
    return out.bool() if cast else out


def gather_objects(items: list[Any], info: DistInfo) -> list[Any]:
    """Concatenate every rank's list (strings, ids) in rank order."""
    if not info.enabled:
        return list(items)
    parts: list[Any] = [None] * info.world_size
    dist.all_gather_object(parts, list(items))
    return [x for part in parts for x in part]


def gather_loss_inputs(inputs: dict[str, Any], info: DistInfo) -> dict[str, Any]:
    """The loss inputs of the global batch: per-sample keys (:data:`PER_SAMPLE_KEYS` of the
    objective) gathered across processes, embeddings as float32 and with their gradient; shared
    inputs (temperature, prompts, dictionary) unchanged but embeddings cast to float32."""
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.ndim > 0:
            value = value.float()  # bf16 autocast outputs; the losses promote, the gather must not
        if value is None or key not in PER_SAMPLE_KEYS:
            out[key] = value
        elif key in DIFFERENTIABLE_KEYS:
            out[key] = gather_with_grad(value, info)
        elif isinstance(value, torch.Tensor):
            out[key] = gather_tensor(value, info)
        else:
            out[key] = gather_objects(list(value), info)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (a path, a decision)."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


__all__ = [
    "DistInfo",
    "barrier",
    "broadcast_object",
    "gather_loss_inputs",
    "gather_objects",
    "gather_tensor",
    "gather_with_grad",
    "init_distributed",
    "launched_by_torchrun",
    "local_slice",
    "shutdown_distributed",
]
