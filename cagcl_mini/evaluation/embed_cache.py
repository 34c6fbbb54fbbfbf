"""Embeddings kept on disk, so a later notebook or process does not run a model over a split again.

A cached split is keyed by a digest of the model's weights (every tensor of its ``state_dict``,
frozen ones too), the dataset's :meth:`~cagcl_mini.data.dataset.CTReportDataset.fingerprint`
(settings, records, file sizes and mtimes) and the batch size: retraining, another seed or an
edited volume gives another key, never a stale answer. Files live in
``$CAGCL_MINI_HOME/cache/embeddings``, are written under a temporary name and renamed into place,
and only the newest :data:`MAX_FILES` are kept. An unreadable file is recomputed (with a warning).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from cagcl_mini import paths
from cagcl_mini.fileio import atomic_path
from cagcl_mini.nn.digest import state_digest

FORMAT = 1  # bump when the stored fields change
MAX_FILES = 64
TENSOR_FIELDS = ("v", "present", "t", "labels", "abnormal")


def cache_dir() -> Path:
    """Where cached splits live (``$CAGCL_MINI_HOME/cache/embeddings``)."""
    return paths.home() / "cache" / "embeddings"


def model_fingerprint(model: Any) -> str:
    """sha256 of every tensor of ``model.state_dict()`` (names, dtypes, shapes and bytes)."""
    return state_digest(model.state_dict())


def cache_path(model: Any, dataset: Any, batch_size: int) -> Path | None:
    """The file a split's embeddings are kept in, or None when the dataset has no fingerprint."""
    data_key = dataset.fingerprint() if hasattr(dataset, "fingerprint") else None
    if data_key is None:
        return None
    key = json.dumps([FORMAT, model_fingerprint(model), data_key, int(batch_size)])
    split = str(getattr(dataset, "split", "split"))
    return cache_dir() / f"{split}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"


def load_fields(path: Path) -> dict[str, Any] | None:
    """The stored fields of a cached split, or None when the file is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        fields = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(fields, dict) or fields.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} embedding file")
        if any(not isinstance(fields.get(k), torch.Tensor) for k in TENSOR_FIELDS):
            raise ValueError(f"a tensor field ({', '.join(TENSOR_FIELDS)}) is missing")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is recomputed
        warnings.warn(f"{path}: unreadable cached embeddings ({exc}); recomputing", stacklevel=3)
        return None
    path.touch()  # recently used: pruned last
    return fields


def save_fields(path: Path, fields: dict[str, Any]) -> None:
    """Write a split's fields atomically, then keep only the newest :data:`MAX_FILES` files."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **fields}, tmp)
    files = sorted(path.parent.glob("*.pt"), key=_mtime, reverse=True)
    for old in files[MAX_FILES:]:
        old.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
