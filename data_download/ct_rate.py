"""CT-RATE from the gated Hugging Face dataset ``ibrahimhamamci/CT-RATE``.

Order of work: the three CSVs of the split first (reports, labels, metadata; kept unchanged
under ``<dest>/.download/ct-rate/``), then the first ``limit`` volumes of the split in natural
order of the reports CSV's ``VolumeName`` column, and with ``include_masks`` their
TotalSegmentator ``total`` label maps from the dataset's ``dataset/ts_seg/ts_total`` folder.
Finally the rows of the CSVs for the volumes now on disk are written into our layout
(``cagcl_mini.data.dataset`` reads them); the CSV contents are copied as published.

The hub is asked through ``huggingface_hub`` (``HfApi.get_paths_info`` for sizes and LFS sha256,
``list_repo_tree`` for a dry run before the CSVs are cached); the bytes come through our own
resumable downloader with the token in the ``Authorization`` header. Newer CT-RATE versions keep
volumes under ``dataset/{split}_fixed`` and older ones under ``dataset/{split}``: both are tried,
``_fixed`` first, and each lands in the local folder of the same name: ``_fixed`` volumes are
already in HU (CT-RATE applied the metadata CSV's rescale and cast to int16), and the loader
knows them by that folder and never applies the CSV rescale to them. Files the hub does not have are
reported and skipped. The token comes from ``HF_TOKEN`` or ``hf auth login`` and is never printed.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import pandas as pd
from huggingface_hub import HfApi, constants, get_token, hf_hub_url
from huggingface_hub import errors as hub_errors

from cagcl_mini import layout
from data_download.errors import AccessDeniedError, DownloadError, RemoteNotFoundError
from data_download.http import (
    RemoteFile,
    check_token_transport,
    download,
    ensure_free_space,
    ensure_writable,
)
from data_download.summary import DownloadReport
from data_download.tables import upsert_rows

log = logging.getLogger("data_download")

SOURCE = "ct-rate"
REPO_ID = "ibrahimhamamci/CT-RATE"
DATASET_URL = f"https://huggingface.co/datasets/{REPO_ID}"
GATED_HELP = (
    f"CT-RATE is a gated dataset: sign in at {DATASET_URL}, accept its terms of use, create a "
    "read token at https://huggingface.co/settings/tokens, then export HF_TOKEN=<token> "
    "or run `hf auth login`."
)
TOKEN_SOURCES = "HF_TOKEN or `hf auth login`"
TABLE_KINDS = ("reports", "labels", "metadata")
MASKS_NOTE = (
    "cagcl_mini.data.dataset needs a TotalSegmentator map for every volume: fetch CT-RATE's with "
    "--include-masks, or make them with `python -m data_download totalseg-masks --dest DIR`"
)
_PATHS_PER_REQUEST = 100


def repo_csv_path(kind: str, split: str) -> str:
    """Path of a split's CSV in the hub repository (same names as our layout)."""
    return f"{layout.DATASET_FOLDER}/{layout.csv_relpath(kind, split)}"


def repo_candidates(name: str, *, mask: bool = False) -> list[str]:
    """Hub paths where a volume (or its ts_total mask) may live, ``_fixed`` folder first."""
    return [path for _, path in folder_candidates(name, mask=mask)]


def folder_candidates(name: str, *, mask: bool = False) -> list[tuple[str, str]]:
    """(split folder, hub path) pairs where a volume (or its mask) may live, ``_fixed`` first."""
    split = layout.parse_volume_name(name)[0]
    prefix = f"dataset/{layout.SEG_DIR}" if mask else "dataset"
    return [
        (folder, f"{prefix}/{layout.volume_relpath(name, folder)}")
        for folder in layout.split_folders(split)
    ]


def local_volume(dest: Path, name: str) -> Path | None:
    """The downloaded volume ``name`` under ``dest`` (either split folder), or None."""
    split = layout.parse_volume_name(name)[0]
    for folder in layout.split_folders(split):
        path = layout.ct_path(dest, name, folder)
        if path.is_file():
            return path
    return None


def normalise_name(name: str) -> str:
    """A CSV ``VolumeName`` with the ``.nii.gz`` suffix CT-RATE uses."""
    name = str(name).strip()
    return name if name.endswith(layout.NIFTI_SUFFIX) else name + layout.NIFTI_SUFFIX


def hub_token(token: str | None = None) -> str:
    """The token to use: the argument, else ``HF_TOKEN`` or the saved login; clear error if none."""
    if token:
        return token
    found = get_token()
    if not found:
        raise AccessDeniedError("no Hugging Face token found. " + GATED_HELP)
    return found


class _Hub:
    """The few hub calls we need, with hub errors turned into our errors (never showing the token)."""

    def __init__(self, repo_id: str, revision: str, token: str, endpoint: str | None) -> None:
        self.repo_id, self.revision = repo_id, revision
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        check_token_transport(
            self.endpoint,
            f"the Hugging Face token ({TOKEN_SOURCES})",
            "; point --mirror (or HF_ENDPOINT) at an https:// hub",
        )
        self._token = token
        self._api = HfApi(endpoint=self.endpoint, token=token)

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except hub_errors.GatedRepoError:
            raise AccessDeniedError(
                f"access to {self.repo_id} refused ({what}): your account has not been granted "
                "access yet. " + GATED_HELP
            ) from None
        except hub_errors.RepositoryNotFoundError:
            raise AccessDeniedError(
                f"{self.repo_id} is not visible with this token ({what}): the token is invalid, "
                "or the terms are not accepted. " + GATED_HELP
            ) from None
        except hub_errors.RevisionNotFoundError:
            raise DownloadError(
                f"revision {self.revision!r} of {self.repo_id} does not exist"
            ) from None
        except hub_errors.OfflineModeIsEnabled:
            raise DownloadError("HF_HUB_OFFLINE is set; unset it to download CT-RATE") from None
        except hub_errors.HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                raise AccessDeniedError(
                    f"the hub refused {what} ({status}). " + GATED_HELP, status
                ) from None
            if status == 404:
                raise RemoteNotFoundError(f"{what}: not on the hub (404)") from None
            raise DownloadError(f"the hub answered {status} for {what}") from None
        except Exception as exc:  # the HTTP client's own errors (connection refused, timeout...)
            raise DownloadError(
                f"cannot reach the hub at {self.endpoint} ({what}): {type(exc).__name__}"
            ) from None

    def paths_info(self, paths: list[str]) -> dict[str, object]:
        """Hub file entries (size, LFS sha256) of those ``paths`` that exist."""
        found: dict[str, object] = {}
        for i in range(0, len(paths), _PATHS_PER_REQUEST):
            chunk = paths[i : i + _PATHS_PER_REQUEST]
            entries = self._call(
                "listing file sizes",
                self._api.get_paths_info,
                self.repo_id,
                chunk,
                repo_type="dataset",
                revision=self.revision,
            )
            found.update({e.path: e for e in entries if hasattr(e, "size")})
        return found

    def first_volume_names(self, split: str, limit: int | None) -> list[str]:
        """The first ``limit`` volume names of a split by listing the repo tree (no CSV needed)."""
        patients: dict[str, str] = {}  # patient folder name -> repo path, `_fixed` preferred
        for folder in layout.split_folders(split):
            try:
                entries = self._tree(f"dataset/{folder}", recursive=False)
            except RemoteNotFoundError:
                continue
            for entry in entries:
                if not hasattr(entry, "size"):  # a folder
                    patients.setdefault(PurePosixPath(entry.path).name, entry.path)
        names: list[str] = []
        for patient in sorted(patients, key=layout.natural_key):
            files = self._tree(patients[patient], recursive=True)
            names += sorted(
                (PurePosixPath(e.path).name for e in files if e.path.endswith(layout.NIFTI_SUFFIX)),
                key=layout.natural_key,
            )
            if limit and len(names) >= limit:
                break
        return names[:limit] if limit else names

    def _tree(self, path: str, *, recursive: bool) -> list:
        return self._call(
            f"listing {path}",
            lambda: list(
                self._api.list_repo_tree(
                    self.repo_id,
                    path,
                    recursive=recursive,
                    repo_type="dataset",
                    revision=self.revision,
                )
            ),
        )

    def remote_file(self, entry, dest: Path) -> RemoteFile:
        """A download job for a hub entry, verified by its size and (for LFS files) sha256."""
        lfs = getattr(entry, "lfs", None)
        url = hf_hub_url(
            self.repo_id,
            entry.path,
            repo_type="dataset",
            revision=self.revision,
            endpoint=self.endpoint,
        )
        return RemoteFile(
            url=url,
            dest=dest,
            name=entry.path,
            size=entry.size,
            sha256=lfs.sha256 if lfs else None,
            headers={"Authorization": f"Bearer {self._token}"},
        )


def select_volumes(reports_csv: Path, split: str, limit: int | None) -> list[str]:
    """The first ``limit`` volume names of ``split`` in a reports CSV, in natural order."""
    frame = pd.read_csv(reports_csv, usecols=["VolumeName"])
    names = set()
    for raw in frame["VolumeName"].dropna():
        name = normalise_name(raw)
        try:
            if layout.parse_volume_name(name)[0] == split:
                names.add(name)
        except ValueError:
            log.warning("%s: skipping unexpected VolumeName %r", reports_csv.name, raw)
    ordered = sorted(names, key=layout.natural_key)
    return ordered[:limit] if limit else ordered


def _present(item: RemoteFile) -> bool:
    return item.dest.is_file() and (item.size is None or item.dest.stat().st_size == item.size)


def _fetch(item: RemoteFile, report: DownloadReport, **kwargs) -> None:
    try:
        status = download(item, **kwargs)
    except AccessDeniedError as exc:
        raise AccessDeniedError(f"{exc}. " + GATED_HELP, exc.status) from None
    except RemoteNotFoundError:
        report.skip(item.name, "the hub has no such file (404), skipped")
        return
    (report.fetched if status == "fetched" else report.present).append(item.name)


def write_tables(dest: Path, cache: Path, split: str, names: list[str]) -> list[Path]:
    """Copy the rows of the cached CSVs for the volumes on disk into the layout CSVs."""
    on_disk = {n for n in names if local_volume(dest, n) is not None}
    written = []
    for kind in TABLE_KINDS:
        source = cache / repo_csv_path(kind, split)
        if not source.is_file() or not on_disk:
            continue
        frame = pd.read_csv(source)
        if "VolumeName" not in frame.columns:
            raise DownloadError(f"{source} has no VolumeName column; it is not a CT-RATE table")
        frame["VolumeName"] = frame["VolumeName"].map(normalise_name)
        rows = frame[frame["VolumeName"].isin(on_disk)].drop_duplicates("VolumeName")
        written.append(upsert_rows(layout.csv_path(dest, kind, split), rows))
    return written


def download_ct_rate(
    dest: Path,
    *,
    split: str = "valid",
    limit: int | None = 10,
    include_masks: bool = False,
    dry_run: bool = False,
    revision: str = "main",
    repo_id: str = REPO_ID,
    endpoint: str | None = None,
    token: str | None = None,
    progress: bool = True,
    retries: int = 4,
    backoff: float = 1.0,
) -> DownloadReport:
    """Fetch CT-RATE's CSVs and the first ``limit`` volumes of ``split`` (all when None or 0).

    ``endpoint`` overrides the hub URL (default: ``HF_ENDPOINT`` or huggingface.co); it must be
    https unless it is this machine (the token is refused over plain http elsewhere). With
    ``dry_run`` the files and sizes are listed from hub metadata and nothing is downloaded.
    """
    layout.check_split(split)
    hub = _Hub(repo_id, revision, hub_token(token), endpoint)  # token checks before any work
    dest = ensure_writable(Path(dest), create=not dry_run)
    report = DownloadReport(SOURCE, dest, dry_run=dry_run)
    cache = dest / ".download" / SOURCE
    fetch_kwargs = {"progress": progress, "retries": retries, "backoff": backoff}

    csv_paths = [repo_csv_path(kind, split) for kind in TABLE_KINDS]
    csv_info = hub.paths_info(csv_paths)
    if csv_paths[0] not in csv_info:
        raise DownloadError(
            f"{csv_paths[0]} is not in {repo_id} at {revision!r}; its layout may have changed"
        )
    tables = []
    for path in csv_paths:
        if path in csv_info:
            tables.append(hub.remote_file(csv_info[path], cache / path))
        else:
            report.skip(path, "not on the hub, skipped")
    for item in tables:
        if dry_run:
            if _present(item):
                report.present.append(item.name)
            else:
                report.plan(item.name, item.size)
        else:
            _fetch(item, report, **fetch_kwargs)

    reports_csv = tables[0].dest
    if reports_csv.is_file():
        names = select_volumes(reports_csv, split, limit)
    elif dry_run:  # before the CSVs were ever fetched: the same natural order from the tree
        names = hub.first_volume_names(split, limit)
    else:
        raise DownloadError(f"{tables[0].name} could not be fetched; it lists the volumes to fetch")

    wanted = [c for n in names for c in repo_candidates(n)]
    if include_masks:
        wanted += [c for n in names for c in repo_candidates(n, mask=True)]
    info = hub.paths_info(wanted)
    jobs: list[RemoteFile] = []
    for name in names:
        for mask in (False, True):
            if mask and not include_masks:
                continue
            found = next(((f, c) for f, c in folder_candidates(name, mask=mask) if c in info), None)
            if found is None:
                what = "TotalSegmentator mask" if mask else "volume"
                report.skip(f"{name} ({what})", "not on the hub, skipped")
                continue
            folder, remote = found  # kept locally: `_fixed` says "already in HU" to the loader
            target = (layout.mask_path if mask else layout.ct_path)(dest, name, folder)
            jobs.append(hub.remote_file(info[remote], target))

    todo = [job for job in jobs if not _present(job)]
    if dry_run:
        report.present += [job.name for job in jobs if job not in todo]
        for job in todo:
            report.plan(job.name, job.size)
        return report
    ensure_free_space(dest, sum(job.size or 0 for job in todo))
    for job in jobs:
        _fetch(job, report, **fetch_kwargs)
    report.written += write_tables(dest, cache, split, names)
    if not include_masks:
        report.notes.append(MASKS_NOTE)
    return report
