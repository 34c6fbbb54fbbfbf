"""The embedded synthetic dataset: procedural thorax + upper-abdomen CT in CT-RATE's layout.

``make_dataset(out)`` writes, under ``out/``::

    dataset/{train,valid}/<split>_<pid>/<split>_<pid>_a/<split>_<pid>_a_1.nii.gz     CT, int16
    dataset/ts_seg/ts_total/{train,valid}/...same relative path...                 TS v2 `total`, uint8
    dataset/ts_seg/findings/{train,valid}/...same relative path...                 finding masks, uint8
    dataset/ts_seg/findings/labels.json                                  the finding masks' label table
    dataset/radiology_text_reports/{train_reports,validation_reports}.csv
    dataset/multi_abnormality_labels/{train,valid}_predicted_labels.csv
    dataset/metadata/{train,validation}_metadata.csv
    dataset.json                                                                 manifest, written last

Stored values are ``HU - RescaleIntercept`` (slope 1, intercept -1024 or -8192, mixed across
volumes) and, as in CT-RATE, the NIfTI header does **not** carry that rescale (``scl_slope`` and
``scl_inter`` are unset): apply the metadata CSV's ``RescaleSlope``/``RescaleIntercept`` to get HU.
Label maps have the CT's shape and RAS+ affine.

Reproducible: volume ``<split>_<pid>`` is drawn from ``SeedSequence([seed, split_index, pid])``, so
it is byte-identical whatever the worker count and whatever ``n_train``/``n_valid`` are.
Crash-safe: the build happens in a sibling folder ``.<name>.partial`` and is renamed into place;
``dataset.json`` (parameters + every file's size and sha256) is written last and is what marks the
dataset complete. A rerun after a kill resumes: finished volumes whose bytes still match their
recorded sha256 are kept.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from cagcl_mini import layout, paths
from cagcl_mini.anatomy import ALL_LABELS
from cagcl_mini.fileio import atomic_write_bytes, file_sha256, folder_lock, sha256
from cagcl_mini.phantom.finding_masks import finding_mask_file, write_label_table
from cagcl_mini.phantom.io import csv_bytes, nifti_gz_bytes
from cagcl_mini.phantom.plan import (
    METADATA_COLUMNS,
    CasePlan,
    PhantomSpec,
    plan_and_render,
    plan_case,
)
from cagcl_mini.progress import progress_bar

MANIFEST = "dataset.json"
WORKER_ENV = "CAGCL_MINI_PHANTOM_PARENT"  # set while worker processes run: the builder's pid
MARKER = ".cagcl-mini-build.json"  # inside a build folder: its parameters


class DatasetWriteError(OSError):
    """The dataset cannot be written where asked; the message names the folder and why."""


def stored_values(hu: np.ndarray, intercept: int) -> np.ndarray:
    """int16 values a scanner stores for HU with slope 1 and this intercept (HU - intercept)."""
    return (np.rint(hu) - np.float32(intercept)).astype(np.int16)


# plan_case's arguments: (seed, split, pid, size, difficulty, site)
CaseKey = tuple[int, str, int, int, str, str]


def _write_case(job: tuple[CaseKey, str]) -> dict[str, Any]:
    """Worker: plan and render one volume (once for both) and write its CT, label map and finding
    masks atomically. The record carries the plan back for the CSV tables."""
    key, root_text = job
    root = Path(root_text)
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    plan, vol = plan_and_render(*key)
    files = {}
    for rel, data in (
        (plan.volume_file, nifti_gz_bytes(stored_values(vol.hu, plan.intercept), vol.affine)),
        (plan.label_file, nifti_gz_bytes(vol.labels, vol.affine)),
        (finding_mask_file(plan.name), nifti_gz_bytes(vol.finding_map, vol.affine)),
    ):
        atomic_write_bytes(root / rel, data, root / ".tmp")
        files[rel] = {"bytes": len(data), "sha256": sha256(data)}
    return {
        "name": plan.name,
        "files": files,
        "cpu_s": time.process_time() - t_cpu,
        "wall_s": time.perf_counter() - t_wall,
        "plan": plan,
    }


# ----------------------------------------------------------------------------- checks
def read_manifest(root: Path | str) -> dict[str, Any] | None:
    """The parsed ``dataset.json`` of a dataset root, or None if absent or unreadable."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def dataset_complete(root: Path | str, params: dict[str, Any] | None = None) -> bool:
    """Whether ``root`` holds a finished phantom dataset (with these parameters, if given).

    Checks the manifest and that every file it lists exists with its recorded size (not the
    hashes: that would read the whole dataset).
    """
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None or (params is not None and manifest.get("params") != params):
        return False
    try:
        return all(
            (root / rel).stat().st_size == meta["bytes"] for rel, meta in manifest["files"].items()
        )
    except (OSError, KeyError, TypeError, AttributeError):
        return False


def _check_writable(out: Path) -> None:
    """Fail before any work if ``out`` cannot be created or written (error names the folder)."""
    if out.exists() and not out.is_dir():
        raise DatasetWriteError(f"cannot write the dataset to {out}: it exists and is not a folder")
    anc = out.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise DatasetWriteError(f"cannot write the dataset to {out}: {anc} is a file, not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent, prefix=f".{out.name}.probe"):
            pass
    except OSError as e:
        raise DatasetWriteError(
            f"cannot write the dataset to {out}: {e.strerror or e} (at {e.filename or out.parent})"
        ) from e
    if out.is_dir() and any(out.iterdir()):
        ours = (out / MANIFEST).is_file() or (out / MARKER).is_file()
        if not ours:
            raise DatasetWriteError(
                f"cannot write the dataset to {out}: the folder is not empty and is not a "
                "cagcl-mini dataset (no dataset.json); choose a new or empty folder"
            )


# ----------------------------------------------------------------------------- build
def _refuse_inside_a_worker() -> None:
    """Stop at once when a worker process of a running build reaches ``make_dataset``.

    Worker processes import the script that started the build; a script that calls a library
    function at module level (no ``if __name__ == "__main__":``) would make every worker start
    the same build and wait for the lock its parent holds. Failing here ends the worker, which
    the parent reports (see ``_render_all``)."""
    parent = os.environ.get(WORKER_ENV)
    if parent and parent != str(os.getpid()):
        raise DatasetWriteError(
            f"make_dataset was called inside a worker process of the dataset build of process "
            f'{parent}: the script that runs it needs `if __name__ == "__main__":` around its '
            "top-level code"
        )


def _pool_context() -> mp.context.BaseContext:
    """forkserver where available (safe when torch threads are running), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["cagcl_mini.phantom.build"])
        return ctx
    return mp.get_context("spawn")


def _prepare_partial(partial: Path, params: dict[str, Any]) -> None:
    marker = partial / MARKER
    if partial.exists():
        try:
            same = json.loads(marker.read_text()) == params
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(partial)
    if not partial.exists():
        partial.mkdir(parents=True)
        atomic_write_bytes(marker, json.dumps(params, sort_keys=True).encode())
    shutil.rmtree(partial / ".tmp", ignore_errors=True)


def _finished(partial: Path, name: str) -> dict[str, Any] | None:
    """The progress record of a volume whose files are complete (sha256 verified), else None."""
    try:
        record = json.loads((partial / ".progress" / f"{name}.json").read_text())
        for rel, meta in record["files"].items():
            if file_sha256(partial / rel) != meta["sha256"]:
                return None
        return record
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _render_all(
    todo: list[CaseKey], partial: Path, workers: int, progress: bool
) -> list[dict[str, Any]]:
    records = []
    jobs = [(key, str(partial)) for key in todo]
    bar = progress_bar(total=len(jobs), desc="phantom volumes", unit="vol", disable=not progress)

    def done(record: dict[str, Any]) -> None:
        atomic_write_bytes(
            partial / ".progress" / f"{record['name']}.json",
            json.dumps({k: v for k, v in record.items() if k != "plan"}, sort_keys=True).encode(),
            partial / ".tmp",
        )
        records.append(record)
        bar.update()

    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                done(_write_case(job))
        else:
            os.environ[WORKER_ENV] = str(os.getpid())  # inherited: see _refuse_inside_a_worker
            try:
                with ProcessPoolExecutor(
                    min(workers, len(jobs)), mp_context=_pool_context()
                ) as pool:
                    for future in as_completed([pool.submit(_write_case, job) for job in jobs]):
                        done(future.result())
            finally:
                os.environ.pop(WORKER_ENV, None)
    except BrokenProcessPool as exc:
        raise DatasetWriteError(
            f"a worker process died while writing the dataset in {partial} ({exc}); run "
            "`cagcl-mini make-data --workers 1` to see its error. From a script, build the "
            'dataset under `if __name__ == "__main__":` (worker processes import the script)'
        ) from None
    finally:
        bar.close()
    return records


def _write_tables(partial: Path, plans: list[CasePlan]) -> dict[str, dict[str, Any]]:
    files = {}
    report_columns = layout.REPORT_COLUMNS
    for split in layout.SPLITS:
        mine = [p for p in plans if p.split == split]
        tables = {
            "reports": csv_bytes(
                report_columns, [[p.report[c] for c in report_columns] for p in mine]
            ),
            "labels": csv_bytes(
                ("VolumeName", *(mine[0].label_columns() if mine else ALL_LABELS)),
                [p.label_row() for p in mine],
            ),
            "metadata": csv_bytes(
                METADATA_COLUMNS, [[p.metadata[c] for c in METADATA_COLUMNS] for p in mine]
            ),
        }
        for kind, data in tables.items():
            rel = f"{layout.DATASET_FOLDER}/{layout.csv_relpath(kind, split)}"
            atomic_write_bytes(partial / rel, data, partial / ".tmp")
            files[rel] = {"bytes": len(data), "sha256": sha256(data)}
    return files


def _swap_in(partial: Path, out: Path) -> None:
    """Move the finished build folder to ``out``, replacing an older dataset there."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            (out / MANIFEST).unlink(missing_ok=True)  # no longer complete from here on
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(partial, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def make_dataset(
    out: Path | str,
    spec: PhantomSpec | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
    stats: dict[str, Any] | None = None,
    **fields: Any,
) -> Path:
    """Write the phantom dataset of ``spec`` (changed by ``fields``, e.g. ``n_train=8``) to ``out``
    in the CT-RATE layout and return ``out``.

    Returns at once if ``out`` already holds a complete dataset of that spec. ``workers``
    processes render in parallel (default: all cores); the bytes do not depend on it. ``stats``,
    if given, receives per-volume CPU and wall times (used by the benchmark).
    """
    _refuse_inside_a_worker()
    spec = (spec or PhantomSpec()).replace(**fields)
    params = spec.params()
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    out = Path(out).expanduser().absolute()
    _check_writable(out)
    with folder_lock(out):
        if dataset_complete(out, params):
            return out
        _check_writable(out)  # another process may have changed it while we waited
        partial = out.parent / f".{out.name}.partial"
        _prepare_partial(partial, params)
        keys: list[CaseKey] = [
            (spec.seed, split, pid, spec.size, spec.difficulty, spec.site)
            for split, n in (("train", spec.n_train), ("valid", spec.n_valid))
            for pid in range(1, n + 1)
        ]
        names = [layout.volume_name(split, pid) for _, split, pid, *_ in keys]
        kept = {name: r for name in names if (r := _finished(partial, name)) is not None}
        todo = [key for key, name in zip(keys, names, strict=True) if name not in kept]
        records = _render_all(todo, partial, workers, progress)
        planned = {r["name"]: r.pop("plan") for r in records}
        plans = [
            planned[name] if name in planned else plan_case(*key)  # a resumed build's kept ones
            for key, name in zip(keys, names, strict=True)
        ]
        files: dict[str, dict[str, Any]] = {}
        for record in [*kept.values(), *records]:
            files.update(record["files"])
        files.update(_write_tables(partial, plans))
        files.update(write_label_table(partial, partial / ".tmp"))
        shutil.rmtree(partial / ".progress", ignore_errors=True)
        shutil.rmtree(partial / ".tmp", ignore_errors=True)
        _swap_in(partial, out)
        manifest = {
            "format": "cagcl-mini phantom (CT-RATE layout)",
            "params": params,
            "files": dict(sorted(files.items())),
        }
        atomic_write_bytes(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        (out / MARKER).unlink(missing_ok=True)
    if stats is not None:
        stats.update(
            rendered=len(records),
            resumed=len(kept),
            cpu_s=[r["cpu_s"] for r in records],
            wall_s=[r["wall_s"] for r in records],
            workers=workers,
        )
    return out


def default_root(spec: PhantomSpec) -> Path:
    """The cache folder of a spec's dataset (:func:`cagcl_mini.paths.site_data_dir`): the
    default data dir for the tutorial's dataset, a folder of its own for any other site or spec,
    so a run on one never rebuilds, under another run's feet, the dataset of another."""
    return paths.site_data_dir(spec.site, spec.variant())


def ensure_dataset(
    root: Path | str | None = None,
    spec: PhantomSpec | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
    **fields: Any,
) -> Path:
    """The dataset root (default: the spec's own cache folder, :func:`default_root`), built if
    absent, incomplete, or built with another spec. What the notebooks and the trainer call."""
    spec = (spec or PhantomSpec()).replace(**fields)
    target = default_root(spec) if root is None else Path(root)
    return make_dataset(target, spec, workers=workers, progress=progress)
