"""The MONAI pipeline from a CT-RATE volume's files and metadata to ``image`` and ``anatomy``.

The steps (MONAI dictionary transforms over ``image`` and ``anatomy``):

1. :class:`SafeLoadImaged`: the nibabel reader, checking what it reads, each failure a one-line
   :class:`DataError` naming the file: "<file> is not a readable NIfTI: <reason>" (random bytes,
   truncated data); "<file>: expected a 3-D CT volume (label map), got shape (...)" for 2-D, 4-D
   or 0-size data and for fewer than ``MIN_AXIS_VOXELS`` voxels along an axis (trailing singleton
   axes, as in ``(X, Y, Z, 1)``, are dropped first); complex or structured voxel types; NaN or inf
   voxels (their count); a header affine that is not finite or is singular (pixdim 0, garbage
   qform/sform). Then ``EnsureChannelFirstd``.
2. :class:`CheckPaird`: the label map must have the CT's shape and affine (within
   ``AFFINE_ATOL`` mm), else an error naming both files and both shapes/affines.
3. :class:`MetadataSpacingd`: CT-RATE's original volumes carry a placeholder 1 mm voxel size in the
   header; when every header voxel size is 1.0, the spacing of the metadata CSV (XYSpacing for the
   first two array axes, ZSpacing for the third) replaces it, keeping directions and origin.
   A header with real voxel sizes wins over the CSV.
4. :class:`RescaleHUd`: CT-RATE stores raw int16 and keeps RescaleSlope/RescaleIntercept only in the
   CSV, so HU = raw * slope + intercept. If the NIfTI header itself carries a scaling
   (``scl_slope`` finite, non-zero, and (slope, inter) != (1, 0)), nibabel has already applied it
   while reading and the CSV values are NOT applied a second time. Non-finite HU after the
   rescale (an absurd slope) are an error naming the file and both CSV values.
   :class:`CheckHUd` (``hu_check=True``, the default): air must read about -1000 HU, see below.
5. :class:`TotalSegToAnatomyd`: TotalSegmentator ids -> anatomy ids with ``TOTALSEG_TO_ANATOMY``;
   ids 118..255 are not v2 `total` classes: background, with a warning naming the file and ids;
   ids outside 0..255 or non-integer values raise; a map with no catalog anatomy at all (all 0:
   "no anatomy labelled") loads with a warning naming the file, every anatomy absent.
6. ``Orientationd(axcodes="RAS")``: the index of array axes 0, 1, 2 increases towards the
   patient's Right, Anterior and Superior (so the liver sits at high axis-0 indices).
7. ``ScaleIntensityRanged`` (clip) for the HU window, then ``Resized`` to ``(S, S, S)``: the image
   trilinear with anti-aliasing, the anatomy map ``nearest-exact`` (never invents a label).

Spacing is not resampled (no ``Spacingd``): every volume is resized to the same cube anyway, and the
true spacing stays in the affine used for orientation.

The HU sanity check (:class:`CheckHUd`) catches the silent rescale mistakes: every CT has air
(outside the body, in the lungs or bowel) at about -1000 HU, so the volume's 1st percentile HU
("air") must lie in ``AIR_HU`` (-1100..-900). Voxels at the volume's minimum are left out when that
minimum is below -1100 HU (a scanner's padding outside the reconstruction circle, e.g. -2048 or
-3024), and percentiles are taken on at most ``HU_SAMPLE`` evenly strided voxels. Air up to 150 HU
outside that range (``AIR_HU_MARGIN``) is marginal (a field of view inside the body, a noisy
low-dose scan): a :class:`LayoutWarning`, the volume loads. Further off is a :class:`DataError`
naming the volume and the likely cause: air far below (near -2000 or -9000) means a rescale
applied twice or a wrong intercept, typically a CT-RATE ``_fixed`` volume (already HU) moved out
of its ``<split>_fixed`` folder and given the CSV's RescaleIntercept; air far above (near 0 or +1000
and up) means raw stored values: a missing RescaleIntercept. The 99th percentile must also reach
``BODY_MIN_HU`` (soft tissue), which catches a shift that left a constant air block as padding.
``hu_check=False`` turns the check off (for non-CT data or deliberate experiments).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor, NibabelReader
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    MapTransform,
    Orientationd,
    Resized,
    ScaleIntensityRanged,
)
from monai.utils import ImageMetaKey

from cagcl_mini.anatomy import TOTALSEG_MAX_ID, TOTALSEG_TO_ANATOMY
from cagcl_mini.errors import DataError, LayoutWarning, one_line

AFFINE_ATOL = 1e-3  # mm; CT and label map affines may differ by float32 rounding, not more
KEYS = ("image", "anatomy")
MIN_AXIS_VOXELS = 8  # fewer voxels along an axis is a slice or a stub, not a CT volume
AIR_HU = (-1100.0, -900.0)  # where the 1st percentile (air) of a correctly rescaled CT lies
AIR_HU_MARGIN = 150.0  # this far outside AIR_HU: a warning, not an error
AIR_PERCENTILE, BODY_PERCENTILE = 1.0, 99.0
BODY_MIN_HU = -500.0  # the 99th percentile of a CT with a body in it reads soft tissue or bone
HU_SAMPLE = 1 << 20  # voxels the percentiles are taken on (evenly strided)
_LUT_F32 = TOTALSEG_TO_ANATOMY.astype(np.float32)
_WHAT = {"image": "CT volume", "anatomy": "label map"}


def _filename(tensor: Any) -> str:
    meta = getattr(tensor, "meta", {})
    return str(meta.get("filename_or_obj", "<unknown file>"))


def _check_shape(path: str, shape: tuple[int, ...], what: str) -> tuple[int, int, int]:
    """The 3-D shape of a volume whose stored shape is ``shape`` (trailing singleton axes dropped),
    or a DataError naming the file when it is not a 3-D volume of at least MIN_AXIS_VOXELS a side."""
    dims = tuple(int(n) for n in shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims = dims[:-1]
    if len(dims) != 3 or min(dims) < MIN_AXIS_VOXELS:
        raise DataError(
            f"{path}: expected a 3-D {what}, got shape {tuple(int(n) for n in shape)} "
            f"(at least {MIN_AXIS_VOXELS} voxels along each of 3 axes)"
        )
    return dims  # type: ignore[return-value]


def _check_affine(path: str, affine: np.ndarray) -> None:
    """A DataError naming the file unless the voxel-to-world affine is finite and invertible."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        why = "non-finite entries"
    elif np.linalg.cond(a[:3, :3]) > 1e8 or np.linalg.norm(a[:3, :3], axis=0).min() < 1e-6:
        why = "singular: a voxel size of 0 or collinear axes"
    else:
        return
    with np.printoptions(precision=4, suppress=True):
        shown = one_line(np.array2string(a, separator=","))
    raise DataError(
        f"{path}: the header's voxel-to-world affine is not usable ({why}): {shown}; expected "
        "finite voxel sizes > 0 (pixdim) and a valid qform/sform"
    )


class ScalingNibabelReader(NibabelReader):
    """NibabelReader that records the header scaling nibabel applied while reading.

    nibabel moves ``scl_slope``/``scl_inter`` into the array proxy on load (the header copy reads
    NaN), so the applied (slope, inter) is stored in the meta dict as ``"nifti_scaling"``.
    """

    def _get_meta_dict(self, img) -> dict:
        meta = super()._get_meta_dict(img)
        proxy = img.dataobj
        meta["nifti_scaling"] = np.array(
            [float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))]
        )
        return meta


class SafeLoadImaged(MapTransform):
    """Read NIfTI files with :class:`ScalingNibabelReader` into MetaTensors, refusing (one line,
    naming the file) what is not a finite 3-D volume with a usable affine.

    This is what MONAI's ``LoadImaged`` does with one reader, without its registry of every
    installed reader (which constructs, and warns about, DICOM and other readers it never uses).
    The shape is checked on the header, before any voxel is read. The CT is read as float32, the
    label map in its stored integer type (bool as uint8).
    """

    def __init__(self, keys: Sequence[str] = KEYS) -> None:
        super().__init__(keys)
        self.reader = ScalingNibabelReader()
        self.dtypes = dict(zip(keys, (np.float32, None), strict=False))

    def _read(self, path: str, what: str) -> tuple[np.ndarray, dict]:
        try:
            image = self.reader.read(path)
        except Exception as exc:  # nibabel, gzip and zlib errors of an unreadable file
            raise DataError(f"{path} is not a readable NIfTI: {one_line(exc)}") from exc
        shape = _check_shape(path, image.shape, what)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # nibabel scaling garbage headers
                array, meta = self.reader.get_data(image)
        except Exception as exc:
            raise DataError(
                f"{path} is not a readable NIfTI (corrupt or truncated voxel data): {one_line(exc)}"
            ) from exc
        return np.asarray(array).reshape(shape), meta

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path, what = str(d[key]), _WHAT.get(key, "volume")
            array, meta = self._read(path, what)
            if array.dtype == np.bool_:
                array = array.astype(np.uint8)
            if array.dtype.kind not in "iuf":
                raise DataError(
                    f"{path}: voxel type {array.dtype} is not a real number type; expected an "
                    f"integer or float {what}"
                )
            if self.dtypes.get(key) is not None:
                with np.errstate(over="ignore", invalid="ignore"):
                    array = array.astype(self.dtypes[key], copy=False)
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise DataError(
                    f"{path}: {bad} of {array.size} voxels are not finite (NaN or inf, or beyond "
                    f"float32); expected a finite {what}"
                )
            _check_affine(path, meta["affine"])
            meta[ImageMetaKey.FILENAME_OR_OBJ] = path
            meta[ImageMetaKey.SPATIAL_SHAPE] = np.asarray(array.shape)
            d[key] = MetaTensor.ensure_torch_and_prune_meta(array, meta)
        return d


class CheckPaird(MapTransform):
    """Refuse a label map whose shape or affine disagrees with its CT (names both files)."""

    def __init__(self, keys: Sequence[str] = KEYS, atol: float = AFFINE_ATOL) -> None:
        super().__init__(keys)
        self.atol = atol

    def __call__(self, data: dict) -> dict:
        image, label = data[self.keys[0]], data[self.keys[1]]
        files = f"CT {_filename(image)} and label map {_filename(label)}"
        if tuple(image.shape[1:]) != tuple(label.shape[1:]):
            raise DataError(
                f"{files} differ in shape: {tuple(image.shape[1:])} vs {tuple(label.shape[1:])}"
            )
        a, b = image.affine.numpy(), label.affine.numpy()
        if not np.allclose(a, b, rtol=0, atol=self.atol):
            with np.printoptions(precision=4, suppress=True):
                shown = [one_line(np.array2string(m, separator=",")) for m in (a, b)]
            raise DataError(
                f"{files} differ in affine (tolerance {self.atol} mm): {shown[0]} vs {shown[1]}"
            )
        label.affine = image.affine.clone()
        return data


class MetadataSpacingd(MapTransform):
    """Use the metadata CSV's spacing where the header's voxel size is a 1.0 placeholder."""

    def __init__(self, keys: Sequence[str] = KEYS, spacing_key: str = "spacing") -> None:
        super().__init__(keys)
        self.spacing_key = spacing_key

    def __call__(self, data: dict) -> dict:
        csv_spacing = np.asarray(data[self.spacing_key], dtype=np.float64)
        for key in self.key_iterator(data):
            tensor = data[key]
            affine = tensor.affine.numpy().astype(np.float64)
            sizes = np.linalg.norm(affine[:3, :3], axis=0)
            if np.allclose(sizes, 1.0, rtol=0, atol=1e-6) and not np.allclose(csv_spacing, sizes):
                fixed = affine.copy()
                fixed[:3, :3] = affine[:3, :3] / sizes * csv_spacing
                tensor.affine = torch.as_tensor(fixed)
        return data


class RescaleHUd(MapTransform):
    """HU = stored * RescaleSlope + RescaleIntercept (CSV), unless the header scaled it already."""

    def __init__(self, keys: Sequence[str] = ("image",)) -> None:
        super().__init__(keys)

    @staticmethod
    def header_scaling(tensor: Any) -> tuple[float, float] | None:
        """The (slope, inter) nibabel applied while reading, or None when it applied none."""
        meta = getattr(tensor, "meta", {})
        slope, inter = (float(v) for v in meta.get("nifti_scaling", (1.0, 0.0)))
        if slope == 1.0 and inter == 0.0:
            return None
        return slope, inter

    def __call__(self, data: dict) -> dict:
        slope, intercept = float(data["slope"]), float(data["intercept"])
        for key in self.key_iterator(data):
            tensor = data[key]
            header = self.header_scaling(tensor)
            if header is None:
                hu = tensor.mul_(slope).add_(intercept)  # float32: overflow shows as inf/NaN
                bad = int(hu.numel() - torch.isfinite(hu).sum())
                if bad:
                    raise DataError(
                        f"{_filename(tensor)}: RescaleSlope {slope} and RescaleIntercept "
                        f"{intercept} of the metadata CSV give {bad} non-finite HU voxels; "
                        "expected CT-sized values (slope about 1, intercept about -1024)"
                    )
                data[key] = hu
            elif (slope, intercept) not in ((1.0, 0.0), header):
                warnings.warn(
                    f"{_filename(tensor)}: the NIfTI header scaling {header} was applied by "
                    f"nibabel; the metadata CSV's ({slope}, {intercept}) is ignored",
                    LayoutWarning,
                    stacklevel=2,
                )
        return data


def hu_statistics(hu: np.ndarray) -> tuple[float, float]:
    """(air, body): the 1st and 99th percentile HU of a volume, padding left out.

    Voxels at the minimum are scanner padding when that minimum lies below ``AIR_HU[0]`` and
    other voxels remain; percentiles are taken on at most ``HU_SAMPLE`` evenly strided voxels.
    """
    flat = np.asarray(hu, dtype=np.float32).reshape(-1)
    flat = flat[:: max(1, flat.size // HU_SAMPLE)]
    low = flat.min()
    if low < AIR_HU[0]:
        rest = flat[flat != low]
        flat = rest if rest.size else flat
    air, body = np.percentile(flat, [AIR_PERCENTILE, BODY_PERCENTILE])
    return float(air), float(body)


def hu_problem(air: float, body: float) -> tuple[str, str] | None:
    """``("error" | "warning", cause)`` for a volume whose air/body HU look wrongly rescaled,
    None when they look like a CT in HU."""
    lo, hi = AIR_HU
    too_low = (
        "rescale applied twice or a wrong intercept (a CT-RATE `_fixed` volume is already HU: "
        "keep it in its `<split>_fixed` folder so the CSV's RescaleIntercept is not applied)"
    )
    too_high = (
        "missing RescaleIntercept: raw stored values, not HU (check the metadata CSV's "
        "RescaleSlope/RescaleIntercept, and their sign)"
    )
    if air < lo - AIR_HU_MARGIN:
        return "error", too_low
    if air > hi + AIR_HU_MARGIN:
        return "error", too_high if air > -200.0 else "wrong RescaleSlope or RescaleIntercept"
    if body < BODY_MIN_HU:
        return "error", too_low
    if not lo <= air <= hi:
        return (
            "warning",
            "marginal: a field of view inside the body or a noisy scan? check the rescale",
        )
    return None


class CheckHUd(MapTransform):
    """Refuse a CT whose air does not read about -1000 HU after the rescale (see the module
    docstring): a DataError naming the volume and the likely cause, a warning when marginal."""

    def __init__(self, keys: Sequence[str] = ("image",)) -> None:
        super().__init__(keys)

    def __call__(self, data: dict) -> dict:
        for key in self.key_iterator(data):
            tensor = data[key]
            hu = tensor.as_tensor() if isinstance(tensor, MetaTensor) else torch.as_tensor(tensor)
            air, body = hu_statistics(hu.detach().cpu().numpy())
            problem = hu_problem(air, body)
            if problem is None:
                continue
            kind, cause = problem
            message = (
                f"{_filename(tensor)}: air (1st-percentile HU) reads {air:.0f} and the 99th "
                f"percentile {body:.0f}, expected air in {AIR_HU[0]:.0f}..{AIR_HU[1]:.0f} and "
                f"the 99th percentile above {BODY_MIN_HU:.0f}: {cause}"
            )
            if kind == "warning":
                warnings.warn(message, LayoutWarning, stacklevel=2)
            else:
                raise DataError(f"{message}; hu_check=False loads it anyway")
        return data


class TotalSegToAnatomyd(MapTransform):
    """TotalSegmentator v2 `total` ids -> catalog anatomy ids (0..K), as float32 for resizing."""

    def __init__(self, keys: Sequence[str] = ("anatomy",)) -> None:
        super().__init__(keys)

    def __call__(self, data: dict) -> dict:
        for key in self.key_iterator(data):
            tensor = data[key]
            name = _filename(tensor)
            arr = tensor.numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
            if not np.issubdtype(arr.dtype, np.integer) and not np.array_equal(arr, np.round(arr)):
                raise DataError(f"{name}: label map has non-integer values ({arr.dtype})")
            lo, hi = (arr.min().item(), arr.max().item()) if arr.size else (0, 0)
            if lo < 0 or hi > 255:
                raise DataError(
                    f"{name}: TotalSegmentator ids must lie in 0..255, found {lo:g}..{hi:g}"
                )
            arr = arr.astype(np.int64, copy=False)
            if hi > TOTALSEG_MAX_ID:
                unknown = np.unique(arr[arr > TOTALSEG_MAX_ID]).tolist()
                warnings.warn(
                    f"{name}: ids {unknown} are not TotalSegmentator v2 `total` classes "
                    f"(0..{TOTALSEG_MAX_ID}); mapped to background",
                    LayoutWarning,
                    stacklevel=2,
                )
            mapped = _LUT_F32[arr]  # integer arrays index the lookup table directly
            if not mapped.any():
                found = "every voxel is 0" if hi == 0 else f"ids {np.unique(arr).tolist()[:12]}"
                warnings.warn(
                    f"{name}: no anatomy labelled ({found}): every anatomy will be absent; "
                    "is this the TotalSegmentator `total` map?",
                    LayoutWarning,
                    stacklevel=2,
                )
            data[key] = MetaTensor(torch.from_numpy(mapped), meta=dict(tensor.meta))
        return data


class ToPlaind(MapTransform):
    """End of the pipeline: plain tensors ``image (1,S,S,S) float32``, ``anatomy (S,S,S) uint8``
    (anatomy ids fit a byte; the dataset hands out ``long``, this is what the caches keep)."""

    def __init__(self) -> None:
        super().__init__(KEYS)

    def __call__(self, data: dict) -> dict:
        image = data["image"].as_tensor().to(torch.float32).clamp_(0.0, 1.0).contiguous()
        anatomy = data["anatomy"].as_tensor()[0].round().to(torch.uint8).contiguous()
        return {"image": image, "anatomy": anatomy}


HU_WINDOW: tuple[float, float] = (-1000.0, 1000.0)  # the image's HU range, mapped to [0, 1]


def build_pipeline(
    size: int = 64,
    hu_window: tuple[float, float] = HU_WINDOW,
    hu_check: bool = True,
) -> Compose:
    """The deterministic MONAI pipeline from file paths + metadata to ``image``/``anatomy``.

    ``hu_check`` runs :class:`CheckHUd` after the rescale (air must read about -1000 HU); turn it
    off only for data that is not CT in HU on purpose.
    """
    lo, hi = hu_window
    return Compose(
        [
            SafeLoadImaged(KEYS),
            EnsureChannelFirstd(KEYS, channel_dim="no_channel"),
            CheckPaird(KEYS),
            MetadataSpacingd(KEYS),
            RescaleHUd(("image",)),
            *([CheckHUd(("image",))] if hu_check else []),
            TotalSegToAnatomyd(("anatomy",)),
            Orientationd(KEYS, axcodes="RAS", labels=None),
            ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
            Resized("image", (size,) * 3, mode="trilinear", anti_aliasing=True),
            Resized("anatomy", (size,) * 3, mode="nearest-exact"),
            ToPlaind(),
        ]
    )
