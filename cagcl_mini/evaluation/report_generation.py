"""Retrieval report generation: each anatomy of a volume gets the nearest training description.

A model that aligns anatomy tokens with descriptions can write a report without a decoder: for
anatomy k of a query volume, compare its visual token ``v_ik`` with the text embeddings ``t_jk``
of every training description of anatomy k (the :class:`DescriptionBank`) and copy the most
similar one. With ``k_vote > 1`` the ``k_vote`` nearest descriptions first vote on normal /
abnormal (their abnormal flags, a tie going to the class of the nearest), and the nearest
description of the winning class is copied: a guard against one odd neighbour. The chosen
descriptions are joined in catalog order (:data:`~cagcl_mini.anatomy.ANATOMY_NAMES`) into one
report; an anatomy absent from the volume contributes nothing.

Two baselines that look at no image: :func:`random_reports` (a random training report per
volume, seeded) and :func:`most_common_normal_report` (each anatomy's most frequent normal
training description, in catalog order: what a model that always answers "normal" in the
usual words would write).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cagcl_mini.anatomy import ANATOMY_NAMES, NUM_ANATOMIES
from cagcl_mini.evaluation.embed import EmbeddedSplit


@dataclass
class DescriptionBank:
    """The training descriptions of each anatomy with their embeddings and abnormal flags.

    ``t[k]`` (M_k, E) text embeddings, ``texts[k]`` M_k strings, ``abnormal[k]`` (M_k,) bool and
    ``rows[k]`` (M_k,) the training row each description came from, for every catalog anatomy k
    (M_k may be 0).
    """

    t: list[torch.Tensor]
    texts: list[list[str]]
    abnormal: list[torch.Tensor]
    rows: list[torch.Tensor]

    def __len__(self) -> int:
        return sum(len(x) for x in self.texts)


@dataclass
class GeneratedReports:
    """Reports written by retrieval: ``texts`` N lists of K chosen descriptions ("" where the
    anatomy is absent), ``reports`` N strings, ``abnormal`` (N,K) bool flags of the chosen
    descriptions, ``source`` (N,K) long training row of each choice (-1 where none)."""

    texts: list[list[str]]
    reports: list[str]
    abnormal: torch.Tensor
    source: torch.Tensor

    def __len__(self) -> int:
        return len(self.reports)


def assemble_report(descriptions: Sequence[str]) -> str:
    """One report from K per-anatomy descriptions in catalog order (empty ones skipped)."""
    if len(descriptions) != NUM_ANATOMIES:
        raise ValueError(
            f"descriptions: expected K={NUM_ANATOMIES} texts (one per {', '.join(ANATOMY_NAMES)}),"
            f" got {len(descriptions)}"
        )
    return " ".join(d.strip() for d in descriptions if d and d.strip())


def description_bank(train: EmbeddedSplit) -> DescriptionBank:
    """The non-empty descriptions of a training split, per anatomy (duplicates kept: they vote)."""
    if train.t is None:
        raise ValueError("train: the split has no text embeddings t; embed it with embed_dataset")
    if train.t.shape[1] != NUM_ANATOMIES:
        raise ValueError(
            f"train: expected K={NUM_ANATOMIES} anatomies, got t of shape {tuple(train.t.shape)}"
        )
    has_text = train.text_present
    t, texts, abnormal, rows = [], [], [], []
    for k in range(NUM_ANATOMIES):
        idx = has_text[:, k].nonzero(as_tuple=True)[0]
        t.append(train.t[idx, k].float())
        texts.append([train.texts[i][k] for i in idx.tolist()])
        abnormal.append(train.abnormal[idx, k].bool())
        rows.append(idx)
    if not any(texts):
        raise ValueError("train: no training volume has a description to retrieve")
    return DescriptionBank(t=t, texts=texts, abnormal=abnormal, rows=rows)


def _choose(sim: torch.Tensor, abnormal: torch.Tensor, k_vote: int) -> torch.Tensor:
    """Index into the bank for each query row of ``sim`` (Q, M): nearest, or nearest of the
    class the ``k_vote`` nearest vote for (ties: the nearest's class)."""
    if k_vote <= 1:
        return sim.argmax(1)
    top = sim.topk(min(k_vote, sim.shape[1]), dim=1).indices  # (Q, k) nearest first
    votes = abnormal[top].float()
    share = votes.mean(1)
    winner = torch.where(share == 0.5, votes[:, 0].bool(), share > 0.5)  # (Q,)
    same = abnormal[None, :] == winner[:, None]  # (Q, M) candidates of the winning class
    return sim.masked_fill(~same, float("-inf")).argmax(1)


def generate_reports(
    query: EmbeddedSplit, bank: DescriptionBank | EmbeddedSplit, k_vote: int = 1
) -> GeneratedReports:
    """A report for every volume of ``query`` by retrieval from ``bank`` (see the module doc).

    ``bank`` is a :class:`DescriptionBank` or the embedded training split to build one from.
    Similarity is the dot product of the (normalised) ``v_ik`` with each ``t_jk``.
    """
    if isinstance(bank, EmbeddedSplit):
        bank = description_bank(bank)
    if int(k_vote) < 1:
        raise ValueError(f"k_vote must be >= 1, got {k_vote}")
    v, present = query.v.float(), query.present.bool()
    if v.dim() != 3 or v.shape[1] != NUM_ANATOMIES or present.shape != v.shape[:2]:
        raise ValueError(
            f"query: expected v (N, K={NUM_ANATOMIES}, E) and present (N, K), got "
            f"{tuple(v.shape)} and {tuple(present.shape)}"
        )
    dims = {int(t.shape[1]) for t in bank.t if len(t)}
    if dims != {int(v.shape[2])}:
        raise ValueError(
            f"bank: text embeddings of size {sorted(dims)} do not match the query's v of size "
            f"{v.shape[2]} (embed both splits with the same model)"
        )
    n = v.shape[0]
    source = torch.full((n, NUM_ANATOMIES), -1, dtype=torch.long)
    abnormal = torch.zeros(n, NUM_ANATOMIES, dtype=torch.bool)
    texts = [[""] * NUM_ANATOMIES for _ in range(n)]
    for k in range(NUM_ANATOMIES):
        rows = present[:, k].nonzero(as_tuple=True)[0]
        if rows.numel() == 0 or len(bank.texts[k]) == 0:
            continue
        pick = _choose(v[rows, k] @ bank.t[k].T, bank.abnormal[k], int(k_vote))
        source[rows, k] = bank.rows[k][pick]
        abnormal[rows, k] = bank.abnormal[k][pick]
        for i, j in zip(rows.tolist(), pick.tolist(), strict=True):
            texts[i][k] = bank.texts[k][j]
    return GeneratedReports(
        texts=texts,
        reports=[assemble_report(row) for row in texts],
        abnormal=abnormal,
        source=source,
    )


def true_reports(split: EmbeddedSplit) -> list[str]:
    """The split's own reports (Findings_EN) when it kept them, else its descriptions assembled
    in catalog order."""
    if split.reports is not None:
        return list(split.reports)
    return [assemble_report(row) for row in split.texts]


def random_reports(train_reports: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """``n`` training reports drawn at random with replacement (the image-blind baseline)."""
    pool = [r for r in train_reports if r and r.strip()]
    if not pool:
        raise ValueError("train_reports: no non-empty training report to draw from")
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.integers(0, len(pool), int(n))]


def most_common_normal_report(train: EmbeddedSplit) -> str:
    """Each anatomy's most frequent normal training description (first seen wins a tie),
    assembled in catalog order."""
    chosen = []
    for k in range(NUM_ANATOMIES):
        normal = [
            row[k] for i, row in enumerate(train.texts) if row[k] and not bool(train.abnormal[i, k])
        ]
        chosen.append(Counter(normal).most_common(1)[0][0] if normal else "")
    report = assemble_report(chosen)
    if not report:
        raise ValueError("train: no normal description in the training split")
    return report
