"""The ``cagcl-mini`` command: data, notebooks, training, evaluation and benchmarks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _make_data(args: argparse.Namespace) -> int:
    from cagcl_mini.paths import default_data_dir
    from cagcl_mini.phantom import make_dataset

    root = make_dataset(
        args.out or default_data_dir(),
        n_train=args.n_train,
        n_valid=args.n_valid,
        size=args.size,
        seed=args.seed,
        workers=args.workers,
    )
    print(f"dataset ready at {root}")
    return 0


def _notebooks(args: argparse.Namespace) -> int:
    from cagcl_mini.notebooks import parse_parameters, run_notebooks

    summary = run_notebooks(
        only=args.only,
        out_dir=args.out,
        parameters=parse_parameters(args.parameter),
        cell_timeout=args.cell_timeout,
    )
    return 0 if summary["ok"] else 1


def _train(args: argparse.Namespace) -> int:
    from cagcl_mini.train import main as train_main

    return train_main(args.rest)


def _evaluate(args: argparse.Namespace) -> int:
    from cagcl_mini.evaluate import main as evaluate_main

    return evaluate_main(args.rest)


def _bench(args: argparse.Namespace) -> int:
    from cagcl_mini.bench import run

    run(args.name, args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cagcl-mini", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-data", help="write the embedded synthetic CT-report dataset")
    p.add_argument(
        "--out", type=Path, default=None, help="dataset root (default: the tutorial's cache)"
    )
    p.add_argument("--n-train", type=int, default=240)
    p.add_argument("--n-valid", type=int, default=60)
    p.add_argument("--size", type=int, default=64, help="edge length of the cubic volumes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=_make_data)

    p = sub.add_parser("notebooks", help="run the tutorial notebooks with papermill")
    p.add_argument("--only", action="append", help="run only notebooks whose name contains this")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: a new one)")
    p.add_argument(
        "-p", "--parameter", action="append", default=[], help="key=value for the parameters cell"
    )
    p.add_argument("--cell-timeout", type=int, default=600, help="seconds per cell")
    p.set_defaults(func=_notebooks)

    p = sub.add_parser("train", help="pretrain a preset or a YAML config", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="zero-shot evaluation of a checkpoint", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("bench", help="measure the figures of the README")
    p.add_argument("name", choices=["data", "reports", "pooling", "train", "claims", "probe"])
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seeds", type=int, default=3, help="seeds for `bench claims`")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="`bench claims` / `bench probe`: training steps (default: the preset's)",
    )
    p.add_argument("--out", type=Path, default=None, help="scratch folder (default: a temp dir)")
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # argparse's REMAINDER does not capture options that come first ("evaluate --checkpoint x"),
    # so the pass-through subcommands get their arguments verbatim.
    if argv and argv[0] in ("train", "evaluate"):
        run = _train if argv[0] == "train" else _evaluate
        return run(argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
