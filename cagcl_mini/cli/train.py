"""``cagcl-mini train``: pretrain a preset or a YAML config (``torchrun -m cagcl_mini train`` for
several processes).

An ``--out`` that already holds a run (checkpoints or a log) is refused unless ``--resume``
continues it or ``--overwrite`` starts again (the old run is kept in ``OUT/.previous-run`` until
the new one has written its first checkpoint). Ctrl-C or SIGTERM stops after the current step:
its checkpoint is written and the command to resume is printed (exit status 130 / 143). The
config is checked field by field when it is read, so ``--print-config`` reports a bad value too.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import yaml

from cagcl_mini.train.presets import PRESETS

HELP = "pretrain a preset or a YAML config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default="cpu-quick", help=f"a preset ({', '.join(PRESETS)}) or a YAML file"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="start again in an --out that holds another run (it is deleted once "
                        "the new run writes its first checkpoint)")  # fmt: skip
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
    from cagcl_mini.train.config import TrainConfig, resolve_config  # torch, not MONAI

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
        config = TrainConfig.from_dict({**config.to_dict(), **changes}, source="command line")
    return config.with_overrides(args.set) if args.set else config


def resume_command(argv: list[str]) -> str:
    """The command line that resumes the run of ``argv`` (train's arguments)."""
    kept = [a for a in argv if a not in ("--overwrite", "--resume")]
    return shlex.join(["cagcl-mini", *kept, "--resume"])


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # every value checked before the heavy imports below
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    if args.resume and args.overwrite:
        raise ValueError(
            "--resume continues the run in --out and --overwrite replaces it: pick one"
        )
    config.check_runnable()
    from cagcl_mini.train import distributed  # heavy: torch and MONAI (cli docstring)
    from cagcl_mini.train.loop import TrainingInterrupted, fit

    try:
        result = fit(config, resume=args.resume, overwrite=args.overwrite)
    except TrainingInterrupted as stop:
        argv = getattr(args, "argv", None) or ["train", *sys.argv[2:]]
        print(
            f"{stop}; resume with: {resume_command(argv)}",
            file=sys.stderr,
            flush=True,
        )
        return 128 + stop.signum
    if not distributed.launched_by_torchrun() or os.environ.get("RANK") == "0":
        summary = {"checkpoint": str(result.checkpoint), "log": str(result.log), **result.metrics}
        print(json.dumps(summary))
    return 0
