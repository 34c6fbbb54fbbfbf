"""RAD-ChestCT from its Zenodo record, converted into our CT-RATE layout.

The public release (Zenodo record 6406114, about 10% of the dataset: 3,630 chest CTs) holds one
``.npz`` per volume (``trn*`` train, ``val*`` validation, ``tst*`` test; array ``ct``, int16 HU
clipped to [-1000, 1000], resampled to 0.8 mm isotropic, axes (slice, row, column)) and per split
an ``img{train,valid,test}_Abnormality_and_Location_Labels.csv`` whose columns are
``<abnormality>*<location>`` (84 abnormalities x 52 locations) keyed by ``NoteAcc_DEID`` (the file
stem). Files are shared on request: the record's API needs a personal access token
(``ZENODO_TOKEN``) of an account whose request was granted.

What we do: list the record's files (``/api/records/<id>/files``, sizes and ``md5:`` checksums),
take the first ``limit`` volumes of the split in natural order (``trn`` for train, ``val`` for
valid; ``tst`` is not fetched), verify each download's md5, convert it to NIfTI
(``valid_<n>_a_1.nii.gz``, n = 1-based position of the file in the split's sorted list, so the
numbering does not depend on ``limit``; ``rad_chestct_ids.csv`` at the root maps names back), and
write CT-RATE-style CSV rows. The affine assumes the published axis order: slices head to feet,
rows front to back, columns right to left (DICOM LPS order), i.e. ``diag(-0.8, -0.8, -0.8)``.

Labels map to CT-RATE names only where they correspond (``LABEL_MAP``): an abnormality counts if
any of its columns is 1 at an allowed location (``None`` = any location). The mapping is
approximate where the vocabularies differ: ``air_trapping`` stands in for the mosaic attenuation
pattern, ``coronary_artery_disease`` and calcified plaque in the heart for coronary calcification,
``hernia`` at the diaphragm, oesophagus or stomach for hiatal hernia. The other 60-odd
RAD-ChestCT abnormalities (mass, pneumothorax, ...) have no CT-RATE column and are dropped.
RAD-ChestCT publishes no report text: ``Findings_EN`` lists the mapped positive labels as
"<Label> is present." sentences, and ``Impressions_EN`` says the text was generated from labels,
so report-side results on this source only echo the labels.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import quote

import nibabel as nib
import numpy as np
import pandas as pd

from cagcl_mini import layout
from cagcl_mini.anatomy import CT_RATE_LABELS
from cagcl_mini.fileio import atomic_path
from data_download.errors import AccessDeniedError, DownloadError, RemoteNotFoundError
from data_download.http import (
    RemoteFile,
    check_token_transport,
    download,
    ensure_free_space,
    ensure_writable,
    get_json,
)
from data_download.summary import DownloadReport
from data_download.tables import upsert_rows

log = logging.getLogger("data_download")

SOURCE = "rad-chestct"
RECORD_ID = "6406114"
ZENODO_URL = "https://zenodo.org"
TOKEN_ENV = "ZENODO_TOKEN"
SPACING_MM = 0.8
ID_COLUMN = "NoteAcc_DEID"
PREFIX = {"train": "trn", "valid": "val"}
LABEL_FILE = {
    "train": "imgtrain_Abnormality_and_Location_Labels.csv",
    "valid": "imgvalid_Abnormality_and_Location_Labels.csv",
}
ACCESS_HELP = (
    f"RAD-ChestCT's files are shared on request: ask for access on {ZENODO_URL}/records/{RECORD_ID}, "
    f"then create a personal access token at {ZENODO_URL}/account/settings/applications/ "
    f"and export {TOKEN_ENV}=<token>."
)
REPORT_NOTE = "Generated from RAD-ChestCT labels; no radiology report is available."

_LUNG = frozenset(
    {
        "lung",
        "left_lung",
        "right_lung",
        "left_upper",
        "left_mid",
        "left_lower",
        "right_upper",
        "right_mid",
        "right_lower",
    }  # fmt: skip
)
_AORTA = frozenset({"aorta"})
_HEART = frozenset({"heart"})
_HIATUS = frozenset({"diaphragm", "esophagus", "stomach"})
_DEVICES = ("catheter_or_port", "pacemaker_or_defib", "hardware", "stent", "chest_tube",
            "tracheal_tube", "gi_tube", "clip", "staple", "heart_valve_replacement")  # fmt: skip

# CT-RATE column -> ((RAD-ChestCT abnormality, allowed locations or None for any), ...)
LABEL_MAP: dict[str, tuple[tuple[str, frozenset[str] | None], ...]] = {
    "Medical material": tuple((d, None) for d in _DEVICES),
    "Arterial wall calcification": (("atherosclerosis", None), ("calcification", _AORTA), ("plaque", _AORTA)),
    "Cardiomegaly": (("cardiomegaly", None),),
    "Pericardial effusion": (("pericardial_effusion", None),),
    "Coronary artery wall calcification": (("coronary_artery_disease", None), ("calcification", _HEART), ("plaque", _HEART)),
    "Hiatal hernia": (("hernia", _HIATUS),),
    "Lymphadenopathy": (("lymphadenopathy", None),),
    "Emphysema": (("emphysema", None),),
    "Atelectasis": (("atelectasis", None),),
    "Lung nodule": (("nodule", _LUNG), ("nodulegr1cm", _LUNG), ("scattered_nod", _LUNG)),
    "Lung opacity": (("opacity", _LUNG), ("groundglass", _LUNG), ("airspace_disease", _LUNG), ("infiltrate", _LUNG)),
    "Pulmonary fibrotic sequela": (("fibrosis", _LUNG), ("scarring", _LUNG), ("honeycombing", _LUNG), ("reticulation", _LUNG)),
    "Pleural effusion": (("pleural_effusion", None),),
    "Mosaic attenuation pattern": (("air_trapping", None),),
    "Peribronchial thickening": (("bronchial_wall_thickening", None),),
    "Consolidation": (("consolidation", None),),
    "Bronchiectasis": (("bronchiectasis", None), ("bronchiolectasis", None)),
    "Interlobular septal thickening": (("septal_thickening", None),),
}  # fmt: skip
assert set(LABEL_MAP) == set(CT_RATE_LABELS)


def map_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """RAD-ChestCT label table -> ``ID_COLUMN`` + the 18 CT-RATE columns (0/1 ints).

    Columns may be ``abnormality*location`` or plain ``abnormality`` (location unknown: allowed).
    """
    if ID_COLUMN not in frame.columns:
        raise DownloadError(f"the RAD-ChestCT label table has no {ID_COLUMN!r} column")
    out = pd.DataFrame({ID_COLUMN: frame[ID_COLUMN].astype(str)})
    parsed = {}
    for column in frame.columns:
        if column != ID_COLUMN:
            abnormality, _, location = str(column).partition("*")
            parsed[column] = (abnormality.strip(), location.strip() or None)
    for label, rules in LABEL_MAP.items():
        hits = [
            column
            for column, (abnormality, location) in parsed.items()
            for wanted, places in rules
            if abnormality == wanted and (places is None or location is None or location in places)
        ]
        values = frame[hits].fillna(0).to_numpy(dtype=float) if hits else np.zeros((len(frame), 0))
        out[label] = (values > 0.5).any(axis=1).astype(int) if hits else 0
    return out


def npz_to_nifti(npz: Path, out: Path, spacing: float = SPACING_MM) -> Path:
    """Write the ``ct`` array of a RAD-ChestCT ``.npz`` as an int16 NIfTI with ``spacing`` mm voxels."""
    with np.load(npz, allow_pickle=False) as archive:
        key = (
            "ct"
            if "ct" in archive.files
            else (archive.files[0] if len(archive.files) == 1 else None)
        )
        if key is None:
            raise DownloadError(f"{npz.name}: expected an array named 'ct', found {archive.files}")
        volume = archive[key]
    if volume.ndim != 3:
        raise DownloadError(f"{npz.name}: expected a 3-D volume, got shape {volume.shape}")
    if volume.size and (volume.min() < -32768 or volume.max() > 32767):
        raise DownloadError(
            f"{npz.name}: values {volume.min()}..{volume.max()} do not fit int16 HU"
        )
    data = np.ascontiguousarray(np.rint(volume).astype(np.int16).transpose(2, 1, 0))  # (x, y, z)
    affine = np.diag([-spacing, -spacing, -spacing, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(out, suffix=".tmp.nii.gz") as tmp:  # nibabel goes by the ending
        nib.save(img, tmp)
    return out


def list_record(base: str, record: str, headers: dict[str, str]) -> list[RemoteFile]:
    """The record's files with size and md5 (destinations filled in by the caller)."""
    url = f"{base}/api/records/{record}/files"
    try:
        data = get_json(url, headers, name=f"Zenodo record {record} file list")
    except AccessDeniedError as exc:
        raise AccessDeniedError(f"{exc}. {ACCESS_HELP}", exc.status) from None
    except RemoteNotFoundError:
        raise DownloadError(f"Zenodo record {record} not found at {base}") from None
    entries = data.get("entries", data.get("files")) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise DownloadError(f"Zenodo record {record}: no file list in the answer. {ACCESS_HELP}")
    files = []
    for entry in entries:
        key = entry["key"]
        checksum = str(entry.get("checksum") or "")
        files.append(
            RemoteFile(
                url=f"{base}/api/records/{record}/files/{quote(key)}/content",
                dest=Path(key),
                name=key,
                size=entry.get("size"),
                md5=checksum[4:] if checksum.startswith("md5:") else None,
                headers=headers,
            )
        )
    return files


def _fetch(item: RemoteFile, report: DownloadReport, **kwargs) -> bool:
    try:
        status = download(item, **kwargs)
    except AccessDeniedError as exc:
        raise AccessDeniedError(f"{exc}. {ACCESS_HELP}", exc.status) from None
    except RemoteNotFoundError:
        report.skip(item.name, "Zenodo has no such file (404), skipped")
        return False
    (report.fetched if status == "fetched" else report.present).append(item.name)
    return True


def _report_row(name: str, labels: pd.Series | None) -> dict[str, str]:
    positives = [
        label for label in CT_RATE_LABELS if labels is not None and labels.get(label, 0) == 1
    ]
    findings = " ".join(f"{label} is present." for label in positives)
    return {
        "VolumeName": name,
        "Findings_EN": findings or "None of the CT-RATE findings is labelled in this scan.",
        "Impressions_EN": REPORT_NOTE,
    }


def download_rad_chestct(
    dest: Path,
    *,
    split: str = "valid",
    limit: int | None = 10,
    dry_run: bool = False,
    record: str = RECORD_ID,
    mirror: str | None = None,
    token: str | None = None,
    keep_npz: bool = False,
    progress: bool = True,
    retries: int = 4,
    backoff: float = 1.0,
) -> DownloadReport:
    """Fetch the first ``limit`` RAD-ChestCT volumes of ``split`` and convert them to our layout.

    ``mirror`` replaces ``https://zenodo.org``; ``token`` defaults to ``$ZENODO_TOKEN`` and is
    required for Zenodo itself (AccessDeniedError before any request when missing), optional for
    a mirror, and never sent over plain http except to this machine (InsecureTransportError).
    The ``.npz`` files are deleted after conversion unless ``keep_npz``.
    """
    layout.check_split(split)
    base = (mirror or ZENODO_URL).rstrip("/")
    token = token or os.environ.get(TOKEN_ENV)
    if not token and mirror is None:  # Zenodo answers nothing without one: say so at once
        raise AccessDeniedError(
            f"{TOKEN_ENV} is not set, and Zenodo record {record} needs one: its files are shared "
            f"only with accounts whose access request was granted. Ask for access on "
            f"{ZENODO_URL}/records/{record}, then create a personal access token at "
            f"{ZENODO_URL}/account/settings/applications/ and export {TOKEN_ENV}=<token>."
        )
    if token:
        check_token_transport(
            base, TOKEN_ENV, f"; or unset {TOKEN_ENV} if the --mirror needs no token"
        )
    dest = ensure_writable(Path(dest), create=not dry_run)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    report = DownloadReport(SOURCE, dest, dry_run=dry_run)
    cache = dest / ".download" / SOURCE
    files = list_record(base, record, headers)

    volumes = sorted(
        (f for f in files if f.name.startswith(PREFIX[split]) and f.name.endswith(".npz")),
        key=lambda f: layout.natural_key(f.name),
    )
    if not volumes:
        raise DownloadError(f"Zenodo record {record} lists no {PREFIX[split]}*.npz volumes")
    names = {f.name: layout.volume_name(split, i) for i, f in enumerate(volumes, start=1)}
    chosen = volumes[:limit] if limit else volumes
    label_file = next((f for f in files if f.name == LABEL_FILE[split]), None)
    if label_file is None:
        report.skip(LABEL_FILE[split], "not in the record; labels are left at 0")
    for item in ([label_file] if label_file else []) + chosen:
        item.dest = cache / item.name
    # to fetch: volumes neither converted nor already downloaded, and the label table once
    todo = [
        f
        for f in chosen
        if not layout.ct_path(dest, names[f.name]).is_file() and not f.dest.is_file()
    ]
    if label_file is not None and not label_file.dest.is_file():
        todo.insert(0, label_file)
    if dry_run:
        for item in todo:
            report.plan(item.name, item.size)
        return report
    ensure_free_space(dest, 2 * sum(f.size or 0 for f in todo))

    labels = None
    if label_file is not None and _fetch(
        label_file, report, progress=progress, retries=retries, backoff=backoff
    ):
        labels = (
            map_labels(pd.read_csv(label_file.dest)).drop_duplicates(ID_COLUMN).set_index(ID_COLUMN)
        )
    converted = []
    for item in chosen:
        name = names[item.name]
        target = layout.ct_path(dest, name)
        if not target.is_file():
            if not _fetch(item, report, progress=progress, retries=retries, backoff=backoff):
                continue
            npz_to_nifti(item.dest, target)
            report.written.append(target)
            if not keep_npz:
                item.dest.unlink()
        else:
            report.present.append(item.name)
        converted.append((name, item.name))
    if converted:
        report.written += _write_tables(dest, split, converted, labels)
    report.notes.append(
        "RAD-ChestCT has no TotalSegmentator maps; make them with "
        f"`python -m data_download totalseg-masks --dest {dest} --split {split}`"
    )
    return report


def _write_tables(
    dest: Path, split: str, converted: list[tuple[str, str]], labels: pd.DataFrame | None
) -> list[Path]:
    stems = {name: source.removesuffix(".npz") for name, source in converted}
    label_rows, report_rows = [], []
    for name, stem in stems.items():
        row = labels.loc[stem] if labels is not None and stem in labels.index else None
        if row is None and labels is not None:
            log.warning(
                "%s: no row for %s in %s; labels left at 0", SOURCE, stem, LABEL_FILE[split]
            )
        label_rows.append(
            {
                "VolumeName": name,
                **{c: int(row[c]) if row is not None else 0 for c in CT_RATE_LABELS},
            }
        )
        report_rows.append(_report_row(name, row))
    metadata = [
        {"VolumeName": n, "XYSpacing": f"[{SPACING_MM}, {SPACING_MM}]", "ZSpacing": SPACING_MM,
         "RescaleSlope": 1.0, "RescaleIntercept": 0.0}
        for n in stems
    ]  # fmt: skip
    ids = [{"VolumeName": n, ID_COLUMN: s, "source_file": s + ".npz"} for n, s in stems.items()]
    return [
        upsert_rows(layout.csv_path(dest, "reports", split), report_rows),
        upsert_rows(layout.csv_path(dest, "labels", split), label_rows),
        upsert_rows(layout.csv_path(dest, "metadata", split), metadata),
        upsert_rows(dest / "rad_chestct_ids.csv", ids),
    ]
