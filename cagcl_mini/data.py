"""The CT-report dataset: CT-RATE-layout volumes through a MONAI pipeline, per-anatomy texts, collate.

One item is a dict (shapes for ``size = S``, ``K = NUM_ANATOMIES``, ``A = len(ALL_LABELS)``)::

    image    (1, S, S, S) float32 in [0, 1]: HU clipped to ``hu_window = (lo, hi)``, (HU - lo) / (hi - lo)
    anatomy  (S, S, S) long, 0 background, 1..K catalog anatomies (TotalSegmentator v2 ids mapped)
    present  (K,) bool: the anatomy has >= ``min_anatomy_voxels`` voxels in the resized map
    texts    K strings: ``reports.split_report(Findings_EN)`` per catalog anatomy, "" where absent
    abnormal (K,) bool: ``reports.is_abnormal`` of that text, False where absent
    labels   (A,) float32 in ``ALL_LABELS`` order (labels CSV; missing columns are 0)
    id       VolumeName without ``.nii.gz``;  report: the full Findings_EN

The volume pipeline (MONAI dictionary transforms over ``image`` and ``anatomy``):

1. ``LoadImaged`` with the nibabel reader, wrapped so a damaged file raises
   :class:`DataError` "<file> is corrupt or truncated: <reason>"; then ``EnsureChannelFirstd``.
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

Caching (``cache=``): ``False`` runs the pipeline on every access; ``True``/``"memory"`` keeps the
pipeline outputs in RAM (``monai.data.CacheDataset``, filled on first access, per DataLoader worker
process); ``"disk"`` or a folder stores them as ``.pt`` files (``monai.data.PersistentDataset``)
under ``paths.home()/"cache"/"ctrate"`` (or that folder), in a sub-folder keyed by size, window and
pipeline version, each file keyed by the volume's paths, metadata and file stamps (size, mtime).
A user ``transform`` runs after the cache, on the item dict.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset, MetaTensor, NibabelReader, PersistentDataset
from monai.data import Dataset as MonaiDataset
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    Orientationd,
    Resized,
    ScaleIntensityRanged,
)

from cagcl_mini import paths
from cagcl_mini.anatomy import (
    ALL_LABELS,
    ANATOMY_NAMES,
    NUM_ANATOMIES,
    TOTALSEG_MAX_ID,
    TOTALSEG_TO_ANATOMY,
)
from cagcl_mini.ctrate_layout import (
    DataError,
    LayoutWarning,
    VolumeRecord,
    check_split,
    index_split,
    resolve_dataset_dir,
)
from cagcl_mini.reports import is_abnormal, split_report

__all__ = ["CTReportDataset", "DataError", "LayoutWarning", "build_pipeline", "collate"]

AFFINE_ATOL = 1e-3  # mm; CT and label map affines may differ by float32 rounding, not more
PIPELINE_VERSION = 1  # bump when the pipeline's output changes, to invalidate disk caches
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
    """``LoadImaged`` (nibabel reader) that names the file when it cannot be read."""

    def __init__(self, keys: Sequence[str] = KEYS) -> None:
        super().__init__(keys)
        # The CT as float32; the label map in its stored integer type.
        self._loaders = {
            key: LoadImaged(key, reader=ScalingNibabelReader(), image_only=True, dtype=dtype)
            for key, dtype in zip(keys, (np.float32, None), strict=False)
        }

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            try:
                d = self._loaders[key](d)
            except Exception as exc:  # nibabel/gzip/zlib/MONAI errors of an unreadable file
                reason = exc.__cause__ if isinstance(exc, RuntimeError) and exc.__cause__ else exc
                raise DataError(f"{path} is corrupt or truncated: {reason}") from exc
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
    """End of the pipeline: plain tensors ``image (1,S,S,S) float32``, ``anatomy (S,S,S) long``."""

    def __init__(self) -> None:
        super().__init__(KEYS)

    def __call__(self, data: dict) -> dict:
        image = data["image"].as_tensor().to(torch.float32).clamp_(0.0, 1.0).contiguous()
        anatomy = data["anatomy"].as_tensor()[0].round().to(torch.long).contiguous()
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


def _data_error_in(exc: BaseException) -> DataError | None:
    """The DataError MONAI's ``RuntimeError("applying transform ...")`` wraps, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DataError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _pipeline_input(rec: VolumeRecord, stamp: bool) -> dict:
    item = {
        "image": str(rec.image),
        "anatomy": str(rec.label),
        "spacing": list(rec.spacing),
        "slope": rec.slope,
        "intercept": rec.intercept,
    }
    if stamp:  # invalidates disk-cache entries when a file changes
        item["stamp"] = [[p.stat().st_size, p.stat().st_mtime_ns] for p in (rec.image, rec.label)]
    return item


class CTReportDataset(torch.utils.data.Dataset):
    """CT volumes, anatomy maps, per-anatomy report texts and labels of one CT-RATE-layout split.

    ``root`` is the folder holding ``dataset/`` or ``dataset/`` itself. See the module docstring for
    the item layout, the pipeline and the cache options.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        size: int = 64,
        cache: bool | str | Path = False,
        hu_window: tuple[float, float] = (-1000.0, 1000.0),
        min_anatomy_voxels: int = 1,
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        check_split(split)
        if int(size) < 1:
            raise ValueError(f"size must be a positive edge length, got {size}")
        lo, hi = (float(v) for v in hu_window)
        if not lo < hi:
            raise ValueError(f"hu_window must be (low, high) with low < high, got {hu_window}")
        if int(min_anatomy_voxels) < 1:
            raise ValueError(f"min_anatomy_voxels must be >= 1, got {min_anatomy_voxels}")
        self.dataset_dir = resolve_dataset_dir(root)
        self.split, self.size, self.hu_window = split, int(size), (lo, hi)
        self.min_anatomy_voxels = int(min_anatomy_voxels)
        self.transform = transform
        self.records: list[VolumeRecord] = index_split(self.dataset_dir, split)
        self._texts: dict[int, tuple[list[str], list[bool]]] = {}
        pipeline = build_pipeline(self.size, self.hu_window)
        self._in_memory = cache is True or cache == "memory"
        self.cache_dir: Path | None = None  # set for disk caches
        disk = cache not in (False, None) and not self._in_memory
        items = [_pipeline_input(r, stamp=disk) for r in self.records]
        if cache is False or cache is None:
            self._volumes = MonaiDataset(items, pipeline)
        elif self._in_memory:
            self._volumes = CacheDataset(items, pipeline, runtime_cache=True, progress=False)
        else:
            self.cache_dir = self._cache_dir(cache)
            self._volumes = PersistentDataset(items, pipeline, cache_dir=self.cache_dir)

    def _cache_dir(self, cache: str | Path) -> Path:
        base = paths.home() / "cache" / "ctrate" if cache == "disk" else Path(cache).expanduser()
        key = json.dumps([self.size, self.hu_window, PIPELINE_VERSION])
        return base / f"s{self.size}_{hashlib.sha1(key.encode()).hexdigest()[:10]}"

    @property
    def volume_names(self) -> list[str]:
        """VolumeNames (with ``.nii.gz``) in item order."""
        return [r.name for r in self.records]

    @property
    def ids(self) -> list[str]:
        """Item ids (VolumeName without ``.nii.gz``) in item order."""
        return [r.id for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def label_table(self) -> pd.DataFrame:
        """The split's labels as a table (rows: item ids, columns: ALL_LABELS), read from the CSV
        index only, so label statistics need no volume loading."""
        return pd.DataFrame(
            np.stack([r.labels for r in self.records]) if self.records else None,
            index=self.ids,
            columns=list(ALL_LABELS),
        )

    def anatomy_texts(self, index: int) -> tuple[list[str], list[bool]]:
        """Per-anatomy texts of the report and their abnormal flags, before the presence mask."""
        if index not in self._texts:
            parts = split_report(self.records[index].findings)
            texts = [parts[name] for name in ANATOMY_NAMES]
            flags = [bool(is_abnormal(n, t)) for n, t in zip(ANATOMY_NAMES, texts, strict=True)]
            self._texts[index] = (texts, flags)
        return self._texts[index]

    def load_volume(self, index: int) -> dict[str, torch.Tensor]:
        """The pipeline output ``{"image", "anatomy"}`` of one volume (cached if configured)."""
        try:
            out = self._volumes[index]
        except RuntimeError as exc:
            err = _data_error_in(exc)
            if err is None:
                raise
            raise err from None
        if self._in_memory:  # the cache hands out its own tensors; keep them pristine
            out = {k: v.clone() for k, v in out.items()}
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} volumes")
        index %= len(self)
        rec = self.records[index]
        vol = self.load_volume(index)
        counts = torch.bincount(vol["anatomy"].reshape(-1), minlength=NUM_ANATOMIES + 1)
        present = counts[1 : NUM_ANATOMIES + 1] >= self.min_anatomy_voxels
        texts, flags = self.anatomy_texts(index)
        keep = present.tolist()
        item = {
            "image": vol["image"],
            "anatomy": vol["anatomy"],
            "present": present,
            "texts": [t if p else "" for t, p in zip(texts, keep, strict=True)],
            "abnormal": torch.tensor([f and p for f, p in zip(flags, keep, strict=True)]),
            "labels": torch.from_numpy(rec.labels.copy()),
            "id": rec.id,
            "report": rec.findings,
        }
        return self.transform(item) if self.transform is not None else item


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: tensors stacked on a new first axis, everything else (texts, id...) as lists."""
    if not items:
        raise ValueError("collate needs at least one item")
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch
