"""What one training step eats: seeded global batches, augmented texts, the abnormality dictionary.

Exact resume and exact multi-process equivalence both come from one rule: everything random in a
step is a pure function of ``(seed, micro_step, global sample position)``, never of history.

- :class:`GlobalBatchSampler` draws micro-step m's global batch from a per-epoch permutation
  seeded with ``(seed, epoch)``; each epoch is ``len(dataset) // batch_size`` batches (the rest
  is dropped, as ``drop_last``). Under torchrun rank r yields its contiguous slice. Starting it at
  any micro-step reproduces the uninterrupted sequence, so its state is one integer.
- :func:`augment_texts` augments sample j of micro-step m with a numpy generator seeded by
  ``(seed, m, j)``, j the position in the *global* batch.
- :class:`DiagnosisDictionary` holds the abnormal sentences of every anatomy (the CT-GLIP
  diagnosis loss's extra negatives), or a seeded fraction of each anatomy's (the dictionary-scale
  ablation), and builds the (B, K, M) mask of sentences that describe a sample's own findings
  (never negatives), from the unaugmented texts.
- :class:`DiseasePrompts` holds the (negative, positive) prompt pairs of the prompt-based disease
  supervision term, and picks their label columns from a batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cagcl_mini.anatomy import (
    ABNORMALITIES,
    ALL_LABELS,
    ANATOMY_NAMES,
    Abnormality,
    prompt_pair,
)
from cagcl_mini.text.augment import augment_batch_texts, augment_text
from cagcl_mini.text.findings import DictionaryEntry, dictionary_entries, exclusion_mask
from cagcl_mini.train.distributed import DistInfo, local_slice


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Index lists of micro-steps ``start .. stop-1`` (this rank's slice of each global batch)."""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        start: int = 0,
        stop: int | None = None,
        info: DistInfo | None = None,
    ) -> None:
        if num_items < batch_size:
            raise ValueError(
                f"the training split has {num_items} volumes, fewer than batch_size {batch_size}"
            )
        self.num_items, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self.info = info or DistInfo()
        self.slice = local_slice(self.batch_size, self.info)
        self.start = int(start)
        self.stop = self.start if stop is None else int(stop)
        self.batches_per_epoch = self.num_items // self.batch_size

    def position(self, micro_step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of a micro-step."""
        return divmod(int(micro_step), self.batches_per_epoch)

    def global_batch(self, micro_step: int) -> list[int]:
        """The dataset indices of micro-step ``micro_step``'s whole (all-rank) batch."""
        epoch, pos = self.position(micro_step)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        return perm[pos * self.batch_size : (pos + 1) * self.batch_size].tolist()

    def state_at(self, micro_step: int) -> dict[str, int]:
        """What a checkpoint stores: the next micro-step and its epoch/position."""
        epoch, pos = self.position(micro_step)
        return {"micro_step": int(micro_step), "epoch": epoch, "position": pos}

    def __iter__(self) -> Iterator[list[int]]:
        for m in range(self.start, self.stop):
            yield self.global_batch(m)[self.slice]

    def __len__(self) -> int:
        return self.stop - self.start


def augment_texts(
    texts: Sequence[Sequence[str]],
    seed: int,
    micro_step: int,
    first_index: int = 0,
    variants: int | None = None,
) -> list[list[str]]:
    """CA-GCL augmentation of a (local) batch's texts, sample j seeded by (seed, step, j).

    ``first_index`` is the global position of the first local sample (rank r: r * B/N), so every
    process augments a sample exactly as a single process would. With ``variants`` = V, each
    description has V possible augmentations (seeded by the description itself and a variant
    index the step draws): the text caches then hit after the first epochs instead of never,
    while every step still sees a permuted, partly kept description.
    """
    out = []
    for j, row in enumerate(texts):
        rng = np.random.default_rng([int(seed), int(micro_step), first_index + j])
        if variants is None:
            out.extend(augment_batch_texts([list(row)], rng))
            continue
        choice = rng.integers(int(variants), size=len(row))
        out.append(
            [
                augment_text(text, np.random.default_rng([int(seed), int(v), _text_key(text)]))
                if text
                else ""
                for text, v in zip(row, choice, strict=True)
            ]
        )
    return out


def _text_key(text: str) -> int:
    """A stable 63-bit key of a string (Python's ``hash`` differs between processes)."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class DiagnosisDictionary:
    """The abnormal sentences of all anatomies, their anatomy index, and the exclusion rule."""

    entries: tuple[DictionaryEntry, ...]

    @classmethod
    def build(
        cls, num_anatomies: int = len(ANATOMY_NAMES), fraction: float = 1.0, seed: int = 0
    ) -> DiagnosisDictionary:
        """Every catalog anatomy's dictionary (``text.findings.dictionary_entries``), or of each
        anatomy a ``fraction`` of its sentences (rounded; drawn with ``seed``, catalog order
        kept)."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"dictionary fraction must be in [0, 1], got {fraction}")
        kept: list[DictionaryEntry] = []
        for k, name in enumerate(ANATOMY_NAMES[:num_anatomies]):
            own = dictionary_entries(name)
            n = round(fraction * len(own))
            picked = np.random.default_rng([int(seed), k]).permutation(len(own))[:n]
            kept.extend(own[i] for i in sorted(picked))
        return cls(tuple(kept))

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def sentences(self) -> list[str]:
        return [e.sentence for e in self.entries]

    def anatomy_index(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(M,) long anatomy index 0..K-1 of each sentence."""
        idx = [ANATOMY_NAMES.index(e.anatomy) for e in self.entries]
        return torch.tensor(idx, dtype=torch.long, device=device)

    def exclude(
        self, texts: Sequence[Sequence[str]], device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """(B, K, M) bool: sentence m describes a finding of sample b's anatomy k (full texts)."""
        mask = exclusion_mask([list(r) for r in texts], self.entries)
        return torch.from_numpy(mask).to(device)


@dataclass(frozen=True)
class DiseasePrompts:
    """The (negative, positive) prompt pair of every abnormality of the model's anatomies, for
    the prompt-based disease supervision term (``losses.terms.disease_supervision_loss``)."""

    abnormalities: tuple[Abnormality, ...]
    family: str = "fvlm"

    @classmethod
    def build(cls, num_anatomies: int = len(ANATOMY_NAMES), family: str = "fvlm") -> DiseasePrompts:
        names = set(ANATOMY_NAMES[:num_anatomies])
        return cls(tuple(ab for ab in ABNORMALITIES if ab.anatomy in names), family)

    @property
    def prompts(self) -> list[str]:
        """2A strings: negative and positive prompt of each abnormality, interleaved."""
        return [p for ab in self.abnormalities for p in prompt_pair(ab, self.family)]

    def anatomy_index(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(A,) long anatomy index 0..K-1 of each abnormality."""
        idx = [ANATOMY_NAMES.index(ab.anatomy) for ab in self.abnormalities]
        return torch.tensor(idx, dtype=torch.long, device=device)

    def labels(self, labels: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, A) float: the batch's ``labels`` (B, len(ALL_LABELS)) columns of the abnormalities."""
        if labels.ndim != 2 or labels.shape[1] != len(ALL_LABELS):
            raise ValueError(
                f"batch['labels']: expected (B, {len(ALL_LABELS)}) in ALL_LABELS order, "
                f"got {tuple(labels.shape)}"
            )
        cols = [ALL_LABELS.index(ab.name) for ab in self.abnormalities]
        return labels[:, cols].to(device, torch.float32)
