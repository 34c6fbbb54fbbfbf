"""Import one DICOM CT series into the CT-RATE layout, as a volume the loader reads like any other.

:func:`read_series` turns a folder of single-frame CT slices into an int16 HU array and its RAS
affine; :func:`import_dicom` writes it as ``<split>_<pid>_a_1.nii.gz`` with its three CSV rows and,
when given, its TotalSegmentator v2 `total` map. Decisions, each for a reason:

* geometry comes from the headers only: ImageOrientationPatient, ImagePositionPatient and
  PixelSpacing; slices are sorted along the slice normal (InstanceNumber and file names lie often
  enough), and the slice spacing is measured from consecutive positions (SliceThickness is the
  reconstructed thickness, not the spacing);
* a folder is refused, with one line naming the problem, if it mixes series, misses a slice (an
  irregular gap), is not CT, holds no DICOM file, or its slices disagree in size or orientation:
  a silently wrong volume would be worse than none;
* voxels are stored in HU already (each file's RescaleSlope/RescaleIntercept applied here), so the
  metadata CSV says RescaleSlope 1, RescaleIntercept 0; the true voxel sizes and orientation are in
  the NIfTI affine (DICOM's LPS patient axes turned into nibabel's RAS+), reoriented to the closest
  RAS axes so that the volume and its map are stored the same way;
* a label map is only reoriented (never resampled) and must then match the CT voxel for voxel;
* the report row is the findings text given, else a sentence saying none was given; the 18 label
  columns are 0, meaning *unknown*, not *normal*;
* re-running an import is a no-op when nothing would change and is refused (naming the volume)
  when something would, unless ``overwrite``. ``<root>/dicom_imports.csv`` remembers which series
  (by a hash of its voxels and geometry) became which volume, so the same series keeps its name.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import warnings
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from cagcl_mini import layout
from cagcl_mini.anatomy import CT_RATE_LABELS, TOTALSEG_MAX_ID
from cagcl_mini.errors import DataError, LayoutWarning
from cagcl_mini.fileio import atomic_path, folder_lock, upsert_rows

SEG_AFFINE_ATOL = 1e-3  # mm; the loader's own tolerance (data.transforms.AFFINE_ATOL)
ORIENTATION_ATOL = 1e-4  # direction cosines of two slices of one series agree to this
SPACING_RTOL = 0.02  # consecutive slice positions may differ from the spacing by this fraction
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
REGISTRY = "dicom_imports.csv"  # below the dataset root, next to dataset/
NO_REPORT_FINDINGS = "CT imported from a DICOM series; no report text was given for this scan."
NO_REPORT_IMPRESSIONS = "No report available."
SCAN, REC = "a", 1


@dataclass(frozen=True)
class DicomImport:
    """What :func:`import_series` did: the volume's paths, the files written and notes to show."""

    name: str  # VolumeName
    ct: Path
    mask: Path | None  # the label map, None where there is none yet
    written: tuple[Path, ...] = ()  # empty: the import was already there, byte for byte
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Slice:
    path: Path
    ds: Any  # pydicom Dataset, pixel data read on use
    position: np.ndarray  # ImagePositionPatient, mm (LPS)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _dicom_files(series_dir: Path) -> list[tuple[Path, Any]]:
    """Every DICOM file directly in ``series_dir`` (hidden files and DICOMDIRs skipped)."""
    if not series_dir.is_dir():
        raise FileNotFoundError(f"DICOM series folder {series_dir} does not exist")
    found, skipped = [], 0
    for path in sorted(p for p in series_dir.iterdir() if p.is_file()):
        if path.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(path, defer_size="1 KB")
        except (InvalidDicomError, EOFError, OSError):
            skipped += 1
            continue
        if "DirectoryRecordSequence" in ds:  # a DICOMDIR lists files, it holds no image
            skipped += 1
            continue
        found.append((path, ds))
    if not found:
        other = f" ({skipped} other file(s) skipped)" if skipped else ""
        raise DataError(f"no DICOM files in {series_dir}{other}; expected one file per CT slice")
    return found


def _check_one_ct_series(series_dir: Path, files: list[tuple[Path, Any]]) -> None:
    series = Counter(str(ds.get("SeriesInstanceUID", "")) for _, ds in files)
    if len(series) > 1:
        counts = ", ".join(f"{uid or '<empty>'}: {n} file(s)" for uid, n in series.most_common())
        raise DataError(
            f"mixed series in {series_dir}: found {len(series)} series (SeriesInstanceUID "
            f"{counts}); expected one series per folder"
        )
    for path, ds in files:
        modality = str(ds.get("Modality", ""))
        if modality != "CT":
            raise DataError(
                f"{path}: Modality is {modality or '<missing>'!r}, expected 'CT' "
                "(only CT series have Hounsfield units)"
            )


def _float_list(ds: Any, path: Path, keyword: str, n: int) -> np.ndarray:
    value = ds.get(keyword)
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        out = np.zeros(0)
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise DataError(f"{path}: {keyword} should be {n} numbers, got {value!r}")
    return out


def _geometry(files: list[tuple[Path, Any]]) -> tuple[np.ndarray, np.ndarray, list[_Slice]]:
    """(direction cosines (3, 3) as columns row/column/normal, pixel spacing (2,), slices)."""
    first_path, first = files[0]
    size0 = (int(first.get("Rows", 0)), int(first.get("Columns", 0)))
    iop0 = _float_list(first, first_path, "ImageOrientationPatient", 6)
    spacing0 = _float_list(first, first_path, "PixelSpacing", 2)
    slices = []
    for path, ds in files:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames != 1:
            raise DataError(f"{path}: {frames} frames in one file; expected one slice per file")
        size = (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))
        if size != size0:
            raise DataError(
                f"inconsistent slice size: {path} is {size[0]}x{size[1]} (rows x columns), "
                f"{first_path.name} is {size0[0]}x{size0[1]}"
            )
        iop = _float_list(ds, path, "ImageOrientationPatient", 6)
        if not np.allclose(iop, iop0, rtol=0, atol=ORIENTATION_ATOL):
            raise DataError(
                f"inconsistent orientation: {path} has ImageOrientationPatient {iop.tolist()}, "
                f"{first_path.name} has {iop0.tolist()}"
            )
        spacing = _float_list(ds, path, "PixelSpacing", 2)
        if not np.allclose(spacing, spacing0, rtol=1e-4, atol=0):
            raise DataError(
                f"inconsistent pixel spacing: {path} has PixelSpacing {spacing.tolist()}, "
                f"{first_path.name} has {spacing0.tolist()}"
            )
        position = _float_list(ds, path, "ImagePositionPatient", 3)
        slices.append(_Slice(path, ds, position))
    if min(size0) < 1:
        raise DataError(f"{first_path}: Rows x Columns is {size0[0]}x{size0[1]}, expected >= 1")
    if not np.all(spacing0 > 0):
        raise DataError(f"{first_path}: PixelSpacing {spacing0.tolist()} should be positive")
    row_dir, col_dir = iop0[:3], iop0[3:]
    norms = np.linalg.norm(row_dir), np.linalg.norm(col_dir)
    if min(norms) < 1e-6 or abs(float(row_dir @ col_dir)) > 1e-3 * norms[0] * norms[1]:
        raise DataError(
            f"{first_path}: ImageOrientationPatient {iop0.tolist()} is not two perpendicular "
            "directions"
        )
    row_dir, col_dir = row_dir / norms[0], col_dir / norms[1]
    directions = np.stack([row_dir, col_dir, np.cross(row_dir, col_dir)], axis=1)
    return directions, spacing0, slices


def _sort_and_space(
    series_dir: Path, slices: list[_Slice], normal: np.ndarray
) -> tuple[list[_Slice], float]:
    """The slices ordered along ``normal`` and their spacing; refuses gaps and tilted stacks."""
    if len(slices) < 2:
        raise DataError(
            f"{series_dir} holds {len(slices)} slice; a volume needs at least 2 (the slice "
            "spacing is measured between positions)"
        )
    slices = sorted(slices, key=lambda s: float(s.position @ normal))
    heights = np.array([float(s.position @ normal) for s in slices])
    steps = np.diff(heights)
    for a, b, step in zip(slices, slices[1:], steps, strict=False):
        if step < 1e-3:
            raise DataError(
                f"two slices at the same position {a.position.round(3).tolist()} mm: {a.path.name} "
                f"and {b.path.name} in {series_dir}; expected one slice per position"
            )
    spacing = float(np.median(steps))
    for i, step in enumerate(steps):
        if abs(step - spacing) > SPACING_RTOL * spacing:
            missing = round(step / spacing) - 1
            what = (
                f"missing slice ({missing} absent)" if missing >= 1 else "irregular slice spacing"
            )
            raise DataError(
                f"{what} in {series_dir}: gap of {step:.4g} mm between {slices[i].path.name} "
                f"(at {heights[i]:.4g} mm along the slice normal) and {slices[i + 1].path.name} "
                f"(at {heights[i + 1]:.4g} mm), expected the spacing {spacing:.4g} mm"
            )
    for s in slices[1:]:
        offset = s.position - slices[0].position
        sideways = offset - (offset @ normal) * normal
        if np.linalg.norm(sideways) > max(1e-2, 0.01 * spacing):
            raise DataError(
                f"{s.path} is shifted {np.linalg.norm(sideways):.3g} mm sideways from "
                f"{slices[0].path.name}: the slices are not stacked along their normal (gantry "
                "tilt?); expected an untilted axial stack"
            )
    return slices, (heights[-1] - heights[0]) / (len(slices) - 1)


def _hu_slice(s: _Slice) -> np.ndarray:
    """One slice in HU (its own RescaleSlope/RescaleIntercept applied), as float64 (rows, cols)."""
    try:
        raw = s.ds.pixel_array
    except Exception as exc:  # pydicom raises several types for missing or undecodable pixels
        raise DataError(f"{s.path}: cannot decode the pixel data: {_one_line(exc)}") from exc
    if raw.shape != (int(s.ds.Rows), int(s.ds.Columns)):
        raise DataError(
            f"{s.path}: pixel data has shape {raw.shape}, expected one grey slice of "
            f"{int(s.ds.Rows)}x{int(s.ds.Columns)}"
        )
    slope = float(s.ds.RescaleSlope) if "RescaleSlope" in s.ds else 1.0
    intercept = float(s.ds.RescaleIntercept) if "RescaleIntercept" in s.ds else 0.0
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise DataError(
            f"{s.path}: RescaleSlope {slope} / RescaleIntercept {intercept}: expected finite "
            "numbers and a slope other than 0"
        )
    return raw.astype(np.float64) * slope + intercept


def read_series(series_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One DICOM CT series as (int16 HU array with axes towards R, A, S; its RAS+ affine in mm).

    Raises :class:`DataError` with one line naming the problem (see the module docstring).
    """
    hu, affine, _ = _read_series(Path(series_dir))
    return hu, affine


def _read_series(series_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`read_series` and the series' SeriesInstanceUID."""
    files = _dicom_files(series_dir)
    _check_one_ct_series(series_dir, files)
    directions, pixel_spacing, slices = _geometry(files)
    slices, slice_spacing = _sort_and_space(series_dir, slices, directions[:, 2])
    hu = np.empty((int(files[0][1].Columns), int(files[0][1].Rows), len(slices)), np.int16)
    for k, s in enumerate(slices):
        values = np.rint(_hu_slice(s))
        if values.min() < -32768 or values.max() > 32767:
            raise DataError(
                f"{s.path}: HU values {values.min():.0f}..{values.max():.0f} do not fit int16"
            )
        hu[:, :, k] = values.T  # array axis 0 runs along a row (the column index), axis 1 down
    # PixelSpacing is (between rows, between columns): the column index moves along row_dir.
    lps = np.eye(4)
    lps[:3, :3] = directions * np.array([pixel_spacing[1], pixel_spacing[0], slice_spacing])
    lps[:3, 3] = slices[0].position
    affine = LPS_TO_RAS @ lps
    ornt = nib.orientations.io_orientation(affine)
    hu = np.ascontiguousarray(nib.orientations.apply_orientation(hu, ornt))
    affine = affine @ nib.orientations.inv_ornt_aff(ornt, hu.shape)
    return hu, affine, str(files[0][1].get("SeriesInstanceUID", ""))


def read_label_map(
    seg_path: str | Path, ct_shape: Sequence[int], ct_affine: np.ndarray, series_dir: str | Path
) -> np.ndarray:
    """A TotalSegmentator map reoriented (not resampled) to RAS, as uint8 on the CT's voxels.

    Raises :class:`DataError` naming both inputs if shape or affine then disagree with the CT's.
    """
    seg_path = Path(seg_path)
    if not seg_path.is_file():
        raise FileNotFoundError(f"label map {seg_path} does not exist")
    try:
        img = nib.as_closest_canonical(nib.load(seg_path))
        labels = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel, gzip and zlib errors of an unreadable file
        raise DataError(f"{seg_path} is not a readable NIfTI label map: {_one_line(exc)}") from exc
    both = f"label map {seg_path} and DICOM series {series_dir}"
    if labels.shape != tuple(ct_shape):
        raise DataError(
            f"{both} do not line up in RAS: shape {labels.shape} vs {tuple(ct_shape)}; "
            "expected TotalSegmentator's map of this very series"
        )
    if not np.allclose(img.affine, ct_affine, rtol=0, atol=SEG_AFFINE_ATOL):
        raise DataError(
            f"{both} do not line up in RAS: affine {np.round(img.affine, 4).tolist()} vs "
            f"{np.round(ct_affine, 4).tolist()} (tolerance {SEG_AFFINE_ATOL} mm)"
        )
    if labels.size and (
        not np.array_equal(labels, np.rint(labels)) or labels.min() < 0 or labels.max() > 255
    ):
        raise DataError(f"{seg_path}: label ids should be integers 0..{TOTALSEG_MAX_ID}")
    if labels.size and labels.max() > TOTALSEG_MAX_ID:
        raise DataError(
            f"{seg_path}: label ids {int(labels.min())}..{int(labels.max())}, expected "
            f"0..{TOTALSEG_MAX_ID} (TotalSegmentator v2, task total)"
        )
    return np.ascontiguousarray(labels, dtype=np.uint8)


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def _same_nifti(path: Path, img: nib.Nifti1Image) -> bool:
    """Whether ``path`` holds exactly ``img`` (header and voxels; the gzip wrapper may differ)."""
    if not path.is_file():
        return False
    try:
        with gzip.open(path, "rb") as f:
            return f.read() == img.to_bytes()
    except (OSError, EOFError, zlib.error):  # damaged: not the same, so it would be replaced
        return False


def _save(img: nib.Nifti1Image, path: Path) -> Path:
    with atomic_path(path, suffix=".tmp.nii.gz") as tmp:  # nibabel goes by the ending
        nib.save(img, tmp)
    return path


def _as_csv_strings(row: Mapping[str, Any]) -> dict[str, str]:
    """``row`` as its cells would read back from a CSV (numbers and texts as written)."""
    text = pd.DataFrame([dict(row)]).to_csv(index=False)
    back = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    return back.iloc[0].to_dict()


def _existing_row(path: Path, name: str) -> dict[str, str] | None:
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "VolumeName" not in table.columns:
        raise DataError(f"{path} has no 'VolumeName' column; it is not a CT-RATE table")
    match = table[table["VolumeName"] == name]
    return None if match.empty else match.iloc[0].to_dict()


def _same_row(existing: Mapping[str, str] | None, row: Mapping[str, Any]) -> bool:
    if existing is None:
        return False
    return all(existing.get(k) == v for k, v in _as_csv_strings(row).items())


def _series_key(hu: np.ndarray, affine: np.ndarray) -> str:
    """sha256 of the imported voxels and geometry: the same series gets the same key."""
    h = hashlib.sha256()
    h.update(repr((hu.shape, str(hu.dtype))).encode())
    h.update(np.round(affine, 4).astype(np.float64).tobytes())
    h.update(np.ascontiguousarray(hu).tobytes())
    return h.hexdigest()


def _known_names(root: Path, split: str) -> list[str]:
    """VolumeNames of ``split`` on disk, in its CSVs or in the import registry."""
    names = []
    for folder in layout.split_folders(split):
        names += [p.name for p in (root / layout.DATASET_FOLDER / folder).glob("*/*/*.nii.gz")]
    for path in [*(layout.csv_path(root, k, split) for k in layout.CSV_KINDS), root / REGISTRY]:
        if path.is_file():
            column = pd.read_csv(path, dtype=str, keep_default_na=False).get("VolumeName")
            names += [] if column is None else column.tolist()
    return names


def _choose_name(root: Path, split: str, pid: int | None, key: str) -> str:
    """The VolumeName to write: ``pid``'s, else this series' earlier one, else the next free id."""
    if pid is not None:
        if int(pid) < 1:
            raise ValueError(f"pid must be a positive patient id, got {pid}")
        return layout.volume_name(split, int(pid), SCAN, REC)
    registry = root / REGISTRY
    if registry.is_file():
        table = pd.read_csv(registry, dtype=str, keep_default_na=False)
        if {"VolumeName", "SeriesSha256"} <= set(table.columns):
            for name in table.loc[table["SeriesSha256"] == key, "VolumeName"]:
                if name.startswith(f"{split}_"):
                    return name
    pids = []
    for name in _known_names(root, split):
        try:
            name_split, name_pid, _, _ = layout.parse_volume_name(name)
        except ValueError:
            continue
        if name_split == split:
            pids.append(name_pid)
    return layout.volume_name(split, max(pids, default=0) + 1, SCAN, REC)


def _rows(name: str, zooms: Sequence[float], report: str | None) -> dict[str, dict[str, Any]]:
    findings = NO_REPORT_FINDINGS if report is None else report.strip()
    impressions = NO_REPORT_IMPRESSIONS if report is None else ""
    return {
        "reports": {"VolumeName": name, "Findings_EN": findings, "Impressions_EN": impressions},
        "labels": {"VolumeName": name, **{label: 0 for label in CT_RATE_LABELS}},
        "metadata": {
            "VolumeName": name,
            **layout.spacing_columns(zooms),
            "RescaleSlope": 1.0,
            "RescaleIntercept": 0.0,
        },
    }


def _dataset_root(out_root: Path) -> Path:
    """The folder that holds ``dataset/``: ``out_root``, or its parent if it is ``dataset/``."""
    named = out_root.name == layout.DATASET_FOLDER and out_root.is_dir()
    return (
        out_root.parent if named and not (out_root / layout.DATASET_FOLDER).exists() else out_root
    )


def map_needed_note(root: str | Path, mask: Path) -> str:
    """The one-line note for a volume without its TotalSegmentator map (the loader needs one)."""
    return (
        f"no TotalSegmentator map at {mask}; the loader needs one: run "
        f"`python -m data_download totalseg-masks --dest {root}` (or give --seg MAP.nii.gz)"
    )


def import_series(
    series_dir: str | Path,
    out_root: str | Path,
    *,
    split: str = "valid",
    pid: int | None = None,
    seg: str | Path | None = None,
    report: str | None = None,
    overwrite: bool = False,
) -> DicomImport:
    """Import one DICOM CT series below ``out_root`` (the folder holding ``dataset/``, or an
    existing ``dataset/`` folder itself).

    Returns what was written and the notes to show (a missing map). Raises :class:`DataError` for
    a bad series or map and :class:`FileExistsError` if the volume exists with other content and
    ``overwrite`` is false.
    """
    layout.check_split(split)
    if report is not None and not report.strip():
        raise ValueError("report text is empty; give the findings text or leave it out")
    series_dir, root = Path(series_dir), _dataset_root(Path(out_root).expanduser())
    hu, affine, uid = _read_series(series_dir)
    labels = None if seg is None else read_label_map(seg, hu.shape, affine, series_dir)
    key = _series_key(hu, affine)
    ct_img = _nifti(hu, affine)
    seg_img = None if labels is None else _nifti(labels, affine)
    with folder_lock(root / layout.DATASET_FOLDER):
        name = _choose_name(root, split, pid, key)
        ct, mask = layout.ct_path(root, name), layout.mask_path(root, name)
        rows = _rows(name, ct_img.header.get_zooms(), report)
        csvs = {kind: layout.csv_path(root, kind, split) for kind in rows}
        existing = {kind: _existing_row(csvs[kind], name) for kind in rows}
        stale = {kind: not _same_row(existing[kind], rows[kind]) for kind in rows}
        write_ct = not _same_nifti(ct, ct_img)
        write_seg = seg_img is not None and not _same_nifti(mask, seg_img)
        conflicts = [f"CT volume {ct}"] if write_ct and ct.exists() else []
        conflicts += [f"label map {mask}"] if write_seg and mask.exists() else []
        conflicts += [
            f"{kind} row in {csvs[kind]}"
            for kind in rows
            if stale[kind] and existing[kind] is not None
        ]
        if conflicts and not overwrite:
            raise FileExistsError(
                f"{name} already exists with different content ({'; '.join(conflicts)}); "
                "pass overwrite=True (--overwrite) to replace it, or choose another pid"
            )
        written: list[Path] = []
        notes: list[str] = []
        if write_seg:
            written.append(_save(seg_img, mask))
        elif seg_img is None and write_ct and mask.exists():
            mask.unlink()  # it described the volume being replaced, not this one
            notes.append(f"removed {mask}: it was the map of the volume replaced")
        if write_ct:
            written.append(_save(ct_img, ct))
        for kind in rows:
            if stale[kind]:
                written.append(upsert_rows(csvs[kind], [rows[kind]], sort_key=layout.natural_key))
        registry_row = {
            "VolumeName": name,
            "SeriesSha256": key,
            "SeriesInstanceUID": uid,
            "SeriesDir": str(series_dir.resolve()),
        }
        if not _same_row(_existing_row(root / REGISTRY, name), registry_row):
            written.append(
                upsert_rows(root / REGISTRY, [registry_row], sort_key=layout.natural_key)
            )
    if not mask.is_file():
        notes.append(map_needed_note(root, mask))
    return DicomImport(name, ct, mask if mask.is_file() else None, tuple(written), tuple(notes))


def import_dicom(
    series_dir: str | Path,
    out_root: str | Path,
    *,
    split: str = "valid",
    pid: int | None = None,
    seg: str | Path | None = None,
    report: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Import one DICOM CT series (see :func:`import_series`); returns the CT path.

    A missing TotalSegmentator map is said with a :class:`LayoutWarning` naming where it belongs.
    """
    result = import_series(
        series_dir, out_root, split=split, pid=pid, seg=seg, report=report, overwrite=overwrite
    )
    for note in result.notes:
        warnings.warn(note, LayoutWarning, stacklevel=2)
    return result.ct
