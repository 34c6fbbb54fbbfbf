"""The phantom's mediastinum and skeleton: heart, great vessels, esophagus, airway, spine, ribs.

Painted after the lungs and abdominal organs, so these structures displace them. The geometry the
findings need later (heart ellipsoid, aortic and tracheal centre lines) is stored in ``canvas.geo``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cagcl_mini.phantom.body import LUNG_IDS, TS, Canvas
from cagcl_mini.phantom.shapes import capsule, ellipsoid, rotation

SOFT = (0, *LUNG_IDS)  # labels the mediastinal structures may take over


def heart_geometry(c: Canvas, mods: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(center, semi-axes, rotation) of the heart; cardiomegaly grows it leftwards and down."""
    b = c.body
    k = mods.get("heart_scale", 1.0)
    semi0 = np.array(b.heart["semi"])
    semi = semi0 * k
    rot = rotation(z_deg=b.heart["rot"][0], y_deg=b.heart["rot"][1])
    ant_in = b.cavity[2] - b.shell["rib_band"]
    y = min(b.spine_y + b.spine_r + 12.0 + semi[1], ant_in - 0.8 * semi[1])
    x = b.heart["x"] - (k - 1.0) * 0.6 * semi0[0]
    z = float(c.diaphragm(np.float32(x), np.float32(y))) + 0.55 * semi[2]
    return np.array([x, y, z]), semi, rot


def _tube(c: Canvas, segments, value, label, only=SOFT) -> None:
    for p0, p1, r in segments:
        found = capsule(c.grid, p0, p1, r)
        if found is not None:
            sl, d2 = found
            c.paint(sl, d2 <= r * r, value, label, only)


def paint_heart(c: Canvas, m: dict[str, np.ndarray], mods: dict[str, Any]) -> None:
    """Heart on the diaphragm (blood pool, myocardial wall and septum, left atrial appendage),
    its fat pad or pericardial effusion, and the venae cavae entering the right atrium."""
    b, g, hu = c.body, c.grid, c.body.hu
    zd = c.geo["zd"]
    center, semi, rot = heart_geometry(c, mods)
    c.geo["heart"] = (center, semi, rot)
    rim = mods.get("pericardial_mm", 0.0)

    def shell(extra: float, value: float, label: int | None, only=SOFT):
        found = ellipsoid(g, center, semi + extra, rot)
        if found is not None:
            sl, q2 = found
            above = g.axes[2][sl[2]][None, None, :] > zd[sl[0], sl[1]] - 3.0
            c.paint(sl, (q2 <= 1.0) & above & m["inner"][sl], value, label, only)
        return found

    shell(rim + 6.0, hu["fat"] + 10.0, 0)  # epicardial / pericardial fat pad
    if rim > 0:
        shell(rim, mods.get("pericardial_hu", 10.0), TS["heart"])
    # Great veins first, so the heart covers their ends.
    tx, ty, _ = b.trachea
    ra = center + [0.6 * semi[0], -0.2 * semi[1], 0.5 * semi[2]]
    top = g.axes[2][-1] + 20.0
    _tube(c, [((tx + 22.0, ty + 18.0, top), ra, 9.0)], hu["blood"], TS["superior_vena_cava"])
    ivc_end = center + [0.55 * semi[0], -0.3 * semi[1], -0.6 * semi[2]]
    ivc = ((22.0, b.spine_y + b.spine_r + 8.0, g.axes[2][0] - 20.0), ivc_end, 11.0)
    _tube(c, [ivc], hu["blood"], TS["inferior_vena_cava"], only=None)
    found = shell(0.0, hu["blood"], TS["heart"], only=None)
    if found is not None:
        sl, q2 = found
        heart = c.lab[sl] == TS["heart"]
        wall = (1.0 - 10.0 / float(np.mean(semi))) ** 2
        x = g.axes[0][sl[0]][:, None, None] - np.float32(center[0])
        y = g.axes[1][sl[1]][None, :, None] - np.float32(center[1])
        z = g.axes[2][sl[2]][None, None, :] - np.float32(center[2])
        n2 = rot[:, 1].astype(np.float32)  # septum: plane through the centre across the 2nd axis
        septum = np.abs(x * n2[0] + y * n2[1] + z * n2[2]) < 5.0
        c.paint(sl, heart & ((q2 > wall) | septum), hu["myocardium"])
    laa = center + [-0.55 * semi[0], -0.05 * semi[1], 0.55 * semi[2]]
    found = ellipsoid(g, laa, (13.0, 10.0, 12.0))
    if found is not None:
        sl, q2 = found
        c.paint(sl, q2 <= 1.0, hu["blood"], TS["atrial_appendage_left"], (*SOFT, TS["heart"]))


def paint_vessels_and_airway(c: Canvas, masks: dict[str, np.ndarray], mods: dict[str, Any]) -> None:
    """Aorta (root, arch, descending, abdominal), esophagus (+ hiatal hernia), trachea and bronchi."""
    b, g, hu, o = c.body, c.grid, c.body.hu, c.body.organs
    center, semi, _ = c.geo["heart"]
    tx, ty, tr = b.trachea
    sy, sr, zc = b.spine_y, b.spine_r, b.carina_z
    zd_c = float(c.diaphragm(np.float32(-10.0), np.float32(sy + sr)))
    bottom, top = g.axes[2][0] - 20.0, g.axes[2][-1] + 20.0
    k = o["aorta_scale"]
    pts = [
        (center[0] + 30.0, center[1] - 10.0, center[2] + 0.5 * semi[2]),
        (tx + 20.0, ty + 35.0, zc + 5.0),
        (tx - 24.0, ty + 12.0, zc + 28.0),
        (-(sr + 12.0), sy + 8.0, zc + 5.0),
        (-(sr + 10.0), sy + 10.0, zd_c - 20.0),
        (-12.0, sy + sr + 12.0, zd_c - 80.0),
        (-10.0, sy + sr + 14.0, bottom),
    ]
    radii = [16.0 * k, 13.5 * k, 12.5 * k, 12.0 * k, 11.0 * k, 10.0 * k]
    aorta = [
        (np.array(p0), np.array(p1), r) for p0, p1, r in zip(pts[:-1], pts[1:], radii, strict=True)
    ]
    _tube(c, aorta, hu["blood"], TS["aorta"], only=None)
    c.geo["aorta"] = aorta
    er = o["esophagus_r"]
    sc = np.array(o["stomach_center"])
    eso = [
        (tx - 4.0, sy + sr + 9.0, top),
        (tx - 6.0, sy + sr + 10.0, zc - 10.0),
        (-12.0, sy + sr + 14.0, zd_c + 5.0),
        (0.6 * sc[0], sy + sr + 30.0, b.dome_l - 25.0),
    ]
    segments = [(p0, p1, er) for p0, p1 in zip(eso[:-1], eso[1:], strict=True)]
    _tube(c, segments, 40.0, TS["esophagus"], (*SOFT, TS["heart"], TS["liver"], TS["stomach"]))
    if "hernia" in mods:  # behind the heart, pushing into it and the lung bases
        hc, hs, air_hu, fluid_hu = mods["hernia"]
        found = ellipsoid(g, hc, hs)
        if found is not None:
            sl, q2 = found
            air = g.axes[1][sl[1]][None, :, None] > hc[1] + 0.35 * hs[1]
            value = np.where(air, np.float32(air_hu), np.float32(fluid_hu))
            allowed = (*SOFT, TS["heart"], TS["liver"], TS["stomach"], TS["esophagus"])
            c.paint(sl, (q2 <= 1.0) & masks["cavity"][sl], value, TS["esophagus"], allowed)
    carina = np.array([tx, ty, zc])
    airway = [(np.array([tx, ty, top]), carina, tr)]
    for sign in (-1.0, 1.0):
        airway.append((carina, carina + [sign * 42.0, -8.0, -28.0], 0.65 * tr))
    c.geo["trachea"] = airway
    _tube(c, [(a, e, r + 3.0) for a, e, r in airway], 60.0, 0)  # cartilage / wall
    _tube(c, [(a, e, r + 1.5) for a, e, r in airway], None, TS["trachea"], only=(0,))
    _tube(c, airway, -1000.0, None, only=(TS["trachea"],))


def paint_skeleton(c: Canvas, m: dict[str, np.ndarray]) -> None:
    """Autochthon muscles, vertebrae with spinal cord, ribs, costal cartilages and sternum."""
    b, g, hu = c.body, c.grid, c.body.hu
    sy, sr = b.spine_y, b.spine_r
    skin_back = -(b.shell["back"] - b.shell["fat"])
    for sign, name in ((-1.0, "autochthon_left"), (1.0, "autochthon_right")):
        found = ellipsoid(g, (sign * (sr + 14.0), sy - sr - 24.0, 0.0), (20.0, 18.0, 1e5))
        if found is not None:
            sl, q2 = found
            c.paint(sl, (q2 <= 1.0) & m["muscle"][sl], hu["muscle"], TS[name])
    zs = g.axes[2]
    vid = np.zeros(g.n, dtype=np.uint8)
    for v, lo, hi in b.levels:
        vid[(zs >= lo) & (zs < hi)] = v
    radius = np.where((vid > 0) & (vid <= 31), sr + 3.0, sr).astype(np.float32)
    found = g.box((-(sr + 45.0), skin_back, -1e5), (sr + 45.0, sy + sr + 4.0, 1e5))
    if found is None:
        return
    sl, (x, y, _) = found
    vz = vid[None, None, :]
    rz = radius[None, None, :]
    d2 = x * x + (y - sy) ** 2
    column = d2 <= rz * rz
    bone = vz > 0
    cortex = np.where(d2 > (rz - 3.5) ** 2, hu["cortical"], hu["marrow"])
    c.paint(sl, column & bone, cortex, vz)
    c.paint(sl, column & ~bone, 90.0, 0)  # intervertebral discs
    cy = sy - sr - 9.0
    dc2 = x * x + (y - cy) ** 2
    c.paint(sl, np.broadcast_to(dc2 <= 64.0, column.shape), 30.0, TS["spinal_cord"])
    arch = ((dc2 > 64.0) & (dc2 <= 196.0) & (y < cy + 4.0)) | (
        (np.abs(y - cy) < 5.0) & (np.abs(x) < sr + 18.0) & (np.abs(x) > 8.0)
    )
    arch = arch | ((np.abs(x) < 5.0) & (y < cy - 12.0) & (y > skin_back + 10.0))
    c.paint(sl, arch & bone & m["muscle"][sl], 0.7 * hu["cortical"], vz)
    _paint_ribs(c, m)


def _paint_ribs(c: Canvas, m: dict[str, np.ndarray]) -> None:
    b, g, hu = c.body, c.grid, c.body.hu
    a_c, b_post, b_front = b.cavity
    centers = np.array([b.level_center(44 - k) for k in range(1, 13)])  # T1..T12
    lo, hi = centers[-1] - b.rib_drop - 20.0, centers[0] + 15.0
    k0 = max(int(np.ceil((lo - g.origin[2]) / g.spacing[2])), 0)
    k1 = min(int(np.floor((hi - g.origin[2]) / g.spacing[2])) + 1, g.n)
    if k1 <= k0:
        return
    band = m["cavity"][:, :, k0:k1] & ~m["inner"][:, :, k0:k1]
    i, j, k = np.nonzero(band)
    k = k + k0
    x, y, z = g.axes[0][i], g.axes[1][j], g.axes[2][k]
    phi = np.arctan2(np.abs(x) / a_c, -y / np.where(y < 0, b_post, b_front))  # 0 back, pi front
    zz = z + b.rib_drop * (1.0 - np.cos(phi)) / 2.0
    rib = np.rint(np.interp(zz, centers[::-1], np.arange(12, 0, -1))).astype(int)
    on = np.abs(zz - centers[rib - 1]) < 5.5
    phi_end = np.where(rib <= 7, 0.72, np.where(rib <= 10, 0.62, np.where(rib == 11, 0.45, 0.35)))
    phi_end = phi_end * np.pi
    bone = on & (phi < phi_end) & (phi > 0.06 * np.pi)
    ids = np.where(x < 0, 91 + rib, 103 + rib).astype(np.uint8)
    c.hu[i[bone], j[bone], k[bone]] = hu["rib"]
    c.lab[i[bone], j[bone], k[bone]] = ids[bone]
    cart = on & (phi >= phi_end) & (phi < 0.93 * np.pi) & (rib <= 10)
    c.hu[i[cart], j[cart], k[cart]] = 130.0
    c.lab[i[cart], j[cart], k[cart]] = TS["costal_cartilages"]
    center = c.geo["heart"][0]
    st = (np.abs(x) < 14.0) & (y > 0) & (z < b.carina_z + 55.0) & (z > center[2] - 35.0)
    c.hu[i[st], j[st], k[st]] = 0.5 * (hu["marrow"] + hu["cortical"])
    c.lab[i[st], j[st], k[st]] = TS["sternum"]
