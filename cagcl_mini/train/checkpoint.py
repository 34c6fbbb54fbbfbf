"""Checkpoints: atomic writes, ``weights_only=True`` loading, random-number-generator states.

A checkpoint is a dict of tensors and plain containers only, so ``torch.load(path,
weights_only=True)`` reads it without trusting pickled code::

    format      "cagcl-mini/1"
    step        optimiser steps done
    config      TrainConfig.to_dict()
    model       AnatomyCLIP.checkpoint_state_dict(): the frozen pretrained text weights are left out
                (they reload from the package), trainable text layers are kept
    optimizer   AdamW state_dict        (periodic checkpoints only)
    scheduler   LambdaLR state_dict     (periodic checkpoints only)
    rng         torch / cuda / numpy / python generator states as tensors (periodic only)
    sampler     {"micro_step", "epoch", "position"} of the next batch (periodic only)
    metrics     the last logged metrics

Periodic checkpoints are ``step_0000040.pt`` (the newest ``keep`` are kept); the end of a run
writes ``final.pt`` (model, config, metrics). Every file is written to a temp name in the same
folder and renamed, so a run killed mid-write never leaves a truncated checkpoint.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cagcl_mini.fileio import atomic_path

FORMAT = "cagcl-mini/1"
FINAL_NAME = "final.pt"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def step_path(out_dir: str | Path, step: int) -> Path:
    """Path of the periodic checkpoint after ``step`` optimiser steps."""
    return Path(out_dir) / f"step_{int(step):07d}.pt"


def final_path(out_dir: str | Path) -> Path:
    """Path of the end-of-run checkpoint."""
    return Path(out_dir) / FINAL_NAME


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Periodic checkpoints in ``out_dir`` as (step, path), oldest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for path in out_dir.iterdir():
        match = _STEP_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The periodic checkpoint with the most steps, or None."""
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temp file in the same folder, then ``os.replace`` (atomic)."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; errors name the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle / zip errors: a damaged or foreign file
        raise ValueError(f"{path} is not a readable cagcl-mini checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: expected a checkpoint of format {FORMAT!r}, got {got!r}")
    return state


def prune_checkpoints(out_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest periodic checkpoints."""
    for _, path in list_checkpoints(out_dir)[: -int(keep)] if keep > 0 else []:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """Global torch, CUDA, numpy and python RNG states as tensors and ints (weights_only-safe)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["gauss"]),
        )
    )
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
