"""TotalSegmentator v2 ``total`` label maps for downloaded volumes that have none.

TotalSegmentator is an optional dependency (``pip install TotalSegmentator``; it needs PyTorch
and downloads its model weights on first use, into ``~/.totalsegmentator`` or
``$TOTALSEG_HOME_DIR``). We call its Python API with ``ml=True`` (one
multilabel map, ids 1..117) and ``fast=True`` (the 3 mm model, practical on a CPU) and write the
result atomically to the layout's ``dataset/ts_seg/ts_total/<split>/...`` path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from cagcl_mini import layout
from cagcl_mini.anatomy import TOTALSEG_MAX_ID
from cagcl_mini.fileio import atomic_path
from data_download.errors import DestinationError, DownloadError, MissingDependencyError
from data_download.http import ensure_writable
from data_download.summary import DownloadReport

log = logging.getLogger("data_download")

SOURCE = "totalseg-masks"
INSTALL_HELP = (
    "TotalSegmentator is not installed. Install it with `pip install TotalSegmentator` "
    "(it needs PyTorch); on first use it downloads its weights, or fetch them beforehand with "
    "`totalseg_download_weights -t total_fast` (stored in ~/.totalsegmentator, or $TOTALSEG_HOME_DIR)."
)
WEIGHTS_HELP = (
    "If its weights are missing and this machine is offline, fetch them where there is network "
    "with `totalseg_download_weights -t total_fast` and copy ~/.totalsegmentator (or set "
    "$TOTALSEG_HOME_DIR to where they are)."
)


def split_volumes(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(volume, map path) for each volume of ``split`` under ``root``, in natural order.

    Both CT-RATE folder names are searched (``valid_fixed`` and ``valid``); a map goes to the same
    relative path under ``dataset/ts_seg/ts_total/``, which is where the loader looks.
    """
    layout.check_split(split)
    dataset = Path(root) / "dataset"
    found: dict[str, tuple[Path, Path]] = {}
    for folder in (f"{split}_fixed", split):
        base = dataset / folder
        for path in sorted(base.rglob(f"*{layout.NIFTI_SUFFIX}")) if base.is_dir() else []:
            try:
                layout.parse_volume_name(path.name)
            except ValueError:
                continue  # not a volume of the layout (a temporary file, a stray download)
            if path.name not in found:  # the `_fixed` copy wins, as in the loader
                found[path.name] = (path, dataset / layout.SEG_DIR / path.relative_to(dataset))
    return [found[name] for name in sorted(found, key=layout.natural_key)]


def volumes_without_masks(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(volume, missing map path) for each volume of ``split`` without a TotalSegmentator map."""
    return [(ct, mask) for ct, mask in split_volumes(root, split) if not mask.is_file()]


def _check_has_volumes(dest: Path, split: str) -> list[tuple[Path, Path]]:
    """The split's volumes; DestinationError naming the folder when there is none to look at."""
    if not dest.is_dir():
        problem = "is not a folder" if dest.exists() else "does not exist"
        raise DestinationError(
            f"{dest} {problem}: --dest must be a dataset root that holds dataset/{split}/... "
            "volumes (the --dest of a ct-rate or rad-chestct download)"
        )
    folders = [dest / "dataset" / f for f in (f"{split}_fixed", split)]
    if not any(f.is_dir() for f in folders):
        raise DestinationError(
            f"{folders[1]} does not exist (nor {folders[0].name}): {dest} holds no '{split}' "
            "volumes to segment (pick the --split that was downloaded, or the right --dest)"
        )
    volumes = split_volumes(dest, split)
    if not volumes:
        present = [str(f) for f in folders if f.is_dir()]
        raise DestinationError(
            f"{' and '.join(present)} {'hold' if len(present) > 1 else 'holds'} no volumes: "
            f"expected CT-RATE-named files such as {split}_1_a_1{layout.NIFTI_SUFFIX} in it"
        )
    return volumes


def _segmenter():
    try:  # an optional heavy dependency (PyTorch models, downloaded weights): imported on use
        from totalsegmentator.python_api import totalsegmentator
    except ImportError:
        raise MissingDependencyError(INSTALL_HELP) from None
    return totalsegmentator


def segment(ct: Path, out: Path, *, fast: bool = True, device: str = "gpu") -> Path:
    """Run TotalSegmentator on ``ct`` and write its multilabel map to ``out`` atomically."""
    run = _segmenter()
    with atomic_path(out, suffix=".tmp.nii.gz") as tmp:
        tmp.unlink()  # TotalSegmentator writes the file itself
        try:
            result = run(ct, tmp, ml=True, fast=fast, task="total", device=device, quiet=True)
        except Exception as exc:
            raise DownloadError(
                f"TotalSegmentator failed on {ct}: {type(exc).__name__}: {exc}. {WEIGHTS_HELP}"
            ) from None
        if not tmp.is_file():  # some versions only return the image
            if result is None:
                raise DownloadError(f"TotalSegmentator wrote no label map for {ct}")
            nib.save(result, tmp)
        labels = np.asarray(nib.load(tmp).dataobj)
        if labels.size and (labels.min() < 0 or labels.max() > TOTALSEG_MAX_ID):
            raise DownloadError(
                f"TotalSegmentator output for {ct} has ids {labels.min()}..{labels.max()}, "
                f"expected 0..{TOTALSEG_MAX_ID} (the v2 'total' task)"
            )
    return out


def make_totalseg_masks(
    dest: Path,
    *,
    split: str = "valid",
    limit: int | None = None,
    dry_run: bool = False,
    fast: bool = True,
    device: str = "gpu",
) -> DownloadReport:
    """Segment the volumes of ``split`` under ``dest`` that lack a TotalSegmentator map.

    ``device`` is TotalSegmentator's ("gpu" falls back to the CPU when there is none). A ``dest``
    that does not exist, has no ``dataset/<split>/`` folder, or holds no volumes there raises
    DestinationError naming the folder (it is never "every volume already has a mask").
    """
    layout.check_split(split)
    dest = Path(dest).expanduser()
    volumes = _check_has_volumes(dest, split)
    dest = ensure_writable(dest, create=False)
    report = DownloadReport(SOURCE, dest, dry_run=dry_run, verb="segment")
    todo = [(ct, mask) for ct, mask in volumes if not mask.is_file()]
    todo = todo[:limit] if limit else todo
    if not todo:
        report.notes.append(
            f"every '{split}' volume under {dest} ({len(volumes)} found) already has a mask"
        )
        return report
    if dry_run:
        for ct, _ in todo:
            report.plan(ct.name, None)
        return report
    _segmenter()  # fail before any work when TotalSegmentator is missing
    for ct, mask in todo:
        report.written.append(segment(ct, mask, fast=fast, device=device))
    return report
