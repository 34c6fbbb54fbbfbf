"""Test helpers for training: a tiny phantom dataset, a tiny config, running the CLI as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cagcl_mini.train_config import TrainConfig, preset

REPO = Path(__file__).resolve().parent.parent

TINY_MODEL = {
    "vision": "tiny",
    "embed_dim": 32,
    "text_pooling": "mean",
    "text_train_layers": 1,
    "max_length": 32,
}


def make_tiny_data(root: Path, n_train: int = 8) -> Path:
    """A real phantom dataset (NIfTI + CSVs) of ``n_train`` 32^3 volumes."""
    from cagcl_mini.phantom import make_dataset

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
    """``python -m cagcl_mini.train --config FILE ...`` with this interpreter."""
    return [sys.executable, "-m", "cagcl_mini.train", "--config", str(config_yaml), *extra]


def run_training(config_yaml: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
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
