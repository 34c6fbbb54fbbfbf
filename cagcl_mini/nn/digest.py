"""A digest of tensors by name: what a cache keys on when its answer depends on weights."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import torch


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor of ``state`` (a ``state_dict``): names, dtypes, shapes and bytes,
    in the mapping's order."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(json.dumps([name, str(t.dtype), list(tensor.shape)]).encode())
        digest.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return digest.hexdigest()
