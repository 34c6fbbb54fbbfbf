"""``python -m data_download SOURCE [--dest DIR] [--split valid] [--limit N] ...``

Prints a summary of what was fetched, found present, or skipped (and why); with ``--dry-run`` the
files and sizes it would fetch. Exit status: 0 done (skipped files are listed), 1 an error (the
message says which file or folder and what to do), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cagcl_mini.paths import home
from data_download.ct_rate import download_ct_rate
from data_download.errors import DownloadError
from data_download.rad_chestct import download_rad_chestct
from data_download.totalseg_example import download_totalseg_example
from data_download.totalseg_masks import make_totalseg_masks

SOURCES = ("totalseg-example", "ct-rate", "rad-chestct", "totalseg-masks")


def default_dest(source: str) -> Path:
    """Where a source goes when ``--dest`` is not given: ``<cagcl-mini home>/data/<source>``."""
    return home() / "data" / source


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m data_download",
        description="Fetch real CT data into the CT-RATE layout that cagcl-mini reads.",
    )
    parser.add_argument("source", choices=SOURCES)
    parser.add_argument("--dest", type=Path, help="dataset root (default: <home>/data/<source>)")
    parser.add_argument(
        "--split",
        default="valid",
        choices=["train", "valid"],
        help="(totalseg-example: always valid)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="first N volumes of the split, 0 = all (default: 10 to download, all to segment)",
    )
    parser.add_argument(
        "--include-masks", action="store_true", help="ct-rate: also fetch TotalSegmentator masks"
    )
    parser.add_argument(
        "--mirror",
        metavar="URL",
        help="fetch from this server instead: totalseg-example fetches URL + file name; "
        "ct-rate uses it as the hub endpoint; rad-chestct as the Zenodo base URL",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list files and sizes, fetch nothing"
    )
    parser.add_argument(
        "--revision", default="main", help="ct-rate: hub revision (branch or commit)"
    )
    parser.add_argument("--record", default=None, help="rad-chestct: Zenodo record id")
    parser.add_argument("--keep-npz", action="store_true", help="rad-chestct: keep the .npz files")
    parser.add_argument(
        "--device", default="gpu", help="totalseg-masks: TotalSegmentator device (gpu or cpu)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    return parser


def run(args: argparse.Namespace):
    """Dispatch to the source's function; returns its DownloadReport."""
    dest = args.dest if args.dest is not None else default_dest(args.source)
    default_limit = None if args.source == "totalseg-masks" else 10
    limit = (args.limit if args.limit is not None else default_limit) or None
    progress = not args.no_progress
    if args.source == "totalseg-example":
        return download_totalseg_example(
            dest, mirror=args.mirror, dry_run=args.dry_run, progress=progress
        )
    if args.source == "ct-rate":
        return download_ct_rate(
            dest,
            split=args.split,
            limit=limit,
            include_masks=args.include_masks,
            dry_run=args.dry_run,
            revision=args.revision,
            endpoint=args.mirror,
            progress=progress,
        )
    if args.source == "rad-chestct":
        extra = {"record": args.record} if args.record else {}
        return download_rad_chestct(
            dest,
            split=args.split,
            limit=limit,
            dry_run=args.dry_run,
            mirror=args.mirror,
            keep_npz=args.keep_npz,
            progress=progress,
            **extra,
        )
    if args.dest is None:
        raise SystemExit("totalseg-masks needs --dest: the dataset root whose volumes to segment")
    return make_totalseg_masks(
        dest, split=args.split, limit=limit, dry_run=args.dry_run, device=args.device
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command; print the summary to stdout and errors to stderr."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        report = run(args)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
