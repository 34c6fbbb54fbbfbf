"""``cagcl-mini notebooks``: run the tutorial notebooks in order with papermill."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the tutorial notebooks with papermill"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only", action="append", help="run only notebooks whose name contains this; repeatable"
    )
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a new one)")
    parser.add_argument(
        "-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
        help="a value for the notebooks' parameters cells; repeatable",
    )  # fmt: skip
    parser.add_argument("--cell-timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument(
        "--jobs", type=int, default=1,
        help="2: run the notebooks that train and read models in one lane and the others beside "
        "it (default 1: one after another)",
    )  # fmt: skip
    parser.add_argument(
        "--cold", action="store_true",
        help="start each notebook's kernel when the notebook starts (default: the next "
        "notebook's kernel starts and imports torch, MONAI and transformers while one runs)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from cagcl_mini.tutorial.runner import (  # heavy: papermill
        WARM_IMPORTS,
        parse_parameters,
        run_notebooks,
    )

    summary = run_notebooks(
        only=args.only,
        out_dir=args.out,
        parameters=parse_parameters(args.parameter),
        cell_timeout=args.cell_timeout,
        jobs=args.jobs,
        warm_imports=None if args.cold else WARM_IMPORTS,
    )
    return 0 if summary["ok"] else 1
