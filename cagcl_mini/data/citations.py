"""Slice citations as training targets: the (snippet, axial position) pairs of a split.

"image N" of a citation ("(series 2, image 37)", :mod:`cagcl_mini.text.citations`) counts the
stored volume's slices along its array axis 2, 1-based. :func:`mine_pairs` reads each cited
volume's NIfTI header (slice count and orientation) and turns the citation into the slice centre
as a fraction of the RAS+ superior axis, ``(N - 0.5) / Z`` (flipped when axis 2 points inferior),
the frame the loader's ``Orientationd("RAS")`` output is in; an error of one axis fraction is
``Z * ZSpacing`` mm. Snippet localisation (:mod:`cagcl_mini.experiments.localisation`) and the
pretraining's optional localisation term (:class:`cagcl_mini.train.step.Objective`) both read them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from cagcl_mini.data.dataset import CTReportDataset
from cagcl_mini.text.citations import mine_citations
from cagcl_mini.text.reports import route_sentence


@dataclass
class LocalisationPairs:
    """The (snippet, slice) pairs of one split, aligned arrays of length N."""

    volume: np.ndarray  # (N,) int: the item index in the dataset
    ids: list[str]  # volume ids
    snippets: list[str]  # the cited sentences, citations stripped
    anatomy: list[str | None]  # the router's anatomy of each snippet
    image: np.ndarray  # (N,) float: the cited image number (the middle of a range)
    n_slices: np.ndarray  # (N,) int: slices of the stored volume
    target: np.ndarray  # (N,) float in [0, 1]: the cited slice's centre on the RAS+ axis
    extent_mm: np.ndarray  # (N,) float: the axial length of the volume, Z * ZSpacing

    def __len__(self) -> int:
        return len(self.snippets)


def axial_position(image: float, n_slices: int, axcode: str) -> float:
    """The centre of stored slice ``image`` (1-based) as a fraction of the RAS+ superior axis:
    ``(image - 0.5) / n_slices``, flipped when the stored axis 2 points inferior (``"I"``)."""
    fraction = (float(image) - 0.5) / int(n_slices)
    return 1.0 - fraction if axcode == "I" else fraction


def mine_pairs(dataset: CTReportDataset) -> LocalisationPairs:
    """The cited (snippet, slice) pairs of a split's reports (module docstring, step 1).

    Reads only the NIfTI headers (slice count and orientation). A citation outside the volume's
    slices (a report citing another series) is left out with one warning per split naming the
    volumes; a volume whose axis 2 is not axial is an error naming the file.
    """
    cols: dict[str, list] = {k: [] for k in ("volume", "ids", "snippets", "anatomy", "image")}
    cols |= {"n_slices": [], "target": [], "extent_mm": []}
    outside: list[str] = []
    for index, rec in enumerate(dataset.records):
        pairs = mine_citations(rec.findings)
        if not pairs:
            continue
        header = nib.load(rec.image)
        n_slices = int(header.shape[2])
        axcode = nib.aff2axcodes(header.affine)[2]
        if axcode not in ("S", "I"):
            raise ValueError(
                f"{rec.image}: array axis 2 points {axcode!r}, expected S or I (axial slices): "
                '"image N" of a citation counts the slices along axis 2'
            )
        for pair in pairs:
            if not 1 <= pair.centre <= n_slices:
                outside.append(f"{rec.id} (image {pair.centre:g} of {n_slices})")
                continue
            cols["volume"].append(index)
            cols["ids"].append(rec.id)
            cols["snippets"].append(pair.snippet)
            cols["anatomy"].append(route_sentence(pair.snippet))
            cols["image"].append(float(pair.centre))
            cols["n_slices"].append(n_slices)
            cols["target"].append(axial_position(pair.centre, n_slices, axcode))
            cols["extent_mm"].append(n_slices * float(rec.spacing[2]))
    if outside:
        warnings.warn(
            f"{dataset.split}: {len(outside)} citation(s) outside their volume's slices left out: "
            + ", ".join(outside[:5]),
            stacklevel=2,
        )
    return LocalisationPairs(
        np.asarray(cols["volume"], int),
        cols["ids"],
        cols["snippets"],
        cols["anatomy"],
        np.asarray(cols["image"], float),
        np.asarray(cols["n_slices"], int),
        np.asarray(cols["target"], float),
        np.asarray(cols["extent_mm"], float),
    )


def targets_by_volume(pairs: LocalisationPairs) -> dict[str, tuple[tuple[str, float], ...]]:
    """Volume id -> its ``(snippet, target)`` pairs, in report order (volumes without a
    citation are absent)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for vid, snippet, target in zip(pairs.ids, pairs.snippets, pairs.target, strict=True):
        out.setdefault(vid, []).append((snippet, float(target)))
    return {vid: tuple(rows) for vid, rows in out.items()}
