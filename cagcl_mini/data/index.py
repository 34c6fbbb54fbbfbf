"""Index a CT-RATE-layout split: volume files, TotalSegmentator maps and the three CSVs.

The layout is :mod:`cagcl_mini.layout`'s. Every ``.nii.gz`` whose file name (the ``VolumeName``)
has a row in all three CSVs is indexed, so any reconstruction (``_a_1``, ``_a_2``, ``_b_1``...)
works. Decisions for incomplete data, all documented and tested:

* a volume file with no row in one of the CSVs: skipped, with a :class:`LayoutWarning` naming the
  file and the CSV;
* a CSV row with no volume file (partial CT-RATE downloads): skipped, one warning naming the rows;
* a volume without its TotalSegmentator map: :class:`FileNotFoundError` naming the expected path
  (the anatomy map is what the whole tutorial pools over; silently training without it would be
  worse than stopping);
* a missing CSV: :class:`FileNotFoundError` naming the expected path;
* CT-RATE label columns missing from the labels CSV: zeros, with one warning naming the file and
  columns; the four phantom-only extras (``EXTRA_LABELS``) are quietly zero on real data, which
  never has them (evaluation skips a label with no positives);
* malformed metadata or label values: :class:`DataError` naming the file, row and field;
* a volume under a ``<split>_fixed`` folder (CT-RATE v2) already holds HU: its record gets slope 1
  and intercept 0, and the metadata CSV's RescaleSlope/RescaleIntercept (still listed there, and
  still checked to be numbers) are not applied a second time.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cagcl_mini.anatomy import ALL_LABELS, CT_RATE_LABELS
from cagcl_mini.errors import DataError, LayoutWarning, one_line
from cagcl_mini.layout import (
    FIXED_SUFFIX,
    METADATA_FIELDS,
    SEG_DIR,
    check_split,
    csv_relpath,
    natural_key,
    split_folders,
    volume_id,
)

_MAX_NAMES_SHOWN = 10


@dataclass(frozen=True)
class VolumeRecord:
    """Everything the loader needs about one volume, gathered from the layout and the CSVs."""

    name: str  # VolumeName, e.g. "train_1_a_1.nii.gz"
    image: Path
    label: Path
    findings: str
    impressions: str
    labels: np.ndarray  # (len(ALL_LABELS),) float32 in ALL_LABELS order
    spacing: tuple[float, float, float]  # (x, y, z) in mm from XYSpacing / ZSpacing
    slope: float  # HU = stored * slope + intercept (1 and 0 for `_fixed` volumes, already HU)
    intercept: float

    @property
    def id(self) -> str:
        """The VolumeName without ``.nii.gz``."""
        return volume_id(self.name)


def read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read one CSV indexed by VolumeName, with errors naming the path and missing columns."""
    if not path.is_file():
        raise FileNotFoundError(f"missing CSV {path} (expected in the CT-RATE layout)")
    try:
        frame = pd.read_csv(path, dtype={"VolumeName": str}, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse CSV {path}: {one_line(exc)}") from exc
    missing = [c for c in ("VolumeName", *required) if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; it has {list(frame.columns)}")
    frame["_line"] = np.arange(len(frame)) + 2  # 1-based file line, after the header
    dup = frame["VolumeName"].duplicated()
    if dup.any():
        names = _shorten(frame.loc[dup, "VolumeName"].tolist())
        warnings.warn(
            f"{path}: duplicate VolumeName rows {names}; keeping the first of each",
            LayoutWarning,
            stacklevel=3,
        )
        frame = frame[~dup]
    return frame.set_index("VolumeName", drop=False)


def parse_xy_spacing(text: object, where: str) -> tuple[float, float]:
    """Parse CT-RATE's XYSpacing string ("[0.75, 0.75]") into two positive floats."""
    parts = [p for p in re.split(r"[,\s]+", str(text).strip().strip("[]()")) if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise DataError(
            f"{where}, field XYSpacing: expected two positive numbers like '[0.75, 0.75]', "
            f"got {text!r}"
        )
    return values[0], values[1]


def _number(row: pd.Series, field: str, where: str, *, positive: bool = False) -> float:
    """A finite float from one metadata field (positive for spacings, non-zero for the slope)."""
    try:
        value = float(row[field])
    except (TypeError, ValueError):
        value = math.nan
    ok = math.isfinite(value) and (value > 0 if positive else True)
    ok = ok and not (field == "RescaleSlope" and value == 0)
    if not ok:
        want = "a positive number" if positive else "a finite number"
        want += " other than 0" if field == "RescaleSlope" else ""
        raise DataError(f"{where}, field {field}: expected {want}, got {row[field]!r}")
    return value


def _labels_vector(row: pd.Series | None, columns: list[str], path: Path) -> np.ndarray:
    out = np.zeros(len(ALL_LABELS), dtype=np.float32)
    for i, col in enumerate(ALL_LABELS):
        if col not in columns:
            continue
        value = pd.to_numeric(row[col], errors="coerce")
        if not np.isfinite(value):
            raise DataError(
                f"{path}, row {row['_line']} ({row['VolumeName']}), column {col!r}: "
                f"expected a number (0/1), got {row[col]!r}"
            )
        out[i] = value
    return out


def _shorten(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    more = len(names) - _MAX_NAMES_SHOWN
    return shown + (f" ... and {more} more" if more > 0 else "")


def find_volumes(dataset_dir: Path, split: str) -> dict[str, tuple[Path, str]]:
    """VolumeName -> (path, split folder name) for every ``.nii.gz`` under the split's folders."""
    found: dict[str, tuple[Path, str]] = {}
    folders = [f for f in split_folders(split) if (dataset_dir / f).is_dir()]
    if not folders:
        expected = " or ".join(str(dataset_dir / f) for f in split_folders(split))
        raise FileNotFoundError(f"no volume folder for split {split!r}: expected {expected}")
    for folder in folders:  # `<split>_fixed` first, so it wins over the original
        for path in sorted((dataset_dir / folder).rglob("*.nii.gz")):
            if path.name in found:
                warnings.warn(
                    f"{path.name} exists in both {found[path.name][0]} and {path}; "
                    f"using the first ({found[path.name][1]})",
                    LayoutWarning,
                    stacklevel=3,
                )
                continue
            found[path.name] = (path, folder)
    return found


def label_map_path(dataset_dir: Path, image: Path, folder: str) -> Path:
    """The TotalSegmentator map of ``image``: same relative path under ts_seg/ts_total/.

    The map may sit under either of the split's folder names (``valid`` or ``valid_fixed``); the
    one matching the volume's own folder is tried first and returned when neither exists.
    """
    rel = image.relative_to(dataset_dir / folder)
    split = folder.removesuffix("_fixed")
    candidates = [folder, *(f for f in split_folders(split) if f != folder)]
    for name in candidates:
        path = dataset_dir / SEG_DIR / name / rel
        if path.is_file():
            return path
    return dataset_dir / SEG_DIR / folder / rel


def index_split(dataset_dir: Path, split: str) -> list[VolumeRecord]:
    """All loadable volumes of one split in natural VolumeName order (train_2 before train_10)."""
    check_split(split)
    csv_paths = {
        kind: dataset_dir / csv_relpath(kind, split) for kind in ("reports", "labels", "metadata")
    }
    reports = read_csv(csv_paths["reports"], ("Findings_EN",))
    labels = read_csv(csv_paths["labels"], ())
    meta = read_csv(csv_paths["metadata"], METADATA_FIELDS)
    tables = {"reports": reports, "labels": labels, "metadata": meta}
    volumes = find_volumes(dataset_dir, split)

    label_cols = [c for c in ALL_LABELS if c in labels.columns]
    missing_cols = [c for c in CT_RATE_LABELS if c not in labels.columns]
    if missing_cols:
        warnings.warn(
            f"{csv_paths['labels']} lacks label column(s) {missing_cols}; they are set to 0",
            LayoutWarning,
            stacklevel=2,
        )

    listed = set().union(*(set(t.index) for t in tables.values()))
    orphans = sorted(listed - set(volumes))
    if orphans:
        folders = " / ".join(str(dataset_dir / f) for f in split_folders(split))
        warnings.warn(
            f"{len(orphans)} VolumeName(s) listed in the {split} CSVs have no volume file under "
            f"{folders} and are skipped (normal for a partial CT-RATE download): {_shorten(orphans)}",
            LayoutWarning,
            stacklevel=2,
        )

    records: list[VolumeRecord] = []
    missing_maps: list[Path] = []
    for name in sorted(volumes, key=natural_key):
        image, folder = volumes[name]
        absent = [key for key, table in tables.items() if name not in table.index]
        if absent:
            csvs = ", ".join(str(csv_paths[key]) for key in absent)
            warnings.warn(f"{image} has no row in {csvs}; skipping it", LayoutWarning, stacklevel=2)
            continue
        label = label_map_path(dataset_dir, image, folder)
        if not label.is_file():
            missing_maps.append(label)
            continue
        m = meta.loc[name]
        where = f"{csv_paths['metadata']}, row {m['_line']} ({name})"
        sx, sy = parse_xy_spacing(m["XYSpacing"], where)
        slope = _number(m, "RescaleSlope", where)
        intercept = _number(m, "RescaleIntercept", where)
        if folder.endswith(FIXED_SUFFIX):  # CT-RATE v2: already HU, the CSV's rescale is stale
            slope, intercept = 1.0, 0.0
        findings = reports.loc[name, "Findings_EN"]
        impressions = reports.loc[name].get("Impressions_EN", "")
        records.append(
            VolumeRecord(
                name=name,
                image=image,
                label=label,
                findings="" if pd.isna(findings) else str(findings),
                impressions="" if pd.isna(impressions) else str(impressions),
                labels=_labels_vector(labels.loc[name], label_cols, csv_paths["labels"]),
                spacing=(sx, sy, _number(m, "ZSpacing", where, positive=True)),
                slope=slope,
                intercept=intercept,
            )
        )
    if missing_maps:
        raise FileNotFoundError(
            f"{len(missing_maps)} volume(s) have no TotalSegmentator `total` label map; expected "
            f"{_shorten([str(p) for p in missing_maps])}. Run TotalSegmentator (v2, task total) on "
            "them or remove the volumes."
        )
    if not records:
        raise DataError(f"no loadable volume in split {split!r} of {dataset_dir}")
    return records
