"""The CT-report dataset: CT-RATE-layout volumes through a MONAI pipeline, per-anatomy texts, collate.

One item is a dict (shapes for ``size = S``, ``K = NUM_ANATOMIES``, ``A = len(ALL_LABELS)``)::

    image    (1, S, S, S) float32 in [0, 1]: HU clipped to ``hu_window = (lo, hi)``, (HU - lo) / (hi - lo)
    anatomy  (S, S, S) long, 0 background, 1..K catalog anatomies (TotalSegmentator v2 ids mapped)
    present  (K,) bool: the anatomy has >= ``min_anatomy_voxels`` voxels in the resized map
    texts    K strings: ``text.reports.split_report(Findings_EN)`` per catalog anatomy, "" where absent
    abnormal (K,) bool: ``text.findings.is_abnormal`` of that text, False where absent
    labels   (A,) float32 in ``ALL_LABELS`` order (labels CSV; missing columns are 0)
    id       VolumeName without ``.nii.gz``;  report: the full Findings_EN

The volume pipeline is :func:`cagcl_mini.data.transforms.build_pipeline`.

Caching (``cache=``): ``False`` runs the pipeline on every access; ``True``/``"memory"`` keeps the
pipeline outputs in RAM (``monai.data.CacheDataset``, filled on first access, per DataLoader worker
process); ``"disk"`` or a folder stores them as ``.pt`` files (``monai.data.PersistentDataset``)
under ``paths.home()/"cache"/"ctrate"`` (or that folder), in a sub-folder keyed by size, window and
pipeline version, each file keyed by the volume's paths, metadata and file stamps (size, mtime);
``"disk+memory"`` also keeps each volume in RAM once read (a run's later epochs read no file).
A user ``transform`` runs after the cache, on the item dict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset, PersistentDataset
from monai.data import Dataset as MonaiDataset

from cagcl_mini import paths
from cagcl_mini.anatomy import ALL_LABELS, ANATOMY_NAMES, NUM_ANATOMIES
from cagcl_mini.data.index import VolumeRecord, index_split
from cagcl_mini.data.transforms import HU_WINDOW, build_pipeline
from cagcl_mini.errors import DataError
from cagcl_mini.layout import check_split, resolve_dataset_dir
from cagcl_mini.text.findings import is_abnormal
from cagcl_mini.text.reports import split_report

DISK_AND_MEMORY = "disk+memory"  # the disk cache, then each volume kept in RAM once loaded
PIPELINE_VERSION = 2  # bump when the pipeline's output changes, to invalidate disk caches


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
    the item layout, the pipeline and the cache options. ``hu_check`` (on by default) refuses a CT
    whose air does not read about -1000 HU after the rescale, naming the volume and the likely
    cause (rescale applied twice, missing intercept); see :mod:`cagcl_mini.data.transforms`.
    Bad files raise :class:`DataError` with one line naming the file when an item is read.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        size: int = 64,
        cache: bool | str | Path = False,
        hu_window: tuple[float, float] = HU_WINDOW,
        min_anatomy_voxels: int = 1,
        transform: Callable[[dict], dict] | None = None,
        hu_check: bool = True,
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
        self.hu_check = bool(hu_check)
        self.records: list[VolumeRecord] = index_split(self.dataset_dir, split)
        self._texts: dict[int, tuple[list[str], list[bool]]] = {}
        pipeline = build_pipeline(self.size, self.hu_window, hu_check=self.hu_check)
        self._in_memory = cache is True or cache == "memory"
        self._memo: dict[int, dict[str, torch.Tensor]] | None = None
        if cache == DISK_AND_MEMORY:
            cache, self._memo = "disk", {}
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
        unchecked = [] if self.hu_check else ["no-hu-check"]  # default caches keep their names
        key = json.dumps([self.size, self.hu_window, PIPELINE_VERSION, *unchecked])
        return base / f"s{self.size}_{hashlib.sha1(key.encode()).hexdigest()[:10]}"

    def fingerprint(self) -> str | None:
        """A digest of everything an item depends on: the pipeline settings, each record (paths,
        report, labels, spacing, rescale) and each volume's and map's size and mtime, so a
        changed file or CSV changes it. None with a user ``transform`` (code cannot be hashed):
        what depends on the items then cannot be cached."""
        if self.transform is not None:
            return None
        digest = hashlib.sha256()
        settings = [self.split, self.size, self.hu_window, self.min_anatomy_voxels, self.hu_check]
        digest.update(json.dumps([*settings, PIPELINE_VERSION, str(self.dataset_dir)]).encode())
        for rec in self.records:
            stamps = [[p.stat().st_size, p.stat().st_mtime_ns] for p in (rec.image, rec.label)]
            fields = [rec.name, str(rec.image), str(rec.label), rec.findings, rec.impressions]
            fields += [rec.labels.tolist(), list(rec.spacing), rec.slope, rec.intercept, stamps]
            digest.update(json.dumps(fields).encode())
        return digest.hexdigest()

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
        """The pipeline output ``{"image", "anatomy" (long)}`` of one volume (cached if configured)."""
        out = self._memo.get(index) if self._memo is not None else None
        if out is None:
            try:
                out = self._volumes[index]
            except RuntimeError as exc:
                err = _data_error_in(exc)
                if err is None:
                    raise
                raise err from None
            if self._memo is not None:
                self._memo[index] = out
        kept = self._in_memory or self._memo is not None
        image = out["image"].clone() if kept else out["image"]  # keep a cache pristine
        return {"image": image, "anatomy": out["anatomy"].long()}  # uint8 in the caches

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
