"""Test helper: write a tiny CT-RATE-layout dataset from numpy arrays (real NIfTI files + CSVs).

Usage::

    from layout_fixtures import FixtureVolume, write_layout
    root = write_layout(tmp_path, [FixtureVolume(ct=ct, seg=seg, report="The heart is enlarged.")])
    ds = CTReportDataset(root, split="train")

Each :class:`FixtureVolume` becomes ``dataset/<folder>/<split>_<pid>/<split>_<pid>_<a>/<name>``
with its TotalSegmentator map at the same relative path under ``dataset/ts_seg/ts_total/<folder>/``
and one row in each of the split's three CSVs (CT-RATE's file names). Options let a test leave
things out or break them on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from cagcl_mini.anatomy import ALL_LABELS
from cagcl_mini.layout import SEG_DIR, csv_relpath


@dataclass
class FixtureVolume:
    """One volume to write. ``ct`` holds the stored values (raw int16 or HU), ``seg`` TS ids."""

    ct: np.ndarray
    seg: np.ndarray | None = None  # None: no label map file is written
    affine: np.ndarray | None = None  # default: diag(spacing) with the spacing below
    seg_affine: np.ndarray | None = None  # default: the CT's affine
    report: str = "The lungs are clear."
    impressions: str = ""
    labels: Mapping[str, float] = field(default_factory=dict)
    slope: float = 1.0  # RescaleSlope / RescaleIntercept written to the metadata CSV
    intercept: float = 0.0
    header_scaling: tuple[float, float] | None = None  # scl_slope/scl_inter in the NIfTI header
    xy_spacing: str | None = None  # XYSpacing text; default from the affine's first two axes
    z_spacing: float | None = None
    pid: int | None = None  # default: position in the list + 1
    recon: str = "a_1"  # CT-RATE reconstruction suffix: a_1, a_2, b_1...

    def volume_name(self, split: str, index: int) -> str:
        pid = self.pid if self.pid is not None else index + 1
        return f"{split}_{pid}_{self.recon}.nii.gz"


def save_nifti(
    path: Path,
    array: np.ndarray,
    affine: np.ndarray,
    header_scaling: tuple[float, float] | None = None,
) -> Path:
    """Write ``array`` (dtype kept) with nibabel; optional header scl_slope/scl_inter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    image.set_data_dtype(np.asarray(array).dtype)
    if header_scaling is not None:
        image.header.set_slope_inter(*header_scaling)
    image.to_filename(str(path))
    return path


def relative_volume_path(name: str) -> Path:
    """``valid_3_a_1.nii.gz`` -> ``valid_3/valid_3_a/valid_3_a_1.nii.gz`` (CT-RATE folders)."""
    stem = name[: -len(".nii.gz")]
    patient = "_".join(stem.split("_")[:2])
    scan = "_".join(stem.split("_")[:3])
    return Path(patient) / scan / name


def write_layout(
    root: str | Path,
    volumes: Sequence[FixtureVolume],
    split: str = "train",
    *,
    fixed: bool = False,
    label_columns: Sequence[str] = ALL_LABELS,
    extra_rows: Sequence[str] = (),
    skip_csv_rows: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write ``volumes`` as one split under ``root/dataset``; return ``root``.

    ``fixed`` uses CT-RATE's ``<split>_fixed`` folder names. ``label_columns`` chooses the label
    columns written. ``extra_rows`` adds CSV rows (all three CSVs) for VolumeNames with no file.
    ``skip_csv_rows`` maps "reports"/"labels"/"metadata" to VolumeNames left out of that CSV.
    Calling it again for the other split adds that split; for the same split, CSVs are replaced.
    """
    root = Path(root)
    dataset = root / "dataset"
    folder = f"{split}_fixed" if fixed else split
    reports, labels, meta = [], [], []
    for index, vol in enumerate(volumes):
        name = vol.volume_name(split, index)
        affine = np.diag([0.75, 0.75, 1.5, 1.0]) if vol.affine is None else np.asarray(vol.affine)
        rel = relative_volume_path(name)
        save_nifti(dataset / folder / rel, vol.ct, affine, vol.header_scaling)
        if vol.seg is not None:
            seg_affine = affine if vol.seg_affine is None else vol.seg_affine
            save_nifti(dataset / SEG_DIR / folder / rel, vol.seg, seg_affine)
        sizes = np.linalg.norm(affine[:3, :3], axis=0)
        xy = vol.xy_spacing if vol.xy_spacing is not None else f"[{sizes[0]:g}, {sizes[1]:g}]"
        z = vol.z_spacing if vol.z_spacing is not None else float(sizes[2])
        reports.append(
            {"VolumeName": name, "Findings_EN": vol.report, "Impressions_EN": vol.impressions}
        )
        labels.append({"VolumeName": name, **{c: int(vol.labels.get(c, 0)) for c in label_columns}})
        meta.append(
            {
                "VolumeName": name,
                "XYSpacing": xy,
                "ZSpacing": z,
                "RescaleSlope": vol.slope,
                "RescaleIntercept": vol.intercept,
            }
        )
    for name in extra_rows:
        reports.append({"VolumeName": name, "Findings_EN": "", "Impressions_EN": ""})
        labels.append({"VolumeName": name, **{c: 0 for c in label_columns}})
        meta.append(
            {
                "VolumeName": name,
                "XYSpacing": "[1.0, 1.0]",
                "ZSpacing": 1.0,
                "RescaleSlope": 1,
                "RescaleIntercept": 0,
            }
        )
    skip = skip_csv_rows or {}
    tables = {
        "reports": (
            csv_relpath("reports", split),
            reports,
            ["VolumeName", "Findings_EN", "Impressions_EN"],
        ),
        "labels": (csv_relpath("labels", split), labels, ["VolumeName", *label_columns]),
        "metadata": (
            csv_relpath("metadata", split),
            meta,
            ["VolumeName", "XYSpacing", "ZSpacing", "RescaleSlope", "RescaleIntercept"],
        ),
    }
    for key, (rel_csv, rows, columns) in tables.items():
        rows = [r for r in rows if r["VolumeName"] not in set(skip.get(key, ()))]
        path = dataset / rel_csv
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return root


def write_arrays(
    root: str | Path,
    cts: Sequence[np.ndarray],
    segs: Sequence[np.ndarray],
    split: str = "train",
    *,
    reports: Sequence[str] | None = None,
    affine: np.ndarray | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> Path:
    """Shortcut: one volume per (ct, seg) pair with the same affine, reports optional."""
    reports = reports if reports is not None else [FixtureVolume.report] * len(cts)
    vols = [
        FixtureVolume(ct=c, seg=s, affine=affine, report=r, slope=slope, intercept=intercept)
        for c, s, r in zip(cts, segs, reports, strict=True)
    ]
    return write_layout(root, vols, split)


def dataset_file(
    root: str | Path, split: str, name: str, *, seg: bool = False, fixed: bool = False
) -> Path:
    """Where :func:`write_layout` put a volume (or its label map with ``seg=True``)."""
    folder = f"{split}_fixed" if fixed else split
    base = Path(root) / "dataset" / (f"{SEG_DIR}/{folder}" if seg else folder)
    return base / relative_volume_path(name)
