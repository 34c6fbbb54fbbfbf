"""The CT-RATE folder layout that ``cagcl_mini.data`` reads, and atomic CSV updates in it.

```
<root>/dataset/<split>/<split>_<pid>/<split>_<pid>_<scan>/<split>_<pid>_<scan>_<rec>.nii.gz
<root>/dataset/ts_seg/ts_total/<split>/...same relative path...        (TotalSegmentator v2)
<root>/dataset/radiology_text_reports/{train_reports,validation_reports}.csv
<root>/dataset/multi_abnormality_labels/{train,valid}_predicted_labels.csv
<root>/dataset/metadata/{train,validation}_metadata.csv
```
Every source writes here with CT-RATE's own (inconsistent) file names, so one loader reads all.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

SPLITS: tuple[str, ...] = ("train", "valid")
REPORTS_CSV = {"train": "train_reports.csv", "valid": "validation_reports.csv"}
LABELS_CSV = {"train": "train_predicted_labels.csv", "valid": "valid_predicted_labels.csv"}
METADATA_CSV = {"train": "train_metadata.csv", "valid": "validation_metadata.csv"}
CSV_FOLDERS = {
    "reports": ("radiology_text_reports", REPORTS_CSV),
    "labels": ("multi_abnormality_labels", LABELS_CSV),
    "metadata": ("metadata", METADATA_CSV),
}
MASK_FOLDER = PurePosixPath("ts_seg/ts_total")
NIFTI_SUFFIX = ".nii.gz"
_VOLUME = re.compile(r"^(train|valid)_(\d+)_([A-Za-z]+)_(\d+)(?:\.nii\.gz)?$")


def check_split(split: str) -> str:
    """Return ``split`` if it is one of the layout's splits, else raise naming the valid ones."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def volume_name(split: str, pid: int, scan: str = "a", rec: int = 1) -> str:
    """The CT-RATE ``VolumeName`` (with ``.nii.gz``) of one reconstruction."""
    return f"{check_split(split)}_{pid}_{scan}_{rec}{NIFTI_SUFFIX}"


def parse_volume_name(name: str) -> tuple[str, int, str, int]:
    """(split, patient id, scan letter, reconstruction) of a CT-RATE volume name."""
    match = _VOLUME.match(PurePosixPath(name).name)
    if not match:
        raise ValueError(
            f"volume name {name!r} is not of the form <split>_<pid>_<scan>_<rec>.nii.gz "
            "with split train or valid"
        )
    split, pid, scan, rec = match.groups()
    return split, int(pid), scan, int(rec)


def volume_relpath(name: str, folder: str | None = None) -> PurePosixPath:
    """``<folder>/<split>_<pid>/<split>_<pid>_<scan>/<name>``; folder defaults to the split."""
    split, pid, scan, rec = parse_volume_name(name)
    stem = f"{split}_{pid}_{scan}_{rec}"
    return PurePosixPath(
        folder or split, f"{split}_{pid}", f"{split}_{pid}_{scan}", stem + NIFTI_SUFFIX
    )


def ct_path(root: Path, name: str) -> Path:
    """Where the CT volume ``name`` lives under a dataset root."""
    return Path(root) / "dataset" / volume_relpath(name)


def mask_path(root: Path, name: str) -> Path:
    """Where the TotalSegmentator v2 label map of volume ``name`` lives under a dataset root."""
    return Path(root) / "dataset" / MASK_FOLDER / volume_relpath(name)


def csv_path(root: Path, kind: str, split: str) -> Path:
    """The CSV of ``kind`` (reports, labels, metadata) for ``split`` under a dataset root."""
    folder, names = CSV_FOLDERS[kind]
    return Path(root) / "dataset" / folder / names[check_split(split)]


def natural_key(text: str) -> tuple:
    """Sort key that orders ``valid_2`` before ``valid_10``."""
    return tuple(
        (0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(text))
    )


def spacing_columns(zooms: Iterable[float]) -> dict[str, Any]:
    """CT-RATE metadata spacing fields from NIfTI zooms (x, y, z) in millimetres."""
    x, y, z = (round(float(v), 6) for v in list(zooms)[:3])
    return {"XYSpacing": f"[{x}, {y}]", "ZSpacing": z}


def atomic_write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            frame.to_csv(fh, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def upsert_rows(
    path: Path, rows: pd.DataFrame | Iterable[Mapping[str, Any]], key: str = "VolumeName"
) -> Path:
    """Insert or replace rows (matched on ``key``) in the CSV at ``path``, keeping natural order.

    Rows already there for other volumes stay, so several runs (or a larger ``--limit``) add up.
    Columns missing on either side are left empty.
    """
    new = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if key not in new.columns:
        raise ValueError(f"rows for {path} have no {key!r} column")
    path = Path(path)
    if path.is_file():
        old = pd.read_csv(path)
        if key not in old.columns:
            raise ValueError(f"{path} has no {key!r} column; it is not a CT-RATE table")
        old = old[~old[key].isin(new[key])]
        columns = list(old.columns) + [c for c in new.columns if c not in old.columns]
        merged = pd.concat([old, new], ignore_index=True)[columns]
    else:
        merged = new
    order = sorted(range(len(merged)), key=lambda i: natural_key(merged[key].iloc[i]))
    merged = merged.iloc[order].reset_index(drop=True)
    return atomic_write_csv(merged, path)
