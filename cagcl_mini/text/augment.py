"""CA-GCL clinical text augmentation: sentence permutation and partial completeness.

A per-anatomy description is a handful of independent statements ("The lungs are clear. No
nodule is seen."). Their order carries no meaning (**permutation invariance**), and a report that
leaves a statement out still describes the same anatomy (**partial completeness**). Training on
shuffled and thinned descriptions teaches the text encoder exactly that, instead of memorising
one wording per finding.

The functions only move or drop whole sentences, cut by :func:`cagcl_mini.text.reports.split_sentences`
(verbatim, stripped); they never invent or rewrite one, and at least one sentence survives. The
output joins sentences with a space (as :func:`cagcl_mini.text.reports.split_report` does), or with
", " for unpunctuated text that was cut into phrases, so re-splitting it gives back the kept
sentences.

The normal/abnormal flags of a sample come from its **full** description: compute them before
augmenting (partial completeness may drop the one abnormal sentence; the flag must not flip).
Every function takes a ``numpy.random.Generator`` (advanced in place) or an int seed, so a run
is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cagcl_mini.text.reports import split_sentences

_TERMINAL = (".", "!", "?")


def as_generator(rng: np.random.Generator | int) -> np.random.Generator:
    """``rng`` itself, or a fresh generator seeded with the int ``rng``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _check_prob(name: str, value: float, allow_zero: bool = True) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1):
        bound = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must lie in {bound}, got {value}")


def join_sentences(sentences: Sequence[str]) -> str:
    """Sentences back into one text: a space after punctuated sentences, ", " between phrases."""
    punctuated = any(s.rstrip(")\"']").endswith(_TERMINAL) for s in sentences)
    return (" " if punctuated else ", ").join(sentences)


def permute_list(sentences: Sequence[str], rng: np.random.Generator | int) -> list[str]:
    """The sentences in a uniformly random order (the same multiset)."""
    gen = as_generator(rng)
    return [sentences[i] for i in gen.permutation(len(sentences))]


def keep_subset(
    sentences: Sequence[str], rng: np.random.Generator | int, keep_prob: float = 0.7
) -> list[str]:
    """Each sentence kept with probability ``keep_prob``, in order; never empty (one is kept
    at random when the draw drops them all). An empty input stays empty."""
    _check_prob("keep_prob", keep_prob, allow_zero=False)
    gen = as_generator(rng)
    if not sentences:
        return []
    keep = gen.random(len(sentences)) < keep_prob
    if not keep.any():
        keep[gen.integers(len(sentences))] = True
    return [s for s, k in zip(sentences, keep, strict=True) if k]


def augment_sentences(
    sentences: Sequence[str],
    rng: np.random.Generator | int,
    p_permute: float = 0.5,
    p_partial: float = 0.5,
    keep_prob: float = 0.7,
) -> list[str]:
    """With probability ``p_partial`` keep a random subset, then with ``p_permute`` shuffle."""
    _check_prob("p_permute", p_permute)
    _check_prob("p_partial", p_partial)
    _check_prob("keep_prob", keep_prob, allow_zero=False)
    gen = as_generator(rng)
    out = list(sentences)
    if gen.random() < p_partial:
        out = keep_subset(out, gen, keep_prob)
    if gen.random() < p_permute:
        out = permute_list(out, gen)
    return out


def permute_sentences(text: str, rng: np.random.Generator | int) -> str:
    """``text`` with its sentences in a random order (permutation invariance)."""
    return join_sentences(permute_list(split_sentences(text), rng))


def partial_completeness(text: str, rng: np.random.Generator | int, keep_prob: float = 0.7) -> str:
    """``text`` reduced to a random non-empty subset of its sentences, in their original order."""
    return join_sentences(keep_subset(split_sentences(text), rng, keep_prob))


def augment_text(
    text: str,
    rng: np.random.Generator | int,
    p_permute: float = 0.5,
    p_partial: float = 0.5,
    keep_prob: float = 0.7,
) -> str:
    """One CA-GCL augmentation of a description: maybe thin it, maybe shuffle it. "" stays ""."""
    sentences = split_sentences(text)
    return join_sentences(augment_sentences(sentences, rng, p_permute, p_partial, keep_prob))


def augment_batch_texts(
    texts: Sequence[Sequence[str]],
    rng: np.random.Generator | int,
    p_permute: float = 0.5,
    p_partial: float = 0.5,
    keep_prob: float = 0.7,
) -> list[list[str]]:
    """Augment a batch's ``texts`` (B lists of K descriptions) independently; "" (absent) stays "".

    Flags such as ``batch["abnormal"]`` must already be computed from the unaugmented texts.
    """
    gen = as_generator(rng)
    out: list[list[str]] = []
    for i, row in enumerate(texts):
        if isinstance(row, str) or not isinstance(row, Sequence):
            raise TypeError(
                f"texts[{i}] must be a list of K descriptions, got {type(row).__name__}"
            )
        new_row = []
        for k, text in enumerate(row):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}][{k}] must be a str, got {type(text).__name__}")
            new_row.append(augment_text(text, gen, p_permute, p_partial, keep_prob) if text else "")
        out.append(new_row)
    return out
