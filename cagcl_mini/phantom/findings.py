"""Rendered abnormalities: one painter per catalog abnormality, each inside its anatomy's TS mask.

A finding is a :class:`FindingSpec` (name, side, size in its report unit, severity 0..1). Severity
sets extent and contrast, so some findings are obvious and some subtle. Findings that change an
organ's shape or density are expressed as ``mods`` for the anatomy painters (:func:`geometry_mods`);
the others are overlays painted on the finished anatomy (:func:`paint_finding`), restricted to the
voxels of their anatomy's TotalSegmentator labels:

* lung (ids 10-14): nodule, effusion, emphysema, atelectasis, opacity, consolidation, fibrosis,
  mosaic attenuation, peribronchial thickening, bronchiectasis, septal thickening;
* heart (51, 61): cardiomegaly, pericardial effusion, coronary calcification, medical material;
* aorta (52): wall calcification; esophagus (15): hiatal hernia; trachea (16): lymphadenopathy
  (nodes abutting and narrowing it); liver (5): steatosis, lesion; spleen (1): splenomegaly;
  kidney (2, 3): cyst. Cysts keep the kidney label: TotalSegmentator v2 has separate
  ``kidney_cyst`` ids (23/24), but the catalog's kidney is 2 + 3 and a finding must lie inside its
  anatomy's mask for anatomy pooling to see it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cagcl_mini.anatomy import ABNORMALITY_BY_NAME, ALL_LABELS
from cagcl_mini.phantom.body import LUNG_IDS, TS, Body, Canvas
from cagcl_mini.phantom.shapes import capsule, ellipsoid, rotation, smooth_field

LUNG_HU = -850.0  # the lung parenchyma a lung finding's contrast is measured against


DIFFICULTIES: tuple[str, ...] = ("tutorial", "realistic")


@dataclass(frozen=True)
class Visibility:
    """How one difficulty shows one finding: the range its severity is drawn from, and
    multipliers of its extent (size, count, thickness) and of its contrast to the tissue around."""

    severity: tuple[float, float] = (0.0, 1.0)
    extent: float = 1.0
    contrast: float = 1.0


# The tutorial difficulty, calibrated against what a supervised image tower sees at the tutorial
# budget (README, "Per-finding visibility"): every finding's AUC, averaged over 5 seeds of that
# tower, at least 0.75. Some sizes exceed clinical ranges (a 60 mm "nodule", a 12 cm liver
# lesion): at 48^3 and 120 steps that is what the CNN needs. realistic is Visibility() throughout.
_TUTORIAL_CHANGES: dict[str, tuple[float, float]] = {  # name: (extent, contrast)
    "Medical material": (2.5, 1.0),
    "Arterial wall calcification": (2.5, 1.0),
    "Coronary artery wall calcification": (1.8, 1.0),
    "Lymphadenopathy": (2.8, 1.0),
    "Emphysema": (3.5, 1.0),
    "Atelectasis": (2.6, 1.8),
    "Lung nodule": (2.0, 1.4),
    "Lung opacity": (1.3, 1.3),
    "Pulmonary fibrotic sequela": (1.5, 1.0),
    "Mosaic attenuation pattern": (1.5, 3.2),
    "Peribronchial thickening": (1.3, 1.0),
    "Consolidation": (1.3, 1.0),
    "Bronchiectasis": (2.4, 2.0),
    "Interlobular septal thickening": (2.0, 2.0),
    "Hepatic steatosis": (1.0, 1.8),
    "Liver lesion": (3.0, 3.0),
    "Renal cyst": (2.4, 1.0),
}
TUTORIAL: dict[str, Visibility] = {
    name: Visibility((0.6, 1.0), *_TUTORIAL_CHANGES.get(name, (1.0, 1.0))) for name in ALL_LABELS
}


def visibility(name: str, difficulty: str) -> Visibility:
    """The :class:`Visibility` of finding ``name`` at ``difficulty`` (``tutorial``/``realistic``)."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    return TUTORIAL[name] if difficulty == "tutorial" else Visibility()


@dataclass(frozen=True)
class FindingSpec:
    """One abnormality of one volume, as the report describes it."""

    name: str  # catalog abnormality name (ALL_LABELS)
    side: str  # "left" or "right" (used by sided findings and their report sentence)
    size: float  # in the unit of its report phrasing: mm, or cm for splenomegaly
    severity: float  # 0 subtle .. 1 obvious
    extent: float = 1.0  # the difficulty's multiplier of extent (already applied to ``size``)
    contrast: float = 1.0  # the difficulty's multiplier of contrast

    def size_text(self) -> str:
        """The size as the report writes it ("12" mm, or "14.5" cm for the spleen)."""
        return f"{self.size:.1f}" if self.name == "Splenomegaly" else str(int(round(self.size)))

    def fill(self, phrasing: str) -> str:
        """A catalog phrasing with ``{size}`` and ``{side}`` filled in."""
        return phrasing.format(size=self.size_text(), side=self.side)


def sample_spec(
    name: str, rng: np.random.Generator, body: Body, difficulty: str = "realistic"
) -> FindingSpec:
    """Draw side, severity and size of one finding; sizes scale with severity where it matters.

    The random draws are the same at every difficulty: ``tutorial`` maps them to its severity
    range and extent, so a seed gives the same patient and the same findings, more visible.
    """
    if name not in ABNORMALITY_BY_NAME:
        raise KeyError(f"unknown abnormality {name!r}; the catalog has {', '.join(ALL_LABELS)}")
    vis = visibility(name, difficulty)
    lo, hi = vis.severity
    u = float(rng.uniform(0.0, 1.0))
    sev = u if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * u
    side = "left" if rng.random() < 0.5 else "right"
    vox = body.spacing[0]
    grow = vis.extent
    semi = body.organs["spleen_semi"][2]
    sizes = {  # never below what the voxel grid can show
        "Lung nodule": 2.0 * vox * rng.uniform(1.0, 3.0) * grow,
        "Pleural effusion": max(10.0 + 50.0 * sev, 1.5 * vox) * grow,
        "Pericardial effusion": max(5.0 + 15.0 * sev, 1.2 * vox) * grow,
        "Lymphadenopathy": max(12.0 + 20.0 * sev, 2.0 * vox) * grow,
        "Liver lesion": max(12.0 + 28.0 * sev, 2.2 * vox) * grow,
        "Splenomegaly": (
            2.0 * semi * (1.25 + 0.45 * sev) / 10.0  # its normal length is 2 * semi
            if grow == 1.0
            else 2.0 * semi * (1.0 + (0.25 + 0.45 * sev) * grow) / 10.0
        ),
        "Renal cyst": max(10.0 + 20.0 * sev, 2.6 * vox) * grow,
    }
    size = float(np.round(sizes.get(name, 0.0), 1))
    return FindingSpec(name, side, size, sev, vis.extent, vis.contrast)


def _toward(base: float, target: float, contrast: float) -> float:
    """``target`` with its difference to ``base`` (the surrounding tissue) scaled by ``contrast``."""
    return target if contrast == 1.0 else base + contrast * (target - base)


def geometry_mods(specs: dict[str, FindingSpec], rngs: dict[str, np.random.Generator], body: Body):
    """Modifiers for the anatomy painters from the shape/density-changing findings."""
    mods: dict[str, Any] = {}
    if (s := specs.get("Cardiomegaly")) is not None:
        grow = 0.12 + 0.25 * s.severity
        mods["heart_scale"] = 1.12 + 0.25 * s.severity if s.extent == 1.0 else 1.0 + grow * s.extent
    if (s := specs.get("Pericardial effusion")) is not None:
        mods["pericardial_mm"] = s.size
        mods["pericardial_hu"] = float(rngs[s.name].uniform(0.0, 20.0))
    if (s := specs.get("Splenomegaly")) is not None:
        mods["spleen_scale"] = 10.0 * s.size / (2.0 * body.organs["spleen_semi"][2])
    if (s := specs.get("Hepatic steatosis")) is not None:
        mods["liver_hu_delta"] = -(25.0 + 40.0 * s.severity) * s.contrast
    if (s := specs.get("Hiatal hernia")) is not None:
        r = rngs[s.name]
        zd = body.dome_l + 0.5 * (body.dome_r - body.dome_l) - 15.0
        center = (
            -15.0 + r.uniform(-5, 5),
            body.spine_y + body.spine_r + 22.0,
            zd + r.uniform(5, 20),
        )
        semi = (np.array([20.0, 18.0, 20.0]) + s.severity * np.array([15.0, 12.0, 15.0])) * s.extent
        mods["hernia"] = (center, semi * r.uniform(0.9, 1.1, 3), -950.0, r.uniform(10, 30))
    return mods


# ----------------------------------------------------------------------------- helpers
def _lung_points(c: Canvas, side: str | None = None) -> np.ndarray:
    return c.lung_points(side)


def _pick(pts: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    return pts[rng.integers(len(pts))] if len(pts) else None


def _blob(c: Canvas, center, semi, value, op: str = "set", only=LUNG_IDS, rot=None) -> None:
    """Paint an ellipsoid: set the value, or raise/lower HU to it (max/min), in ``only`` labels."""
    found = ellipsoid(c.grid, center, semi, rot)
    if found is None:
        return
    sl, q2 = found
    mask = q2 <= 1.0
    if op != "set":
        cur = c.hu[sl]
        value = np.maximum(cur, value) if op == "max" else np.minimum(cur, value)
    c.paint(sl, mask, value, only=only)


def _rod(c: Canvas, p0, p1, r, value, op: str = "set", only=LUNG_IDS) -> None:
    found = capsule(c.grid, p0, p1, r)
    if found is None:
        return
    sl, d2 = found
    if op != "set":
        value = np.maximum(c.hu[sl], value) if op == "max" else np.minimum(c.hu[sl], value)
    c.paint(sl, d2 <= r * r, value, only=only)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


# ----------------------------------------------------------------------------- lung
def _nodule(c, s, rng):
    p = _pick(_lung_points(c, s.side), rng)
    if p is not None:
        r = s.size / 2.0
        hu = _toward(LUNG_HU, -350.0 + 400.0 * s.severity, s.contrast) + rng.uniform(-30, 30)
        _blob(c, p, (r, r, r), min(hu, 80.0) if s.contrast != 1.0 else hu)


def _pleural_effusion(c, s, rng):
    pts = _lung_points(c, s.side)
    if not len(pts):
        return
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    found = c.grid.box(lo - 1.0, hi + 1.0)
    if found is None:
        return
    sl, (x, y, z) = found
    height = (40.0 + 60.0 * s.severity) * s.extent
    mask = (y < lo[1] + s.size) & (z < lo[2] + height) & ((x < 0) == (s.side == "left"))
    c.paint(sl, mask, rng.uniform(5.0, 20.0), only=LUNG_IDS)


def _emphysema(c, s, rng):
    pts = _lung_points(c)
    upper = pts[pts[:, 2] > np.median(pts[:, 2])] if len(pts) else pts
    for _ in range(3 + int(8 * s.severity * s.extent)):
        p = _pick(upper, rng)
        if p is not None:
            r = rng.uniform(8.0, 22.0) * s.extent
            _blob(c, p, (r, r, r * 0.8), rng.uniform(-995.0, -960.0 + 20.0 * (1 - s.severity)))


def _atelectasis(c, s, rng):
    pts = _lung_points(c, s.side)
    if not len(pts):
        return
    base = pts[(pts[:, 2] < pts[:, 2].min() + 45.0) & (pts[:, 1] < pts[:, 1].min() + 45.0)]
    p = _pick(base if len(base) else pts, rng)
    semi = tuple(
        v * s.extent for v in (rng.uniform(25, 45), rng.uniform(6, 12), rng.uniform(8, 16))
    )
    hu = _toward(LUNG_HU, -250.0 + 280.0 * s.severity, s.contrast)
    _blob(c, p, semi, hu, rot=rotation(z_deg=rng.uniform(-40, 40)))


def _opacity(c, s, rng):
    for _ in range(1 + int(rng.integers(0, 3))):
        p = _pick(_lung_points(c, s.side), rng)
        if p is not None:
            r = rng.uniform(15.0, 35.0) * (0.6 + 0.6 * s.severity) * s.extent
            hu = _toward(LUNG_HU, -650.0 + 250.0 * s.severity, s.contrast)
            _blob(c, p, (r, r * 0.9, r * 0.8), hu, op="max")


def _consolidation(c, s, rng):
    pts = _lung_points(c, s.side)
    low = pts[pts[:, 2] < np.median(pts[:, 2])] if len(pts) else pts
    p = _pick(low, rng)
    if p is None:
        return
    r = rng.uniform(15.0, 30.0) * (0.7 + 0.5 * s.severity) * s.extent
    _blob(c, p, (r, r * 0.85, r * 0.9), rng.uniform(-20.0, 45.0) - 150.0 * (1 - s.severity))
    d = _unit(rng)
    _rod(c, p - 0.7 * r * d, p + 0.7 * r * d, 2.5, -850.0)  # air bronchogram


def _fibrosis(c, s, rng):
    for _ in range(3 + int(4 * s.severity * s.extent)):
        p = _pick(_lung_points(c, s.side), rng)
        if p is not None:
            q = p + _unit(rng) * rng.uniform(25.0, 50.0)
            hu = _toward(LUNG_HU, -200.0 + 200.0 * s.severity, s.contrast)
            _rod(c, p, q, rng.uniform(3.5, 5.5) * s.extent, hu, op="max")


def _mosaic(c, s, rng):
    f = smooth_field(rng, c.grid.n, max(3, int(c.grid.n // (10 * s.extent))))
    delta = np.float32((40.0 + 80.0 * s.severity) * s.contrast)
    lung = (c.lab >= LUNG_IDS[0]) & (c.lab <= LUNG_IDS[-1])
    c.paint(np.s_[:], lung, c.hu + np.where(f > 0, delta, -delta))


def _bronchi(c, s, rng, count, wall_r, wall_hu, lumen_r, lumen_hu, sides):
    for side in sides:
        pts = _lung_points(c, side)
        low = pts[pts[:, 2] < np.median(pts[:, 2])] if len(pts) else pts
        hilum = c.geo["hila"][side]
        for _ in range(count):
            end = _pick(low, rng)
            if end is None:
                return
            start = hilum + 0.35 * (end - hilum)
            _rod(c, start, end, wall_r, wall_hu, op="max")
            _rod(c, start, end, lumen_r, lumen_hu)


def _peribronchial(c, s, rng):
    wall = (rng.uniform(4.0, 6.0) + 3.0 * s.severity) * s.extent
    hu = _toward(LUNG_HU, -150.0 + 120.0 * s.severity, s.contrast)
    _bronchi(c, s, rng, 3 + int(3 * s.severity * s.extent), wall, hu,
             rng.uniform(1.5, 2.5), -950.0, ("left", "right"))  # fmt: skip


def _bronchiectasis(c, s, rng):
    lumen = (rng.uniform(7.0, 9.0) + 4.0 * s.severity) * s.extent
    sides = ("left", "right") if rng.random() < 0.4 else (s.side,)
    wall = _toward(LUNG_HU, -300.0, s.contrast)
    _bronchi(
        c,
        s,
        rng,
        3 + int(3 * s.severity * s.extent),
        lumen + 2.5 * s.extent,
        wall,
        lumen,
        -990.0,
        sides,
    )


def _septal(c, s, rng):
    """A reticular network (zero crossings of a fine random field) in the peripheral lower lung."""
    g = c.grid
    a_in, bp_in, bf_in = c.geo["lung_inner"]
    by = np.where(g.y < 0, bp_in, bf_in)
    peripheral = ((g.x / a_in) ** 2 + (g.y / by) ** 2) > 0.35
    lines = np.abs(smooth_field(rng, g.n, max(4, int(g.n // (3 * s.extent))))) < 0.25
    pts = _lung_points(c)
    zmid = np.median(pts[:, 2]) if len(pts) else 0.0
    lung = (c.lab >= LUNG_IDS[0]) & (c.lab <= LUNG_IDS[-1]) & (g.z < zmid + 30.0)
    delta = np.float32((120.0 + 200.0 * s.severity) * s.contrast)
    c.paint(np.s_[:], lung & peripheral & lines, c.hu + delta)


# ----------------------------------------------------------------------------- mediastinum
def _surface_points(c: Canvas, k: int, rng, depth: float = 0.85) -> list[np.ndarray]:
    center, semi, rot = c.geo["heart"]
    out = []
    for _ in range(k):
        d = _unit(rng)
        d[0] = abs(d[0]) * 0.8  # towards the base (atrioventricular groove)
        out.append(center + rot @ (semi * depth * d / np.linalg.norm(d)))
    return out


def _coronary(c, s, rng):
    vox = c.grid.spacing[0]
    for p in _surface_points(c, 2 + int(6 * s.severity * s.extent), rng):
        r = vox * rng.uniform(0.6, 1.1) * s.extent
        _blob(c, p, (r, r, r), 1200.0 + 1500.0 * s.severity, only=(TS["heart"],))


def _medical_material(c, s, rng):
    b = c.body
    center, semi, _ = c.geo["heart"]
    m = float(semi.min())
    ra = center + m * np.array([0.55, -0.15, -0.15])  # right atrium, below the aortic root
    rv = center + m * np.array([-0.1, 0.45, -0.45])  # right ventricular apex
    ra2 = center + m * np.array([0.25, 0.0, -0.35])  # catheter tip
    tx, ty, _ = b.trachea
    svc = np.array([tx + 22.0, ty + 18.0, b.carina_z + 10.0])
    a_c, _, b_front = b.cavity
    pacemaker = rng.random() < 0.6
    if pacemaker:
        entry = np.array([-0.55 * a_c, b_front - 5.0, b.carina_z + 40.0])
        path = [entry, svc, ra, rv]
    else:
        path = [np.array([tx + 25.0, ty + 10.0, c.grid.axes[2][-1] + 10.0]), svc, ra, ra2]
    metal = rng.uniform(2500.0, 3071.0)
    vox = c.grid.spacing[0]
    gen = (entry + [0.0, 8.0 + b.shell["fat"] * 0.5, 15.0]) if pacemaker else None

    def overlay(canvas: Canvas) -> None:
        for p0, p1 in zip(path[:-1], path[1:], strict=True):
            found = capsule(canvas.grid, p0, p1, 1.3 * vox * s.extent)
            if found is not None:
                sl, d2 = found
                bloom, wire = (1.3 * vox * s.extent) ** 2, (0.7 * vox * s.extent) ** 2
                canvas.paint(sl, d2 <= bloom, canvas.hu[sl] + 300.0)  # blooming
                canvas.paint(sl, d2 <= wire, metal)
        if gen is not None:
            found = ellipsoid(canvas.grid, gen, (20.0, max(6.0, 0.6 * vox), 25.0))
            if found is not None:
                canvas.paint(found[0], found[1] <= 1.0, metal)

    c.post.append(overlay)


def _aortic_calcification(c, s, rng):
    aorta = c.geo["aorta"]
    vox = c.grid.spacing[0]
    weights = np.array([0.5, 1.0, 1.5, 1.5, 1.2, 1.0])[: len(aorta)]
    for _ in range(3 + int(10 * s.severity * s.extent)):
        p0, p1, r = aorta[rng.choice(len(aorta), p=weights / weights.sum())]
        axis = (p1 - p0) / np.linalg.norm(p1 - p0)
        d = _unit(rng)
        d = d - axis * (d @ axis)
        d /= np.linalg.norm(d)
        p = p0 + rng.uniform(0, 1) * (p1 - p0) + (r - 0.45 * vox) * d
        rr = vox * rng.uniform(0.6, 1.0) * s.extent
        _blob(c, p, (rr, rr, rr), 1400.0 + 1400.0 * s.severity, only=(TS["aorta"],))


def _lymphadenopathy(c, s, rng):
    (top, carina, tr), *_ = c.geo["trachea"]
    axis = (top - carina) / np.linalg.norm(top - carina)
    sizes = [s.size] + [s.size * rng.uniform(0.6, 0.9) for _ in range(int(2 * s.severity))]
    for k, size in enumerate(sizes):
        r = size / 2.0
        if k == 0 or rng.random() < 0.7:  # paratracheal, right/left/anterior
            ang = rng.uniform(-0.6 * np.pi, 0.6 * np.pi) + (0.0 if rng.random() < 0.6 else np.pi)
            d = np.array([np.cos(ang), np.sin(ang) * 0.8, 0.0])
            dist = tr + (0.1 if k == 0 else 0.4) * r  # the largest node narrows the lumen
            p = carina + axis * rng.uniform(5.0, 45.0) + dist * d / np.linalg.norm(d)
        else:  # subcarinal
            p = carina + np.array([0.0, -3.0, -(0.3 * r + 0.5 * tr)])
        hu = rng.uniform(30.0, 50.0)
        _blob(c, p, (r, r, r), hu, only=(TS["trachea"],))  # narrows the lumen
        found = ellipsoid(c.grid, p, (r, r, r))
        if found is not None:
            c.paint(found[0], found[1] <= 1.0, hu, 0, only=(0, *LUNG_IDS))


# ----------------------------------------------------------------------------- abdomen
def _organ_points(c: Canvas, label: int) -> np.ndarray:
    return c.points_where(c.lab == label, stride=1 if label in (2, 3) else 2)


def _liver_lesion(c, s, rng):
    p = _pick(_organ_points(c, TS["liver"]), rng)
    if p is not None:
        r = s.size / 2.0
        liver = c.geo["liver_hu"]
        hu = liver - 25.0 - 35.0 * s.severity
        hu = hu if s.contrast == 1.0 else liver - (25.0 + 35.0 * s.severity) * s.contrast
        _blob(c, p, (r, r, r), hu, only=(TS["liver"],))


def _renal_cyst(c, s, rng):
    name = "kidney_left" if s.side == "left" else "kidney_right"
    label = TS[name]
    kc, ks, rot = c.geo[name]
    d = _unit(rng)
    p = kc + rot @ (ks * (0.45 / s.extent) * d)  # inside the kidney (deeper when it is larger)
    r = s.size / 2.0
    found = ellipsoid(c.grid, p, (r, r, r))
    if found is not None:
        c.paint(found[0], found[1] <= 1.0, rng.uniform(0.0, 10.0), label, only=(0, label))


def _none(c, s, rng):
    """Findings drawn entirely through geometry_mods."""


PAINTERS: dict[str, Callable[[Canvas, FindingSpec, np.random.Generator], None]] = {
    "Medical material": _medical_material,
    "Arterial wall calcification": _aortic_calcification,
    "Cardiomegaly": _none,
    "Pericardial effusion": _none,
    "Coronary artery wall calcification": _coronary,
    "Hiatal hernia": _none,
    "Lymphadenopathy": _lymphadenopathy,
    "Emphysema": _emphysema,
    "Atelectasis": _atelectasis,
    "Lung nodule": _nodule,
    "Lung opacity": _opacity,
    "Pulmonary fibrotic sequela": _fibrosis,
    "Pleural effusion": _pleural_effusion,
    "Mosaic attenuation pattern": _mosaic,
    "Peribronchial thickening": _peribronchial,
    "Consolidation": _consolidation,
    "Bronchiectasis": _bronchiectasis,
    "Interlobular septal thickening": _septal,
    "Hepatic steatosis": _none,
    "Liver lesion": _liver_lesion,
    "Splenomegaly": _none,
    "Renal cyst": _renal_cyst,
}
assert set(PAINTERS) == set(ALL_LABELS), "every catalog abnormality needs a painter"


def paint_finding(c: Canvas, spec: FindingSpec, rng: np.random.Generator) -> None:
    """Paint one overlay finding onto the finished anatomy (no-op for geometric findings)."""
    PAINTERS[spec.name](c, spec, rng)
