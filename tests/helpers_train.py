"""Test helpers for training: a tiny phantom dataset, a tiny config, running the CLI as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from cagcl_mini.losses.terms import global_cross_anatomy_loss, local_alignment_loss
from cagcl_mini.phantom.build import make_dataset
from cagcl_mini.train.config import TrainConfig, preset
from cagcl_mini.train.distributed import DistInfo, gather_tensor, gather_with_grad

REPO = Path(__file__).resolve().parent.parent

TINY_MODEL = {
    "vision": "tiny",
    "embed_dim": 32,
    "text_pooling": "cls",
    "text_train_layers": 1,
    "max_length": 32,
}

FROZEN_MODEL = {**TINY_MODEL, "text_train_layers": 0}  # cheaper: the pooled text cache applies


def make_tiny_data(root: Path, n_train: int = 8) -> Path:
    """A real phantom dataset (NIfTI + CSVs) of ``n_train`` 32^3 volumes."""
    return Path(
        make_dataset(root, n_train=n_train, n_valid=2, size=32, seed=0, workers=1, progress=False)
    )


def tiny_config(data_root: Path, out_dir: Path | None, **changes) -> TrainConfig:
    """``cpu-quick`` shrunk to seconds: 32^3, batch 4, 4 steps, MiniLM with 1 trainable layer."""
    fields = {
        "data_root": str(data_root),
        "out_dir": None if out_dir is None else str(out_dir),
        "image_size": 32,
        "batch_size": 4,
        "steps": 4,
        "warmup_steps": 1,
        "checkpoint_every": 2,
        "data_cache": "memory",
        "progress": False,
        "deterministic": True,
        "cpu_bf16": False,  # float32 on every CPU: tests compare fit's numbers with their own
        "model": dict(TINY_MODEL),
    }
    fields.update(changes)
    return preset("cpu-quick", **fields)


def train_env() -> dict[str, str]:
    """Environment for a training subprocess: the test's home, offline, 1 thread per process."""
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        }
    )
    return env


def train_command(config_yaml: Path, *extra: str) -> list[str]:
    """``python -m cagcl_mini train --config FILE ...`` with this interpreter."""
    return [sys.executable, "-m", "cagcl_mini", "train", "--config", str(config_yaml), *extra]


def run_training(
    config_yaml: Path, *extra: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the training CLI to completion, failing with its output when it fails."""
    proc = subprocess.run(
        train_command(config_yaml, *extra),
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# ----------------------------------------------------------------------------- DDP gradients
def ddp_problem(seed: int = 0):
    """A small two-tower problem: global batch inputs and a model with a shared temperature."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, 6, generator=gen)
    y = torch.randn(8, 3, 5, generator=gen)
    present = torch.rand(8, 3, generator=gen) > 0.2
    abnormal = torch.rand(8, 3, generator=gen) > 0.5
    torch.manual_seed(seed)
    model = torch.nn.Module()
    model.image = torch.nn.Linear(6, 4)
    model.text = torch.nn.Linear(5, 4)
    model.logit_scale = torch.nn.Parameter(torch.tensor(1.5))
    model.forward = lambda a, b: (model.image(a), model.text(b))
    return model, x, y, present, abnormal


def ddp_loss(v, t, present, abnormal, logit_scale):
    v, t = F.normalize(v, dim=-1), F.normalize(t, dim=-1)
    return local_alignment_loss(v, t, present, abnormal, logit_scale) + global_cross_anatomy_loss(
        v, t, present, abnormal, logit_scale
    )


def ddp_gradient_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One rank: DDP model, local slice of the global batch, gather with gradient, backward."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        info = DistInfo(rank, world, rank)
        model, x, y, present, abnormal = ddp_problem()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        n = x.shape[0] // world
        part = slice(rank * n, (rank + 1) * n)
        v, t = ddp(x[part], y[part])
        loss = ddp_loss(
            gather_with_grad(v, info),
            gather_with_grad(t, info),
            gather_tensor(present[part], info),
            gather_tensor(abnormal[part], info),
            model.logit_scale,
        )
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        torch.save({"loss": loss.detach(), "grads": grads}, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # About one run in eight, the interpreter's own shutdown of a spawned gloo process aborted
    # ("terminate called without an active exception", SIGABRT) after the work was saved; the
    # result is on disk, so leave without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
