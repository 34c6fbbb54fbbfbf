"""The CT-RATE folder layout, written down once: names and paths of volumes, label maps and CSVs.

::

    <root>/dataset/<split>/<split>_<pid>/<split>_<pid>_<scan>/<split>_<pid>_<scan>_<rec>.nii.gz
    <root>/dataset/ts_seg/ts_total/<split>/...same relative path...     TotalSegmentator v2 `total`
    <root>/dataset/ts_seg/findings/<split>/...same relative path...     finding masks (phantom only)
    <root>/dataset/ts_seg/findings/labels.json                          their label table
    <root>/dataset/radiology_text_reports/{train_reports,validation_reports}.csv
    <root>/dataset/multi_abnormality_labels/{train,valid}_predicted_labels.csv
    <root>/dataset/metadata/{train,validation}_metadata.csv

The inconsistent ``validation_`` / ``valid_`` file names are CT-RATE's own. CT-RATE v2 keeps its
volumes in ``<split>_fixed/`` instead of ``<split>/``; both folder names are recognised. ``root``
is the folder that holds ``dataset/``; ``dataset_dir`` is ``dataset/`` itself. The phantom writer,
the loader and every real-data fetcher use these functions, so one loader reads them all.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

SPLITS: tuple[str, ...] = ("train", "valid")
DATASET_FOLDER = "dataset"
NIFTI_SUFFIX = ".nii.gz"
FIXED_SUFFIX = "_fixed"  # CT-RATE v2's folders of volumes already in HU
SEG_DIR = PurePosixPath("ts_seg/ts_total")  # TotalSegmentator maps, below dataset/
FINDING_SEG_DIR = PurePosixPath("ts_seg/findings")  # finding masks, below dataset/
FINDING_LABELS_FILE = "labels.json"  # inside FINDING_SEG_DIR
CSV_KINDS: dict[str, tuple[str, dict[str, str]]] = {
    "reports": (
        "radiology_text_reports",
        {"train": "train_reports.csv", "valid": "validation_reports.csv"},
    ),
    "labels": (
        "multi_abnormality_labels",
        {"train": "train_predicted_labels.csv", "valid": "valid_predicted_labels.csv"},
    ),
    "metadata": ("metadata", {"train": "train_metadata.csv", "valid": "validation_metadata.csv"}),
}
REPORT_COLUMNS: tuple[str, ...] = (
    "VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"
)  # fmt: skip
METADATA_FIELDS: tuple[str, ...] = ("XYSpacing", "ZSpacing", "RescaleSlope", "RescaleIntercept")
_VOLUME = re.compile(r"^(train|valid)_(\d+)_([A-Za-z]+)_(\d+)(?:\.nii\.gz)?$")


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise naming the valid ones."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def split_folders(split: str) -> tuple[str, str]:
    """The folder names a split may use, CT-RATE v2's ``<split>_fixed`` first."""
    return (f"{check_split(split)}{FIXED_SUFFIX}", split)


def volume_name(split: str, pid: int, scan: str = "a", rec: int = 1) -> str:
    """The ``VolumeName`` (with ``.nii.gz``) of one reconstruction."""
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


def volume_id(name: str) -> str:
    """``train_1_a_1.nii.gz`` -> ``train_1_a_1``."""
    return name[: -len(NIFTI_SUFFIX)] if name.endswith(NIFTI_SUFFIX) else name


def volume_relpath(name: str, folder: str | None = None) -> PurePosixPath:
    """``<folder>/<split>_<pid>/<split>_<pid>_<scan>/<name>`` below ``dataset/``; the folder
    defaults to the split's own (``train``, ``valid``)."""
    split, pid, scan, rec = parse_volume_name(name)
    stem = f"{split}_{pid}_{scan}_{rec}"
    return PurePosixPath(
        folder or split, f"{split}_{pid}", f"{split}_{pid}_{scan}", stem + NIFTI_SUFFIX
    )


def mask_relpath(name: str, folder: str | None = None) -> PurePosixPath:
    """Where the TotalSegmentator map of volume ``name`` lives below ``dataset/``."""
    return SEG_DIR / volume_relpath(name, folder)


def csv_relpath(kind: str, split: str) -> PurePosixPath:
    """The CSV of ``kind`` (``reports``, ``labels``, ``metadata``) of ``split`` below ``dataset/``."""
    if kind not in CSV_KINDS:
        raise ValueError(f"unknown CSV kind {kind!r}; choose one of {', '.join(CSV_KINDS)}")
    folder, names = CSV_KINDS[kind]
    return PurePosixPath(folder, names[check_split(split)])


def ct_path(root: str | Path, name: str, folder: str | None = None) -> Path:
    """Where the CT volume ``name`` lives under a dataset root."""
    return Path(root) / DATASET_FOLDER / volume_relpath(name, folder)


def mask_path(root: str | Path, name: str, folder: str | None = None) -> Path:
    """Where the TotalSegmentator v2 label map of volume ``name`` lives under a dataset root."""
    return Path(root) / DATASET_FOLDER / mask_relpath(name, folder)


def finding_mask_relpath(name: str, folder: str | None = None) -> PurePosixPath:
    """Where the finding mask of volume ``name`` lives below ``dataset/``."""
    return FINDING_SEG_DIR / volume_relpath(name, folder)


def finding_mask_path(root: str | Path, name: str, folder: str | None = None) -> Path:
    """Where the finding mask of volume ``name`` lives under a dataset root."""
    return Path(root) / DATASET_FOLDER / finding_mask_relpath(name, folder)


def finding_labels_path(root: str | Path) -> Path:
    """The finding masks' label table under a dataset root."""
    return Path(root) / DATASET_FOLDER / FINDING_SEG_DIR / FINDING_LABELS_FILE


def csv_path(root: str | Path, kind: str, split: str) -> Path:
    """The CSV of ``kind`` for ``split`` under a dataset root."""
    return Path(root) / DATASET_FOLDER / csv_relpath(kind, split)


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically: ``valid_2`` before ``valid_10``."""
    return tuple(
        (0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(text))
    )


def spacing_columns(zooms) -> dict[str, object]:
    """CT-RATE metadata spacing fields from voxel sizes (x, y, z) in millimetres."""
    x, y, z = (round(float(v), 6) for v in list(zooms)[:3])
    return {"XYSpacing": f"[{x}, {y}]", "ZSpacing": z}


def resolve_dataset_dir(root: str | Path) -> Path:
    """The ``dataset/`` folder, given either it or the folder that contains it."""
    root = Path(root).expanduser()
    if (root / DATASET_FOLDER).is_dir():
        return root / DATASET_FOLDER
    markers = [folder for folder, _ in CSV_KINDS.values()] + [SEG_DIR.parts[0]]
    markers += [f for s in SPLITS for f in split_folders(s)]
    if root.is_dir() and (root.name == DATASET_FOLDER or any((root / m).is_dir() for m in markers)):
        return root
    raise FileNotFoundError(
        f"no CT-RATE layout at {root}: expected {root / DATASET_FOLDER}/ (or {root} itself to be "
        "the dataset/ folder with radiology_text_reports/, metadata/, train/ ...). Build the "
        "embedded one with `cagcl-mini make-data --out <folder>`."
    )
