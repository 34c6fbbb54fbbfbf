"""Render one phantom volume: anatomy + findings -> noisy, blurred HU and a TS label map.

Random streams are split by purpose from one :class:`numpy.random.SeedSequence`, so switching a
finding on or off changes only that finding's voxels: the patient (stream 1), the scanner noise
(stream 2), each finding's size/severity (stream 3, child per label) and its placement (stream 4,
child per label) are independent. Stream 0 belongs to the dataset planner (which findings, report
wording, rescale intercept).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from cagcl_mini.anatomy import ALL_LABELS
from cagcl_mini.phantom.body import (
    Body,
    Canvas,
    paint_abdomen,
    paint_lung_vessels,
    paint_lungs,
    paint_walls,
    sample_body,
)
from cagcl_mini.phantom.finding_masks import FINDING_MASK_LABELS
from cagcl_mini.phantom.findings import FindingSpec, geometry_mods, paint_finding, sample_spec
from cagcl_mini.phantom.mediastinum import paint_heart, paint_skeleton, paint_vessels_and_airway
from cagcl_mini.phantom.shapes import blur, gaussian_weights, smooth_field
from cagcl_mini.phantom.sites import site as get_site

HU_MIN, HU_MAX = -1024.0, 3071.0  # the 12-bit range scanners store
BLUR_TRUNCATE = 2.5
SeedLike = int | np.random.SeedSequence
STREAM_PLAN, STREAM_BODY, STREAM_NOISE, STREAM_SPEC, STREAM_PLACE, STREAM_SITE = range(6)
STREAM_NEGATIVES = 6  # the report's pertinent negatives


def seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    """A SeedSequence from an int (>= 0) or an existing SeedSequence."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or a SeedSequence, got {seed!r}")
    return np.random.SeedSequence(int(seed))


def child(ss: np.random.SeedSequence, *path: int) -> np.random.Generator:
    """A generator for a fixed child of ``ss`` (pure: does not advance ``ss``, unlike spawn)."""
    return np.random.default_rng(
        np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, *path))
    )


@dataclass
class RenderedVolume:
    """A rendered volume: HU (float32, clipped to the 12-bit range), TS v2 `total` labels (uint8)
    and, when asked for, the finding masks (uint8, :mod:`cagcl_mini.phantom.finding_masks`)."""

    hu: np.ndarray
    labels: np.ndarray
    affine: np.ndarray  # RAS+ voxel -> world (mm)
    spacing: tuple[float, float, float]
    findings: tuple[FindingSpec, ...]
    body: Body
    finding_map: np.ndarray | None = None  # 0 background, FINDING_MASK_LABELS ids


def body_for(seed: SeedLike, size: int, site: str = "A") -> Body:
    """The patient of a seed as ``site`` scans it (cheap: parameters only, no voxels)."""
    ss = seed_sequence(seed)
    return get_site(site).acquisition(
        sample_body(child(ss, STREAM_BODY), size), child(ss, STREAM_SITE)
    )


def spec_for(seed: SeedLike, name: str, body: Body, difficulty: str = "tutorial") -> FindingSpec:
    """The size/side/severity a seed gives one finding (independent of the other findings), at
    a difficulty (:data:`~cagcl_mini.phantom.findings.DIFFICULTIES`)."""
    if name not in ALL_LABELS:
        raise KeyError(f"unknown abnormality {name!r}; choose from {', '.join(ALL_LABELS)}")
    ss = seed_sequence(seed)
    return sample_spec(name, child(ss, STREAM_SPEC, ALL_LABELS.index(name)), body, difficulty)


def affine_for(body: Body) -> np.ndarray:
    """RAS+ affine: axis 0 towards the patient's right, 1 anterior, 2 superior; table offset in z."""
    n = body.n
    origin = [c - (n - 1) / 2 * s for c, s in zip(body.center, body.spacing, strict=True)]
    aff = np.diag([*body.spacing, 1.0])
    aff[:3, 3] = origin
    aff[2, 3] += body.organs["table_z"]
    return aff


def render_volume(
    seed: SeedLike,
    size: int = 64,
    findings: Iterable[str | FindingSpec] = (),
    difficulty: str = "tutorial",
    site: str = "A",
    finding_masks: bool = False,
) -> RenderedVolume:
    """Render the patient of ``seed`` with the given findings (names or full specs).

    A finding given by name gets the size/side/severity ``spec_for(seed, name, body, difficulty)``
    gives it, so rendering the same seed with and without one finding differs only where that
    finding is. ``site`` sets the scanner, slice thickness and calibration
    (:mod:`cagcl_mini.phantom.sites`); the volume's patient comes from ``seed`` alone.
    ``finding_masks`` also records which voxels each masked finding painted
    (``finding_map``); the voxels, labels and findings are the same either way.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    ss = seed_sequence(seed)
    body_rng = child(ss, STREAM_BODY)
    scanner = get_site(site)
    site_rng = child(ss, STREAM_SITE)
    body = scanner.acquisition(sample_body(body_rng, int(size)), site_rng)
    specs: dict[str, FindingSpec] = {}
    for f in findings:
        spec = f if isinstance(f, FindingSpec) else spec_for(ss, f, body, difficulty)
        if spec.name not in ALL_LABELS:
            raise KeyError(
                f"unknown abnormality {spec.name!r}; choose from {', '.join(ALL_LABELS)}"
            )
        specs[spec.name] = spec
    ordered = {name: specs[name] for name in ALL_LABELS if name in specs}
    place = {name: child(ss, STREAM_PLACE, ALL_LABELS.index(name)) for name in ordered}
    mods = geometry_mods(ordered, place, body)

    c = Canvas(body)
    tex = smooth_field(body_rng, body.n, max(3, body.n // 8))
    masks = paint_walls(c, tex)
    paint_lungs(c, masks, tex)
    paint_lung_vessels(c, body_rng)
    paint_abdomen(c, masks, mods)
    paint_heart(c, masks, mods)
    paint_vessels_and_airway(c, masks, mods)
    paint_skeleton(c, masks)
    finding_map = np.zeros(c.hu.shape, dtype=np.uint8) if finding_masks else None
    for name, spec in ordered.items():
        label = FINDING_MASK_LABELS.get(name) if finding_map is not None else None
        before = c.hu.copy() if label is not None else None
        paint_finding(c, spec, place[name])
        if label is not None:
            finding_map[c.hu != before] = label  # the voxels this finding's painter changed

    _scanner(c, child(ss, STREAM_NOISE))
    for overlay in c.post:
        overlay(c)
    offset = scanner.offset(site_rng)
    if offset:
        c.hu += np.float32(offset)
    np.clip(c.hu, HU_MIN, HU_MAX, out=c.hu)
    hu, labels, affine = scanner.thick_slices(c.hu, c.lab, affine_for(body))
    if finding_map is not None:  # the centre slice of each stored slice, as for the labels
        finding_map = np.ascontiguousarray(finding_map[..., :: scanner.slice_factor])
    spacing = (body.spacing[0], body.spacing[1], body.spacing[2] * scanner.slice_factor)
    return RenderedVolume(hu, labels, affine, spacing, tuple(ordered.values()), body, finding_map)


def _scanner(c: Canvas, rng: np.random.Generator) -> None:
    """Add correlated noise and the scanner's blur in one pass: blur(image + k * white noise).

    ``k`` is chosen so the noise left after the blur has the body's ``noise_sd`` (HU). The white
    noise is uniform (three times cheaper to draw than normal); the blur sums ~30 effective voxels,
    which makes the remaining noise Gaussian for any practical purpose.
    """
    b = c.body
    w = gaussian_weights(b.blur_sigma, BLUR_TRUNCATE)
    gain = float((w**2).sum() ** 1.5)  # std of blurred unit white noise
    noise = rng.random(c.hu.shape, dtype=np.float32)
    noise -= np.float32(0.5)
    noise *= np.float32(b.noise_sd * np.sqrt(12.0 / gain))  # uniform(-.5, .5) has var 1/12
    c.hu += noise
    c.hu = blur(c.hu, w)
