"""The MONAI pipeline from a CT-RATE volume's files and metadata to ``image`` and ``anatomy``.

The steps (MONAI dictionary transforms over ``image`` and ``anatomy``):

1. :class:`SafeLoadImaged`: the nibabel reader, so a damaged file raises :class:`DataError`
   "<file> is corrupt or truncated: <reason>"; then ``EnsureChannelFirstd``.
2. :class:`CheckPaird`: the label map must have the CT's shape and affine (within
   ``AFFINE_ATOL`` mm), else an error naming both files and both shapes/affines.
3. :class:`MetadataSpacingd`: CT-RATE's original volumes carry a placeholder 1 mm voxel size in the
   header; when every header voxel size is 1.0, the spacing of the metadata CSV (XYSpacing for the
   first two array axes, ZSpacing for the third) replaces it, keeping directions and origin.
   A header with real voxel sizes wins over the CSV.
4. :class:`RescaleHUd`: CT-RATE stores raw int16 and keeps RescaleSlope/RescaleIntercept only in the
   CSV, so HU = raw * slope + intercept. If the NIfTI header itself carries a scaling
   (``scl_slope`` finite, non-zero, and (slope, inter) != (1, 0)), nibabel has already applied it
   while reading and the CSV values are NOT applied a second time.
5. :class:`TotalSegToAnatomyd`: TotalSegmentator ids -> anatomy ids with ``TOTALSEG_TO_ANATOMY``;
   ids 118..255 are not v2 `total` classes: background, with a warning naming the file and ids;
   ids outside 0..255 or non-integer values raise.
6. ``Orientationd(axcodes="RAS")``: the index of array axes 0, 1, 2 increases towards the
   patient's Right, Anterior and Superior (so the liver sits at high axis-0 indices).
7. ``ScaleIntensityRanged`` (clip) for the HU window, then ``Resized`` to ``(S, S, S)``: the image
   trilinear with anti-aliasing, the anatomy map ``nearest-exact`` (never invents a label).

Spacing is not resampled (no ``Spacingd``): every volume is resized to the same cube anyway, and the
true spacing stays in the affine used for orientation.
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
from cagcl_mini.errors import DataError, LayoutWarning

AFFINE_ATOL = 1e-3  # mm; CT and label map affines may differ by float32 rounding, not more
KEYS = ("image", "anatomy")
_LUT_F32 = TOTALSEG_TO_ANATOMY.astype(np.float32)


def _filename(tensor: Any) -> str:
    meta = getattr(tensor, "meta", {})
    return str(meta.get("filename_or_obj", "<unknown file>"))


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
    """Read NIfTI files with :class:`ScalingNibabelReader` into MetaTensors, naming the file when
    one cannot be read.

    This is what MONAI's ``LoadImaged`` does with one reader, without its registry of every
    installed reader (which constructs, and warns about, DICOM and other readers it never uses).
    The CT is read as float32, the label map in its stored integer type.
    """

    def __init__(self, keys: Sequence[str] = KEYS) -> None:
        super().__init__(keys)
        self.reader = ScalingNibabelReader()
        self.dtypes = dict(zip(keys, (np.float32, None), strict=False))

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            try:
                array, meta = self.reader.get_data(self.reader.read(path))
            except Exception as exc:  # nibabel, gzip and zlib errors of an unreadable file
                raise DataError(f"{path} is corrupt or truncated: {exc}") from exc
            if self.dtypes.get(key) is not None:
                array = array.astype(self.dtypes[key], copy=False)
            meta[ImageMetaKey.FILENAME_OR_OBJ] = path
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
                raise DataError(
                    f"{files} differ in affine (tolerance {self.atol} mm):\n{a}\nvs\n{b}"
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
                data[key] = tensor.mul_(slope).add_(intercept)
            elif (slope, intercept) not in ((1.0, 0.0), header):
                warnings.warn(
                    f"{_filename(tensor)}: the NIfTI header scaling {header} was applied by "
                    f"nibabel; the metadata CSV's ({slope}, {intercept}) is ignored",
                    LayoutWarning,
                    stacklevel=2,
                )
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
            if not np.issubdtype(arr.dtype, np.integer):
                if not np.array_equal(arr, np.round(arr)):
                    raise DataError(f"{name}: label map has non-integer values ({arr.dtype})")
                arr = arr.astype(np.int64)
            lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
            if lo < 0 or hi > 255:
                raise DataError(
                    f"{name}: TotalSegmentator ids must lie in 0..255, found {lo}..{hi}"
                )
            if hi > TOTALSEG_MAX_ID:
                unknown = np.unique(arr[arr > TOTALSEG_MAX_ID]).tolist()
                warnings.warn(
                    f"{name}: ids {unknown} are not TotalSegmentator v2 `total` classes "
                    f"(0..{TOTALSEG_MAX_ID}); mapped to background",
                    LayoutWarning,
                    stacklevel=2,
                )
            mapped = _LUT_F32[arr]  # integer arrays index the lookup table directly
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


def build_pipeline(size: int = 64, hu_window: tuple[float, float] = (-1000.0, 1000.0)) -> Compose:
    """The deterministic MONAI pipeline from file paths + metadata to ``image``/``anatomy``."""
    lo, hi = hu_window
    return Compose(
        [
            SafeLoadImaged(KEYS),
            EnsureChannelFirstd(KEYS, channel_dim="no_channel"),
            CheckPaird(KEYS),
            MetadataSpacingd(KEYS),
            RescaleHUd(("image",)),
            TotalSegToAnatomyd(("anatomy",)),
            Orientationd(KEYS, axcodes="RAS", labels=None),
            ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
            Resized("image", (size,) * 3, mode="trilinear", anti_aliasing=True),
            Resized("anatomy", (size,) * 3, mode="nearest-exact"),
            ToPlaind(),
        ]
    )
