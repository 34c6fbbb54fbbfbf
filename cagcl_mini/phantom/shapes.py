"""Vectorised shape primitives for the phantom: a voxel grid in millimetres and solids on it.

Every solid is evaluated only on the voxels of its bounding box (a view of the volume), so a small
nodule costs a few hundred voxel operations, not a pass over the whole volume. Coordinates are in the
patient frame the phantom uses throughout: +x towards the patient's right, +y anterior, +z superior
(RAS+), origin on the body axis near the diaphragm, millimetres.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[slice, slice, slice]
Vec = Sequence[float]


class Grid:
    """Voxel-centre coordinates of an ``(n, n, n)`` volume, one 1-D float32 array per axis."""

    def __init__(self, n: int, spacing: Vec, origin: Vec) -> None:
        self.n = int(n)
        self.spacing = tuple(float(s) for s in spacing)
        self.origin = tuple(float(o) for o in origin)
        idx = np.arange(self.n, dtype=np.float32)
        self.axes = tuple(
            (np.float32(o) + np.float32(s) * idx).astype(np.float32)
            for o, s in zip(self.origin, self.spacing, strict=True)
        )
        self.x = self.axes[0][:, None, None]
        self.y = self.axes[1][None, :, None]
        self.z = self.axes[2][None, None, :]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n, self.n, self.n)

    def box(self, lo: Vec, hi: Vec) -> tuple[Box, tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """Slices of the voxels whose centres lie in ``[lo, hi]`` and their broadcastable coords.

        Returns None when the box misses the volume.
        """
        slices = []
        coords = []
        for axis in range(3):
            o, s = self.origin[axis], self.spacing[axis]
            i0 = max(int(np.ceil((lo[axis] - o) / s)), 0)
            i1 = min(int(np.floor((hi[axis] - o) / s)) + 1, self.n)
            if i1 <= i0:
                return None
            slices.append(slice(i0, i1))
            coords.append(self.axes[axis][i0:i1])
        cx, cy, cz = coords
        return tuple(slices), (cx[:, None, None], cy[None, :, None], cz[None, None, :])


def rotation(z_deg: float = 0.0, y_deg: float = 0.0, x_deg: float = 0.0) -> np.ndarray:
    """Rotation matrix R = Rz @ Ry @ Rx (degrees); its columns are the solid's axes in the frame."""
    a, b, c = np.deg2rad([z_deg, y_deg, x_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


def ellipsoid(
    grid: Grid, center: Vec, semi: Vec, rot: np.ndarray | None = None
) -> tuple[Box, np.ndarray] | None:
    """Bounding-box slices and the squared normalised radius q2 (q2 <= 1 inside) of an ellipsoid."""
    c = np.asarray(center, dtype=np.float64)
    s = np.asarray(semi, dtype=np.float64)
    half = s if rot is None else np.sqrt(((rot * s[None, :]) ** 2).sum(axis=1))
    found = grid.box(c - half, c + half)
    if found is None:
        return None
    sl, (x, y, z) = found
    dx, dy, dz = x - np.float32(c[0]), y - np.float32(c[1]), z - np.float32(c[2])
    if rot is None:
        q2 = (dx / np.float32(s[0])) ** 2 + (dy / np.float32(s[1])) ** 2
        q2 = q2 + (dz / np.float32(s[2])) ** 2
    else:
        q2 = None
        for k in range(3):
            r = rot[:, k].astype(np.float32)
            u = (dx * r[0] + dy * r[1] + dz * r[2]) / np.float32(s[k])
            q2 = u * u if q2 is None else q2 + u * u
    return sl, q2


def capsule(grid: Grid, p0: Vec, p1: Vec, radius: float) -> tuple[Box, np.ndarray] | None:
    """Bounding-box slices and the squared distance (mm^2) to the segment p0-p1, out to radius."""
    a = np.asarray(p0, dtype=np.float64)
    b = np.asarray(p1, dtype=np.float64)
    found = grid.box(np.minimum(a, b) - radius, np.maximum(a, b) + radius)
    if found is None:
        return None
    sl, (x, y, z) = found
    d = (b - a).astype(np.float32)
    dd = float(d @ d)
    px, py, pz = x - np.float32(a[0]), y - np.float32(a[1]), z - np.float32(a[2])
    if dd > 0:
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / np.float32(dd), 0.0, 1.0)
        px, py, pz = px - t * d[0], py - t * d[1], pz - t * d[2]
    return sl, px * px + py * py + pz * pz


def smooth_field(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """A smooth random field (n, n, n), float32, unit-ish variance: coarse noise, trilinear upsampled.

    The coarse lattice has ``cells + 1`` nodes per axis, so features are about ``n / cells`` voxels
    wide. Three small matrix products instead of an interpolation routine keep it cheap.
    """
    m = cells + 1
    coarse = rng.standard_normal((m, m, m)).astype(np.float32)
    t = np.linspace(0.0, cells, n)
    i0 = np.minimum(t.astype(int), cells - 1)
    w = (t - i0).astype(np.float32)
    up = np.zeros((n, m), dtype=np.float32)
    up[np.arange(n), i0] = 1.0 - w
    up[np.arange(n), i0 + 1] += w
    f = (up @ coarse.reshape(m, m * m)).reshape(n, m, m)
    f = f @ up.T  # (n, m, n): last axis upsampled
    f = np.matmul(up[None], f)  # (n, n, n): middle axis upsampled, batched over the first
    # Linear interpolation keeps (2/3)^3 of the variance on average; undo that.
    return np.ascontiguousarray(f * np.float32(1.0 / np.sqrt((2.0 / 3.0) ** 3)), dtype=np.float32)


def blur(volume: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Separable symmetric convolution along all three axes, edges replicated (float32).

    Same result as ``scipy.ndimage.gaussian_filter(mode="nearest")`` with these weights, about three
    times faster for the 5-tap kernels the phantom uses (shifted adds instead of a line buffer).
    """
    r = len(weights) // 2
    out = volume
    for axis in range(3):
        pad = [(r, r) if a == axis else (0, 0) for a in range(3)]
        p = np.pad(out, pad, mode="edge")
        n = out.shape[axis]

        def shifted(k: int, p=p, axis=axis, n=n) -> np.ndarray:
            idx = [slice(None)] * 3
            idx[axis] = slice(r + k, r + k + n)
            return p[tuple(idx)]

        acc = np.float32(weights[r]) * out
        for k in range(1, r + 1):
            acc += np.float32(weights[r + k]) * (shifted(k) + shifted(-k))
        out = acc
    return out


def gaussian_weights(sigma: float, truncate: float) -> np.ndarray:
    """The normalised 1-D kernel scipy.ndimage.gaussian_filter uses for (sigma, truncate)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()
