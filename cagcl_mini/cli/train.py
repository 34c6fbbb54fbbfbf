"""``cagcl-mini train``: pretrain a preset or a YAML config (``torchrun -m cagcl_mini train`` for
several processes)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml

from cagcl_mini.train.presets import PRESETS

HELP = "pretrain a preset or a YAML config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default="cpu-quick", help=f"a preset ({', '.join(PRESETS)}) or a YAML file"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: cache)")
    parser.add_argument("--data", type=Path, default=None, help="CT-RATE-layout dataset root")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps")
    parser.add_argument("--seed", type=int, default=None, help="initialisation and batch seed")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch size")
    parser.add_argument("--loss-preset", default=None, help="fvlm | ctglip | cagcl")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field (model.KEY=VALUE for the model); repeatable",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--print-config", action="store_true", help="print the YAML and exit")


def config_from_args(args: argparse.Namespace):
    """The ``TrainConfig`` named by ``--config`` with the command line's overrides applied."""
    from cagcl_mini.train.config import resolve_config  # heavy: torch and MONAI (cli docstring)

    config = resolve_config(args.config)
    changes = {
        "out_dir": str(args.out) if args.out else None,
        "data_root": str(args.data) if args.data else None,
        "steps": args.steps,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "loss_preset": args.loss_preset,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.no_progress:
        changes["progress"] = False
    if changes:
        config = config.replace(**changes)
    return config.with_overrides(args.set) if args.set else config


def run(args: argparse.Namespace) -> int:
    from cagcl_mini.train import distributed  # heavy: torch and MONAI (cli docstring)
    from cagcl_mini.train.loop import fit

    config = config_from_args(args)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    result = fit(config, resume=args.resume)
    if not distributed.launched_by_torchrun() or os.environ.get("RANK") == "0":
        summary = {"checkpoint": str(result.checkpoint), "log": str(result.log), **result.metrics}
        print(json.dumps(summary))
    return 0
