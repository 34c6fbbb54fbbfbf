"""Collapse statistics of text embeddings: how close distinct descriptions end up in text space.

A text encoder "collapses" when descriptions of different anatomies (or of normal and abnormal
findings) embed almost identically: pairwise cosines near 1 and a low effective rank. The numbers
here are computed on *distinct* strings (each description once per anatomy), over the upper
triangle of the cosine matrix, without self pairs and without pairs of identical strings:

- ``within``: pairs of descriptions of the same anatomy; ``across``: pairs of different anatomies.
  For each: ``mean``, ``std`` (population), ``share_above`` (fraction of pairs with cosine above
  0.9 by default), ``n_pairs`` and a histogram over [-1, 1].
- ``effective_rank``: Roy & Vetterli (2007), ``exp(H(p))`` with ``p`` the singular values of the
  (uncentred, row-normalised) embedding matrix divided by their sum: 1 when every row is the same
  direction, N for N orthonormal rows.

Anatomy indices are 0-based positions in :data:`cagcl_mini.anatomy.ANATOMY_NAMES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cagcl_mini.anatomy import ANATOMY_NAMES
from cagcl_mini.evaluation.embed import inference

HIST_BINS = 40
HIGH_COSINE = 0.9
MAX_TEXTS = 4000  # above this, a seeded random subset keeps the N^2 pair matrix small


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def normalise_rows(emb: Any) -> np.ndarray:
    """Rows scaled to unit L2 norm; a zero row is an error (it has no direction)."""
    e = _to_numpy(emb).astype(np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be (N, E), got shape {e.shape}")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"embedding rows {np.flatnonzero(norms[:, 0] == 0)[:5].tolist()} are zero")
    return e / norms


def effective_rank(emb: Any) -> float:
    """Roy & Vetterli effective rank ``exp(-sum p log p)``, ``p = sigma / sum(sigma)``."""
    e = normalise_rows(emb)
    sigma = np.linalg.svd(e, compute_uv=False)
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def cosine_summary(
    values: np.ndarray, bins: int = HIST_BINS, high: float = HIGH_COSINE
) -> dict[str, Any]:
    """Mean, population std, share above ``high``, count and [-1, 1] histogram of cosines."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    counts, _ = np.histogram(np.clip(v, -1.0, 1.0), bins=bins, range=(-1.0, 1.0))
    if v.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "share_above": float("nan"),
                "n_pairs": 0, "hist": counts.tolist()}  # fmt: skip
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "share_above": float((v > high).mean()),
        "n_pairs": int(v.size),
        "hist": counts.tolist(),
    }


def pair_cosines(
    emb: Any, anatomy_index: Any, strings: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper-triangle cosines ``(within, across, within_anatomy_of_pair)``.

    Self pairs and (when ``strings`` is given) pairs of identical strings are left out.
    """
    e = normalise_rows(emb)
    idx = np.asarray(anatomy_index, dtype=np.int64).reshape(-1)
    if idx.shape[0] != e.shape[0]:
        raise ValueError(f"anatomy_index has {idx.shape[0]} entries for {e.shape[0]} embeddings")
    iu, ju = np.triu_indices(e.shape[0], k=1)
    keep = np.ones(iu.shape[0], dtype=bool)
    if strings is not None:
        if len(strings) != e.shape[0]:
            raise ValueError(f"strings has {len(strings)} entries for {e.shape[0]} embeddings")
        first: dict[str, int] = {}
        ids = np.array([first.setdefault(t, len(first)) for t in strings], dtype=np.int64)
        keep = ids[iu] != ids[ju]
    iu, ju = iu[keep], ju[keep]
    cos = (e @ e.T)[iu, ju]  # one Gram matrix instead of gathering both rows of every pair
    same = idx[iu] == idx[ju]
    return cos[same], cos[~same], idx[iu][same]


def text_collapse_stats(
    text_emb: Any,
    anatomy_index: Any,
    strings: Sequence[str] | None = None,
    *,
    bins: int = HIST_BINS,
    high: float = HIGH_COSINE,
    max_texts: int | None = MAX_TEXTS,
    seed: int = 0,
) -> dict[str, Any]:
    """Within- and across-anatomy cosine statistics and the effective rank of ``text_emb`` (N, E).

    Returns ``{"within", "across", "all"}`` summaries (see :func:`cosine_summary`), ``per_anatomy``
    ({name: {"n_texts", "within_mean"}}), ``effective_rank``, ``n_texts``, ``bin_edges`` and
    ``high``. With more than ``max_texts`` rows a seeded random subset is used (``n_texts`` says
    how many).
    """
    e = normalise_rows(text_emb)
    idx = np.asarray(anatomy_index, dtype=np.int64).reshape(-1)
    strs = None if strings is None else list(strings)
    if max_texts is not None and e.shape[0] > max_texts:
        rows = np.sort(np.random.default_rng(seed).choice(e.shape[0], max_texts, replace=False))
        e, idx = e[rows], idx[rows]
        strs = None if strs is None else [strs[i] for i in rows]
    within, across, pair_anatomy = pair_cosines(e, idx, strs)
    per_anatomy = {}
    for k in np.unique(idx):
        name = ANATOMY_NAMES[k] if 0 <= k < len(ANATOMY_NAMES) else str(int(k))
        vals = within[pair_anatomy == k]
        per_anatomy[name] = {
            "n_texts": int((idx == k).sum()),
            "within_mean": float(vals.mean()) if vals.size else float("nan"),
        }
    return {
        "within": cosine_summary(within, bins, high),
        "across": cosine_summary(across, bins, high),
        "all": cosine_summary(np.concatenate([within, across]), bins, high),
        "per_anatomy": per_anatomy,
        "effective_rank": effective_rank(e),
        "n_texts": int(e.shape[0]),
        "bin_edges": np.linspace(-1.0, 1.0, bins + 1).tolist(),
        "high": float(high),
    }


def unique_texts_by_anatomy(texts: Sequence[Sequence[str]]) -> dict[str, list[str]]:
    """Distinct non-empty descriptions per anatomy, in first-seen order, from B lists of K texts."""
    out: dict[str, dict[str, None]] = {name: {} for name in ANATOMY_NAMES}
    for row in texts:
        for name, text in zip(ANATOMY_NAMES, row, strict=False):
            if text:
                out[name][text] = None
    return {name: list(d) for name, d in out.items() if d}


def collect_text_embeddings(
    model: Any, texts_by_anatomy: Mapping[str, Sequence[str]], batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Embed distinct descriptions per anatomy: ``(emb (N, E), anatomy_index (N,), strings)``.

    ``texts_by_anatomy`` maps catalog anatomy names to descriptions (deduplicated here, empty
    strings dropped), e.g. :func:`unique_texts_by_anatomy` of a split's texts. ``model`` is a
    model with ``encode_text(list[str]) -> (N, E)`` (the shared space) or a text encoder called
    on a list of strings (its raw output, e.g. :class:`~cagcl_mini.nn.text.TextEncoder`); it runs
    in eval mode without gradients.
    """
    strings: list[str] = []
    index: list[int] = []
    for name, texts in texts_by_anatomy.items():
        if name not in ANATOMY_NAMES:
            raise KeyError(f"unknown anatomy {name!r}; the catalog has {', '.join(ANATOMY_NAMES)}")
        for text in dict.fromkeys(t for t in texts if t):
            strings.append(text)
            index.append(ANATOMY_NAMES.index(name))
    if not strings:
        raise ValueError("texts_by_anatomy holds no non-empty description")
    encode = getattr(model, "encode_text", model)
    with inference(model):
        chunks = [
            _to_numpy(encode(strings[i : i + batch_size]))
            for i in range(0, len(strings), batch_size)
        ]
    return np.concatenate(chunks).astype(np.float32), np.asarray(index, np.int64), strings


def split_text_embeddings(
    t: Any, texts: Sequence[Sequence[str]]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Distinct descriptions of a split, taken from its already computed ``t`` (B, K, E).

    Same output as :func:`collect_text_embeddings` without encoding again: the first occurrence
    of each (anatomy, string) pair is kept.
    """
    tt = _to_numpy(t)
    seen: set[tuple[int, str]] = set()
    rows: list[np.ndarray] = []
    index: list[int] = []
    strings: list[str] = []
    for i, row in enumerate(texts):
        for k, text in enumerate(row):
            if text and (k, text) not in seen:
                seen.add((k, text))
                rows.append(tt[i, k])
                index.append(k)
                strings.append(text)
    if not rows:
        raise ValueError("the split holds no non-empty description")
    return np.stack(rows).astype(np.float32), np.asarray(index, np.int64), strings
