"""``cagcl-mini import-dicom``: import one DICOM CT series (and its TotalSegmentator map) into a
CT-RATE-layout dataset.

::

    cagcl-mini import-dicom SERIES_DIR --out ROOT [--seg MAP.nii.gz] [--report TEXT]
                            [--split valid] [--pid N] [--overwrite]

The volume is written in HU with its true geometry, next to its report, labels and metadata rows
(:mod:`cagcl_mini.data.dicom`). Without ``--seg`` the loader cannot use it until a TotalSegmentator
map is made (``python -m data_download totalseg-masks --dest ROOT``). Re-running the same import
changes nothing; one that would change an existing volume needs ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cagcl_mini.data.dicom import import_series
from cagcl_mini.layout import SPLITS

HELP = "import a DICOM CT series into a CT-RATE-layout dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("series_dir", type=Path, metavar="SERIES_DIR",
                        help="folder holding the slices of one CT series")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, metavar="ROOT",
                        help="dataset root (the folder that holds dataset/)")  # fmt: skip
    parser.add_argument("--seg", type=Path, default=None, metavar="MAP.nii.gz",
                        help="TotalSegmentator v2 `total` map of this series")  # fmt: skip
    parser.add_argument("--report", default=None, metavar="TEXT",
                        help="findings text of the report (default: a no-report placeholder)")  # fmt: skip
    parser.add_argument("--split", default="valid", choices=list(SPLITS), help="split to add to")
    parser.add_argument("--pid", type=int, default=None, metavar="N",
                        help="patient id (default: this series' earlier id, else the next free)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing volume whose content differs")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Import the series; the exit status. A bad input or a refused overwrite raises (DataError,
    FileExistsError...), printed as one line by :func:`cagcl_mini.cli.main.main` (status 2)."""
    result = import_series(
        args.series_dir, args.out, split=args.split, pid=args.pid, seg=args.seg,
        report=args.report, overwrite=args.overwrite,
    )  # fmt: skip
    if result.written:
        print(f"imported {args.series_dir} as {result.name}: {result.ct}")
        if result.mask is not None:
            print(f"label map: {result.mask}")
    else:
        print(f"{result.name} is already imported with the same content: {result.ct}")
    for note in result.notes:
        print(f"cagcl-mini import-dicom: note: {note}", file=sys.stderr)
    return 0
