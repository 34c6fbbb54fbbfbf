"""The phantom's normal anatomy: per-volume body parameters and their painting in HU + TS labels.

:func:`sample_body` draws one patient (habitus, organ sizes and positions, contrast phase, voxel
spacing); the painters here and in :mod:`cagcl_mini.phantom.mediastinum` paint it onto a
:class:`Canvas` as Hounsfield units and TotalSegmentator v2 ``total`` ids, including structures the
catalog ignores (ribs, vertebrae, stomach, ...), so the TS -> anatomy lookup table matters. Findings that change an organ's shape or
density (cardiomegaly, splenomegaly, pericardial effusion, hiatal hernia, steatosis) come in as
``mods`` so the organ is painted once, already abnormal.

Frame: +x patient's right, +y anterior, +z superior (RAS+), mm, origin on the body axis near the
right diaphragm dome. Painting order encodes anatomy: later structures displace earlier ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cagcl_mini.phantom.shapes import Grid, capsule, ellipsoid, rotation

# TotalSegmentator v2 `total` ids painted here (the catalog's and a few it does not use).
TS = {
    "spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 5, "stomach": 6,
    "pancreas": 7, "lung_upper_lobe_left": 10, "lung_lower_lobe_left": 11,
    "lung_upper_lobe_right": 12, "lung_middle_lobe_right": 13, "lung_lower_lobe_right": 14,
    "esophagus": 15, "trachea": 16, "heart": 51, "aorta": 52, "atrial_appendage_left": 61,
    "superior_vena_cava": 62, "inferior_vena_cava": 63, "spinal_cord": 79, "autochthon_left": 86,
    "autochthon_right": 87, "sternum": 116, "costal_cartilages": 117,
}  # fmt: skip
LUNG_IDS = (10, 11, 12, 13, 14)
# Vertebra ids: T12..T1 = 32..43 and C7..C1 = 44..50 going up; L1..L5, S1 = 31..26 going down.
UPWARD_VERTEBRAE = tuple(range(32, 51))
DOWNWARD_VERTEBRAE = tuple(range(31, 25, -1))


@dataclass(frozen=True)
class Body:
    """One synthetic patient. Lengths in mm (patient frame), intensities in HU."""

    n: int
    spacing: tuple[float, float, float]
    center: tuple[float, float, float]  # patient coordinates of the volume's central voxel
    contrast: bool
    noise_sd: float
    blur_sigma: float  # voxels
    hu: dict[str, float]
    shell: dict[str, float]  # half_width, back, front, fat, muscle, rib_band
    dome_r: float
    dome_l: float
    apex: float
    spine_r: float
    spine_y: float
    levels: tuple[tuple[int, float, float], ...]  # (TS id, z_lo, z_hi) of each vertebral body
    rib_drop: float
    heart: dict[str, Any]
    carina_z: float
    trachea: tuple[float, float, float]  # x, y, radius
    fissure: tuple[float, float, float]  # oblique z0, oblique slope, horizontal z
    organs: dict[str, Any] = field(default_factory=dict)

    @property
    def cavity(self) -> tuple[float, float, float]:
        """Semi-axes (lateral, posterior, anterior) of the cavity inside the chest wall muscles."""
        s = self.shell
        t = s["fat"] + s["muscle"]
        return s["half_width"] - t, s["back"] - t, s["front"] - t

    def level_center(self, ts_id: int) -> float:
        """z of the middle of a vertebral body (by TS id)."""
        for vid, lo, hi in self.levels:
            if vid == ts_id:
                return 0.5 * (lo + hi)
        raise KeyError(ts_id)


def _q(x: float, step: float = 1 / 256) -> float:
    """Round to a float32-exact grid so the NIfTI header and the CSV agree to the last digit."""
    return round(x / step) * step


def sample_body(rng: np.random.Generator, n: int) -> Body:
    """Draw one patient and the acquisition (spacing, field of view, contrast, noise)."""
    u = rng.uniform
    sxy, sz = _q(u(5.3, 6.0) * 64 / n), _q(u(5.2, 5.9) * 64 / n)
    habitus = u(0.0, 1.0)
    half_width = min(135 + 40 * habitus + u(-5, 5), sxy * n / 2 - 14)
    back = 0.68 * half_width + u(-5, 5)
    shell = {
        "half_width": half_width, "back": back, "front": back + u(0, 10),
        "fat": 6 + 24 * habitus + u(-3, 3), "muscle": u(10, 16), "rib_band": u(8, 11),
    }  # fmt: skip
    contrast = bool(rng.random() < 0.4)
    liver = u(50, 65) + (u(30, 50) if contrast else 0.0)
    cortex = u(28, 36) + (u(110, 160) if contrast else 0.0)
    hu = {
        "fat": u(-110, -90), "muscle": u(40, 55), "lung": u(-880, -830),
        "blood": u(150, 260) if contrast else u(35, 50),
        "myocardium": u(90, 120) if contrast else u(40, 50),
        "liver": liver, "spleen": u(42, 52) + (u(40, 70) if contrast else 0.0),
        "kidney_cortex": cortex, "kidney_medulla": cortex - (u(40, 70) if contrast else 0.0),
        "marrow": u(180, 320), "cortical": u(600, 800), "rib": u(450, 650),
    }  # fmt: skip
    a_c, b_post = half_width - shell["fat"] - shell["muscle"], back - shell["fat"] - shell["muscle"]
    b_front = shell["front"] - shell["fat"] - shell["muscle"]
    dome_r = u(-12, 12)
    dome_l = dome_r - u(8, 22)
    spine_r = u(15, 18)
    spine_y = -b_post + spine_r + u(8, 14)
    # Vertebral bodies: T12/L1 below the domes, thoracic pitch ~22-30 mm, lumbar ~36 mm.
    z_tl = dome_r - u(75, 95)
    levels, top = [], z_tl
    for k, vid in enumerate(UPWARD_VERTEBRAE):
        pitch = (30 - 8 * k / 11) if k < 12 else 18  # thoracic bodies shrink upwards
        levels.append((vid, top + 0.1 * pitch, top + 0.9 * pitch))  # 20% disc between bodies
        top += pitch
    bottom = z_tl
    for vid in DOWNWARD_VERTEBRAE:
        levels.append((vid, bottom - 36 + 3.5, bottom - 3.5))
        bottom -= 36
    hs = u(0.9, 1.08)
    heart = {
        "x": u(-28, -15), "semi": tuple(v * hs * u(0.95, 1.05) for v in (55, 40, 43)),
        "rot": (180 - u(30, 45), u(15, 30)),
    }  # fmt: skip
    org = {
        "liver_center": (u(45, 65), u(-5, 15), dome_r - u(55, 70)),
        "liver_semi": (u(95, 110), u(80, 95), u(65, 80)),
        "spleen_center": (-0.72 * a_c, -0.3 * b_post, dome_l - u(45, 60)),
        "spleen_semi": (u(22, 30), u(40, 52), u(40, 52)),
        "spleen_angle": u(-50, -30),
        "stomach_center": (-0.42 * a_c, 0.3 * b_front, dome_l - u(40, 55)),
        "stomach_semi": (u(35, 50), u(28, 38), u(35, 45)),
        "stomach_level": u(0.0, 0.5),
        "kidney_semi": (u(22, 28), u(25, 30), u(45, 55)),
        "kidney_x": (u(55, 68), u(55, 68)),
        "kidney_y": spine_y + u(0, 12),
        "kidney_drop": u(10, 25),
        "kidney_jitter": u(0, 15),
        "table_z": _q(u(-400, -150)),
        "mediastinum_hw": u(20, 28),
        "aorta_scale": u(0.9, 1.15),
        "esophagus_r": u(7, 9),
    }
    center = (_q(u(-8, 8)), _q(u(-10, 10) + 0.5 * (shell["front"] - back)), _q(u(5, 25)))
    return Body(
        n=n, spacing=(sxy, sxy, sz), center=center, contrast=contrast, noise_sd=u(10, 25),
        blur_sigma=u(0.5, 0.75), hu=hu, shell=shell, dome_r=dome_r, dome_l=dome_l,
        apex=dome_r + u(160, 185), spine_r=spine_r, spine_y=spine_y, levels=tuple(levels),
        rib_drop=u(45, 70), heart=heart, carina_z=dome_r + u(95, 115),
        trachea=(u(-3, 4), spine_y + spine_r + u(26, 32), u(8, 11)),
        fissure=(dome_r + u(15, 40), u(0.6, 1.0), dome_r + u(40, 60)), organs=org,
    )  # fmt: skip


class Canvas:
    """The volume being painted: HU (float32), TS labels (uint8), grid, and shared geometry."""

    def __init__(self, body: Body) -> None:
        n = body.n
        origin = [c - (n - 1) / 2 * s for c, s in zip(body.center, body.spacing, strict=True)]
        self.body = body
        self.grid = Grid(n, body.spacing, origin)
        self.hu = np.full(self.grid.shape, -1000.0, dtype=np.float32)
        self.lab = np.zeros(self.grid.shape, dtype=np.uint8)
        self.geo: dict[str, Any] = {}
        self.post: list = []  # callables(canvas) applied after noise and blur (metal)

    def paint(self, sl, mask, hu=None, label=None, only=None) -> None:
        """Set HU and/or label where ``mask``; ``only`` restricts to voxels holding those labels."""
        if only is not None:
            cur = self.lab[sl]
            lo, hi = min(only), max(only)
            allowed = (cur >= lo) & (cur <= hi) if hi - lo + 1 == len(only) else np.isin(cur, only)
            mask = mask & allowed
        if hu is not None:
            np.copyto(self.hu[sl], np.asarray(hu, dtype=np.float32), where=mask)
        if label is not None:
            np.copyto(self.lab[sl], np.asarray(label, dtype=np.uint8), where=mask)
            # Later organs (heart, mediastinum) overwrite lung voxels: forget cached lung points.
            for key in [k for k in self.geo if k.startswith("lung_points_")]:
                del self.geo[key]

    def points_where(self, mask: np.ndarray, stride: int = 1) -> np.ndarray:
        """(k, 3) patient coordinates of the voxels of a full-volume mask.

        ``stride`` > 1 keeps every stride-th voxel per axis: enough to pick random locations inside
        a large organ at a fraction of the cost.
        """
        st = np.s_[::stride, ::stride, ::stride]
        i, j, k = np.nonzero(mask[st])
        g = [a[::stride] for a in self.grid.axes]
        return np.stack([g[0][i], g[1][j], g[2][k]], axis=1).astype(np.float64)

    def lung_points(self, side: str | None = None) -> np.ndarray:
        """Patient coordinates of (every other) lung voxel, optionally of one side only."""
        key = f"lung_points_{side}"
        if key not in self.geo:
            if side is None:
                lung = (self.lab >= LUNG_IDS[0]) & (self.lab <= LUNG_IDS[-1])
                pts = self.points_where(lung, stride=2)
            else:
                pts = self.lung_points(None)
                pts = pts[(pts[:, 0] < 0) == (side == "left")]
            self.geo[key] = pts
        return self.geo[key]

    def diaphragm(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """z of the diaphragm surface at (x, y): two domes, lower centrally and in the recesses."""
        b = self.body
        a_c, b_post, b_front = b.cavity
        a_in = a_c - b.shell["rib_band"]
        dome = b.dome_l + (b.dome_r - b.dome_l) / (1.0 + np.exp(-x / 15.0))
        ax = np.abs(x)
        by = np.where(y < 0, b_post, b_front)
        z = dome - 55.0 * ((ax - 55.0) / a_in) ** 2 - 30.0 * (y / by) ** 2
        z = z - 25.0 * np.clip((ax - 0.7 * a_in) / (0.3 * a_in), 0.0, 1.0)
        return z.astype(np.float32)


def _shell(c: Canvas, t: float) -> np.ndarray:
    """Inside the body outline shrunk by t mm (elliptic, narrower towards the thoracic inlet)."""
    b, g = c.body, c.grid
    s = b.shell
    taper = 1.0 - 0.12 * np.clip((g.z - (b.dome_r + 40)) / 120.0, 0.0, 1.0)
    ax = (g.x / (s["half_width"] * taper - t)) ** 2
    by = np.where(g.y < 0, s["back"] - t, s["front"] - t)
    return (ax + (g.y / by) ** 2) <= 1.0


def paint_walls(c: Canvas, tex: np.ndarray) -> dict[str, np.ndarray]:
    """Table, subcutaneous fat, muscle wall, and the cavity filling (mediastinal fat above the
    diaphragm, bowel-like soft tissue with gas below). Returns the shell masks later painters use.
    """
    b, g, hu = c.body, c.grid, c.body.hu
    s = b.shell
    # Table under the patient.
    ty = (
        (g.y > -s["back"] - 26)
        & (g.y < -s["back"] - 18)
        & (np.abs(g.x) < 0.45 * g.n * g.spacing[0])
    )
    c.hu[np.broadcast_to(ty, g.shape)] = 60.0
    outer = _shell(c, 0.0)
    c.paint(np.s_[:], outer, hu["fat"] + 8.0 * tex, 0)
    muscle = _shell(c, s["fat"])
    c.paint(np.s_[:], muscle, hu["muscle"] + 5.0 * tex)
    cavity = _shell(c, s["fat"] + s["muscle"])
    inner = _shell(c, s["fat"] + s["muscle"] + s["rib_band"])
    zd = c.diaphragm(g.x, g.y)  # (n, n, 1)
    c.geo["zd"] = zd
    thorax = g.z > zd
    neck = np.float32(60.0) * (g.z > b.apex - 30)
    fill = np.where(thorax, hu["fat"] + 20.0 + neck + 10.0 * tex, -45.0 + 55.0 * tex)
    fill = np.where(~thorax & (tex > 1.7), -950.0, fill)  # bowel gas
    fill = np.where(~thorax & (g.z > zd - 6), hu["muscle"], fill)  # diaphragm muscle
    c.paint(np.s_[:], inner, fill)
    return {"muscle": muscle, "cavity": cavity, "inner": inner, "thorax": thorax}


def paint_lungs(c: Canvas, m: dict[str, np.ndarray], tex: np.ndarray) -> None:
    """Both lungs (air with a gravity gradient) split into the five TS lobes by two fissures."""
    b, g = c.body, c.grid
    a_c, b_post, b_front = b.cavity
    rb = b.shell["rib_band"]
    a_in, bp_in, bf_in = a_c - rb, b_post - rb, b_front - rb
    hw = b.organs["mediastinum_hw"]
    medi = (np.abs(g.x) < hw) & (g.y > b.spine_y - b.spine_r - 5)
    lung = m["inner"] & m["thorax"] & ~medi & (g.z < b.apex)
    z_t = b.apex - 80.0
    found = g.box((-1e4, -1e4, z_t), (1e4, 1e4, b.apex))
    if found is not None:
        sl, (x, y, z) = found
        s = np.sqrt(np.clip(1.0 - ((z - z_t) / (b.apex - z_t)) ** 2, 1e-4, 1.0))
        cy, sy = 0.5 * (bf_in - bp_in), 0.58 * (bf_in + bp_in)
        env = ((np.abs(x) - 0.5 * a_in) / (0.58 * a_in * s)) ** 2 + ((y - cy) / (sy * s)) ** 2
        lung[sl] &= env <= 1.0
    f0, slope, zh = b.fissure
    lower = g.z < f0 - slope * g.y
    middle = (g.z < zh) & (g.y > -20.0)
    left = g.x < 0
    ids = np.where(left, 10 + lower, np.where(lower, 14, 12 + middle)).astype(np.uint8)
    gravity = 40.0 * np.clip(-g.y / bp_in, 0.0, 1.0)
    c.paint(np.s_[:], lung, b.hu["lung"] + gravity + 12.0 * tex, ids)
    c.geo["lung_inner"] = (a_in, bp_in, bf_in)


def paint_lung_vessels(c: Canvas, rng: np.random.Generator) -> None:
    """Tapering vessels from each hilum to random lung points (partial-volume dots and lines)."""
    b, g = c.body, c.grid
    tx, ty, _ = b.trachea
    pts = c.lung_points()
    hila = {}
    for side, sign in (("left", -1.0), ("right", 1.0)):
        hilum = np.array([tx + sign * 40.0, ty - 5.0, b.carina_z - 35.0])
        hila[side] = hilum
        cand = pts[(pts[:, 0] * sign) > 0]
        if len(cand) == 0:
            continue
        for end in cand[rng.integers(0, len(cand), size=7)]:
            for t0, t1, r in ((0.0, 0.3, 6.5), (0.3, 0.65, 4.0), (0.65, 1.0, 2.5)):
                p0, p1 = hilum + t0 * (end - hilum), hilum + t1 * (end - hilum)
                found = capsule(g, p0, p1, r)
                if found is not None:
                    sl, d2 = found
                    c.paint(sl, d2 <= r * r, b.hu["blood"], only=LUNG_IDS)
    c.geo["hila"] = hila


def paint_abdomen(c: Canvas, m: dict[str, np.ndarray], mods: dict[str, Any]) -> None:
    """Liver (+ veins, gallbladder), stomach with an air-fluid level, spleen, kidneys in perirenal
    fat, pancreas; all below the diaphragm."""
    b, g, hu, o = c.body, c.grid, c.body.hu, c.body.organs
    zd = c.geo["zd"]

    def organ(center, semi, rot=None, value=0.0, label=None, only=None, margin=6.0):
        found = ellipsoid(g, center, semi, rot)
        if found is None:
            return None
        sl, q2 = found
        mask = (q2 <= 1.0) & (g.axes[2][sl[2]][None, None, :] < zd[sl[0], sl[1]] - margin)
        mask &= m["inner"][sl]
        c.paint(sl, mask, value, label, only)
        return sl, q2, mask

    liver_hu = hu["liver"] + mods.get("liver_hu_delta", 0.0)
    lc = np.array(o["liver_center"])
    organ(lc, o["liver_semi"], value=liver_hu, label=TS["liver"])
    organ(lc + [-75.0, 35.0, 25.0], (55.0, 40.0, 35.0), value=liver_hu, label=TS["liver"])
    vessel = hu["blood"] if b.contrast else hu["liver"] - 15.0  # hepatic veins: fixed, not fatty
    for d in ((-60.0, 20.0, 10.0), (40.0, 30.0, -10.0), (10.0, 60.0, 0.0)):
        found = capsule(g, lc + [-30.0, -30.0, 20.0], lc + d, 4.0)
        if found is not None:
            sl, d2 = found
            c.paint(sl, d2 <= 16.0, vessel, only=(TS["liver"],))
    c.geo["liver_hu"] = liver_hu
    organ(lc + [0.0, 50.0, -55.0], (14.0, 14.0, 28.0), value=8.0, label=TS["gallbladder"])
    # Stomach: gastric fluid, air above the air-fluid level (anterior in a supine patient).
    sc, ss = np.array(o["stomach_center"]), np.array(o["stomach_semi"])
    found = organ(sc, ss, rotation(z_deg=-30.0), value=20.0, label=TS["stomach"])
    if found is not None:
        sl, _, mask = found
        air = g.axes[1][sl[1]][None, :, None] > sc[1] + o["stomach_level"] * ss[1]
        c.paint(sl, mask & air, -980.0)
    # Spleen (splenomegaly grows it and pushes it down and forward).
    k = mods.get("spleen_scale", 1.0)
    semi0 = np.array(o["spleen_semi"])
    center = np.array(o["spleen_center"]) + (k - 1.0) * np.array([8.0, 20.0, -0.6 * semi0[2]])
    semi = semi0 * k
    organ(center, semi, rotation(z_deg=o["spleen_angle"]), hu["spleen"], TS["spleen"])
    c.geo["spleen"] = (center, semi)
    # Kidneys in perirenal fat; upper poles tilted medially; right kidney lower.
    z_l1 = b.level_center(31) - o["kidney_jitter"]
    ks = np.array(o["kidney_semi"])
    x_left, x_right = o["kidney_x"]
    for name, sign, x, dz in (
        ("kidney_left", -1.0, x_left, 0.0),
        ("kidney_right", 1.0, x_right, o["kidney_drop"]),
    ):
        kc = np.array([sign * x, o["kidney_y"], z_l1 - dz])
        rot = rotation(y_deg=sign * 15.0)
        organ(kc, ks + 12.0, rot, hu["fat"], 0, only=(0,))
        found = organ(kc, ks, rot, hu["kidney_medulla"], TS[name])
        if found is not None:
            sl, q2, mask = found
            c.paint(sl, mask & (q2 > 0.45), hu["kidney_cortex"])
        c.geo[name] = (kc, ks, rot)
    # Pancreas, inferior vena cava.
    sy, sr = b.spine_y, b.spine_r
    zp = z_l1 + 35.0
    found = capsule(g, (15.0, sy + sr + 40.0, zp), (-60.0, sy + sr + 20.0, zp + 10.0), 12.0)
    if found is not None:
        sl, d2 = found
        mask = (d2 <= 144.0) & m["inner"][sl] & ~m["thorax"][sl]
        c.paint(sl, mask, 40.0 + (50.0 if b.contrast else 0.0), TS["pancreas"], only=(0,))
