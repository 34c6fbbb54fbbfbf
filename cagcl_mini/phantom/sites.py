"""Hospitals: the same kind of patients, scanned, stored and reported differently.

A model trained at one hospital meets another one's scanner, reconstruction kernel, slice
thickness, storage convention and report style; cross-site transfer measures what survives.
Site ``A`` is the tutorial's (CT-RATE-like); site ``B`` differs in every way a second hospital
would, each a documented dial:

- noise and kernel: a sharp (lung) reconstruction kernel (``blur_sigma`` below site A's) with
  the quantum noise it lets through (``noise_sd``), drawn per volume;
- field of view: a larger reconstruction circle (``fov_scale`` times site A's in-plane voxel
  size), so the same patient fills less of the same matrix and every finding has fewer voxels;
- thicker slices: every stored slice is a triangular (0.25, 0.5, 0.25) average of three rendered
  slices centred on every second one, so there are half as many slices at twice the spacing (the
  label map keeps the centre slice, so it lines up);
- storage: signed HU with ``RescaleIntercept`` 0 instead of -1024 / -8192;
- calibration: a small offset added to every voxel (a scanner whose water reads 8-20 HU);
- reports: labels only, as the Rad-ChestCT download writes them ("<Label> is present."), over
  the 18 CT-RATE labels (the labels CSV has only those columns).

Site ``C`` is a third hospital whose shift goes the other way on most dials: a soft
(soft-tissue) kernel, blurring more than site A's and with less noise; a smaller reconstruction
circle (the patient fills more of the matrix, its edges may be cut); three times as thick slices;
a scanner that reads 8-20 HU too low; intercept -1000; labels-only reports as site B's. It was
defined before any model was scored on it, as a shift that the opt-in appearance augmentation
(:mod:`cagcl_mini.data.appearance`, shaped to site B's kind of change) was not made for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cagcl_mini.anatomy import CT_RATE_LABELS


@dataclass(frozen=True)
class Site:
    """How one hospital scans, stores and reports (see the module docstring)."""

    name: str
    manufacturer: str
    noise_sd: tuple[float, float] | None = None  # HU range; None: the patient's own draw
    blur_sigma: tuple[float, float] | None = None  # voxels; None: the patient's own draw
    fov_scale: tuple[float, float] | None = None  # in-plane voxel size factor; None: 1
    slice_factor: int = 1  # rendered slices per stored slice
    hu_offset: tuple[float, float] = (0.0, 0.0)  # calibration offset range (HU)
    intercepts: tuple[int, ...] = (-1024, -8192)  # RescaleIntercept conventions (slope 1)
    labels_only_reports: bool = False  # reports list the labels ("<Label> is present.")

    @property
    def index(self) -> int:
        return list(SITES).index(self.name)

    @property
    def label_columns(self) -> tuple[str, ...] | None:
        """The label columns its CSV has (None: all of ``ALL_LABELS``)."""
        return CT_RATE_LABELS if self.labels_only_reports else None

    def acquisition(self, body, rng: np.random.Generator):
        """The patient's body with this site's noise, kernel and field of view (unchanged at
        site A)."""
        if self.noise_sd is None and self.blur_sigma is None and self.fov_scale is None:
            return body
        noise = body.noise_sd if self.noise_sd is None else float(rng.uniform(*self.noise_sd))
        sigma = body.blur_sigma if self.blur_sigma is None else float(rng.uniform(*self.blur_sigma))
        spacing = body.spacing
        if self.fov_scale is not None:
            f = float(rng.uniform(*self.fov_scale))
            xy = round(spacing[0] * f * 256) / 256  # 1/256 mm steps, as the body's own spacing
            spacing = (xy, xy, spacing[2])
        return replace(body, noise_sd=noise, blur_sigma=sigma, spacing=spacing)

    def offset(self, rng: np.random.Generator) -> float:
        """This volume's calibration offset in HU (0 at site A)."""
        lo, hi = self.hu_offset
        return 0.0 if lo == hi == 0.0 else float(rng.uniform(lo, hi))

    def thick_slices(
        self, hu: np.ndarray, labels: np.ndarray, affine: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The stored slices: every ``slice_factor``-th slice, the CT averaged with its
        neighbours (triangular profile), the labels of the centre slice, the affine's z scaled."""
        if self.slice_factor == 1:
            return hu, labels, affine
        f = self.slice_factor
        padded = np.concatenate([hu[..., :1], hu, hu[..., -1:]], axis=2)
        profile = 0.25 * padded[..., :-2] + 0.5 * padded[..., 1:-1] + 0.25 * padded[..., 2:]
        out_affine = affine.copy()
        out_affine[:3, 2] *= f
        return (
            np.ascontiguousarray(profile[..., ::f], dtype=np.float32),
            np.ascontiguousarray(labels[..., ::f]),
            out_affine,
        )


TRANSFER_TRAIN = 16
"""Training volumes of a site other than ``A``: models are trained at A and only scored at the
other site's validation split, so its training split is kept small."""

SITES: dict[str, Site] = {
    "A": Site("A", "cagcl-mini"),
    "B": Site(
        "B",
        "cagcl-mini site B",
        noise_sd=(40.0, 60.0),
        blur_sigma=(0.3, 0.45),
        fov_scale=(1.2, 1.35),
        slice_factor=2,
        hu_offset=(8.0, 20.0),
        intercepts=(0,),
        labels_only_reports=True,
    ),
    "C": Site(
        "C",
        "cagcl-mini site C",
        noise_sd=(4.0, 8.0),
        blur_sigma=(0.9, 1.2),
        fov_scale=(0.85, 0.95),
        slice_factor=3,
        hu_offset=(-20.0, -8.0),
        intercepts=(-1000,),
        labels_only_reports=True,
    ),
}


def result_key(name: str) -> str:
    """The prefix of a site's results in the benchmarks' JSON: ``site_b`` for site ``B``."""
    return f"site_{name.lower()}"


def site(name: str) -> Site:
    """The :class:`Site` called ``name`` (a key of :data:`SITES`)."""
    if name not in SITES:
        raise ValueError(f"site must be one of {', '.join(SITES)}, got {name!r}")
    return SITES[name]
