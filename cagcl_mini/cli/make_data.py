"""``cagcl-mini make-data``: write the embedded synthetic CT-report dataset (CT-RATE layout)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cagcl_mini.phantom.build import default_root, make_dataset
from cagcl_mini.phantom.findings import DIFFICULTIES
from cagcl_mini.phantom.plan import PhantomSpec
from cagcl_mini.phantom.sites import SITES, TRANSFER_TRAIN

HELP = "write the embedded synthetic CT-report dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = PhantomSpec()
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="dataset root (default: the spec's folder in the tutorial's cache: data/default for "
        "the default spec, data/default-<difference>[-site-<site>] beside it otherwise)",
    )
    parser.add_argument(
        "--n-train", type=int, default=None,
        help=f"training volumes (default: {defaults.n_train} at site A, {TRANSFER_TRAIN} at another "
        "site, which is scored, not trained on: what the notebooks and benchmarks read)",
    )  # fmt: skip
    parser.add_argument("--n-valid", type=int, default=defaults.n_valid, help="validation volumes")
    parser.add_argument(
        "--size", type=int, default=defaults.size, help="edge length of the cubic volumes"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="same seed, same bytes")
    parser.add_argument(
        "--difficulty", choices=DIFFICULTIES, default=defaults.difficulty,
        help="tutorial: every finding visible to a supervised model at the tutorial budget; "
        "realistic: subtle findings",
    )  # fmt: skip
    parser.add_argument(
        "--site", choices=tuple(SITES), default=defaults.site,
        help="A: the tutorial's hospital; B: another scanner (sharp kernel, more noise, a larger "
        "field of view), thicker slices, intercept 0, a small HU offset and label-only reports "
        "(cross-site transfer); C: a third one (soft kernel, a smaller field of view, three "
        "times as thick slices, reading low)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")


def run(args: argparse.Namespace) -> int:
    spec = PhantomSpec(
        n_valid=args.n_valid, size=args.size, seed=args.seed, difficulty=args.difficulty
    ).at_site(args.site)
    if args.n_train is not None:
        spec = spec.replace(n_train=args.n_train)
    root = make_dataset(args.out or default_root(spec), spec, workers=args.workers)
    print(f"dataset ready at {root}")
    return 0
