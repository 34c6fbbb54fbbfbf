"""The real TotalSegmentator example CT and its v2 label map, as a one-volume ``valid`` split.

Both files come from the TotalSegmentator repository (Apache-2.0) at a pinned commit and are
checked against pinned sha256 hashes, then stored unchanged in the CT-RATE layout as
``valid_1_a_1.nii.gz``. The scan is an upper-abdominal CT (122x101x30 voxels at 3 mm, int16 HU),
so the liver, spleen, kidneys, aorta and lung bases are in view.

The CSV rows written next to it are honest about what is known:
- metadata: spacing from the NIfTI header; RescaleSlope 1 and RescaleIntercept 0 because the file
  already stores Hounsfield units;
- report: no radiology report exists for this scan, so ``Findings_EN`` says so in one sentence
  (``EXAMPLE_FINDINGS``) and ``Impressions_EN`` likewise; text-side results on it mean nothing;
- labels: all 18 CT-RATE columns are 0, meaning *unknown*, not *normal*.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib

from cagcl_mini import layout
from cagcl_mini.anatomy import CT_RATE_LABELS
from data_download.errors import AccessDeniedError, ChecksumError, RemoteNotFoundError
from data_download.http import RemoteFile, download, ensure_writable, remote_size, verify
from data_download.summary import DownloadReport
from data_download.tables import upsert_rows

log = logging.getLogger("data_download")

SOURCE = "totalseg-example"
COMMIT = "c78d8800af7fe05b8efb3c4ed939db16b6c0be62"
BASE_URL = (
    f"https://raw.githubusercontent.com/wasserth/TotalSegmentator/{COMMIT}/tests/reference_files/"
)
CT_FILE = "example_ct_sm.nii.gz"
SEG_FILE = "example_seg.nii.gz"
SHA256 = {
    CT_FILE: "e50c00b2914e2cac0aaee8e7f3b5f57d44d9f21bfd5c0577271c54c0cb49e9fb",
    SEG_FILE: "8be652475a4aaae83103a66bfb3345314b1fc06742807a06cf5005f7a7913a2d",
}
SPLIT = "valid"
VOLUME = layout.volume_name(SPLIT, 1)  # valid_1_a_1.nii.gz
EXAMPLE_FINDINGS = (
    "Upper abdominal CT example from the TotalSegmentator test files; "
    "no radiology report is available for this scan."
)
EXAMPLE_IMPRESSIONS = "No report available."


def example_files(dest: Path, mirror: str | None = None) -> list[RemoteFile]:
    """The two files to fetch, with their layout destinations and pinned hashes."""
    base = mirror if mirror is not None else BASE_URL
    if not base.endswith("/"):
        base += "/"
    targets = {
        CT_FILE: layout.ct_path(dest, VOLUME),
        SEG_FILE: layout.mask_path(dest, VOLUME),
    }
    return [
        RemoteFile(url=base + name, dest=path, name=name, sha256=SHA256[name])
        for name, path in targets.items()
    ]


def _verified(item: RemoteFile) -> bool:
    try:
        verify(item, item.dest)
    except (ChecksumError, FileNotFoundError):
        return False
    return True


def write_tables(dest: Path) -> list[Path]:
    """Write (or update) the report, labels and metadata rows of the example volume."""
    img = nib.load(layout.ct_path(dest, VOLUME))
    metadata = {
        "VolumeName": VOLUME,
        **layout.spacing_columns(img.header.get_zooms()),
        "RescaleSlope": 1.0,
        "RescaleIntercept": 0.0,
    }
    report = {
        "VolumeName": VOLUME,
        "Findings_EN": EXAMPLE_FINDINGS,
        "Impressions_EN": EXAMPLE_IMPRESSIONS,
    }
    labels = {"VolumeName": VOLUME, **{name: 0 for name in CT_RATE_LABELS}}
    return [
        upsert_rows(layout.csv_path(dest, "reports", SPLIT), [report]),
        upsert_rows(layout.csv_path(dest, "labels", SPLIT), [labels]),
        upsert_rows(layout.csv_path(dest, "metadata", SPLIT), [metadata]),
    ]


def download_totalseg_example(
    dest: Path,
    *,
    mirror: str | None = None,
    dry_run: bool = False,
    progress: bool = True,
    retries: int = 4,
    backoff: float = 1.0,
) -> DownloadReport:
    """Fetch the example CT and label map into ``dest`` and write its CSV rows.

    ``mirror`` replaces the GitHub base URL: each file is fetched as ``mirror + file name``.
    With ``dry_run`` only the sizes are asked for (HEAD requests) and nothing is written.
    """
    dest = ensure_writable(Path(dest), create=not dry_run)
    report = DownloadReport(SOURCE, dest, dry_run=dry_run)
    files = example_files(dest, mirror)
    if dry_run:
        for item in files:
            if _verified(item):
                report.present.append(item.name)
            else:
                report.plan(item.name, remote_size(item.url, name=item.name))
        return report
    for item in files:
        try:
            status = download(item, progress=progress, retries=retries, backoff=backoff)
        except AccessDeniedError as exc:
            raise AccessDeniedError(
                f"{exc}; the example files are public, so check the --mirror URL", exc.status
            ) from None
        except RemoteNotFoundError as exc:
            if item.name == CT_FILE:
                raise  # without the CT there is nothing to write
            report.skip(item.name, f"not on the server, skipped ({exc})")
            continue
        (report.fetched if status == "fetched" else report.present).append(item.name)
        report.written.append(item.dest)
    report.written += write_tables(dest)
    report.notes.append(
        f"one-volume '{SPLIT}' split; labels are 0 = unknown and the report text is a placeholder"
    )
    return report
