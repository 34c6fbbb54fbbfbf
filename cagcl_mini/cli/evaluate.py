"""``cagcl-mini evaluate``: evaluate a checkpoint (or an untrained model), print tables, write JSON.

::

    cagcl-mini evaluate --checkpoint RUN/final.pt [--data DIR] [--split valid] [--json OUT]
    cagcl-mini evaluate --untrained [--config cpu-quick|FILE.yaml] [--seed 0] ...

The data defaults to the run's own (``TrainConfig.data_root``, else the embedded phantom dataset,
built on demand) at the run's ``image_size``. The honest thresholds come from the ``train`` split
(``--no-honest`` skips embedding it). The JSON (strict: NaN written as null) goes to ``--json``,
else next to the checkpoint as ``eval_<split>.json``; it holds
:func:`~cagcl_mini.evaluation.evaluate.evaluate_model`'s dict plus a ``meta`` block.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cagcl_mini.anatomy import prompt_family_names

HELP = "zero-shot evaluation of a checkpoint"
GRIDS = ("unit", "range")  # evaluation.metrics.GRIDS, named here so --help needs no sklearn


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a checkpoint written by `cagcl-mini train`")
    src.add_argument("--untrained", action="store_true", help="a randomly initialised model")
    p.add_argument("--config", default="cpu-quick",
                   help="with --untrained: a training preset or YAML file for the model and data")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="with --untrained: initialisation seed")
    p.add_argument("--data", type=Path, default=None, help="dataset root (default: the run's)")
    p.add_argument("--split", default="valid", choices=["valid", "train"])
    p.add_argument("--no-honest", action="store_true",
                   help="skip the train split (no thresholds picked on training scores)")  # fmt: skip
    p.add_argument("--image-size", type=int, default=None, help="default: the run's image_size")
    p.add_argument("--family", default="fvlm", choices=list(prompt_family_names()),
                   help="prompt family of the detection table")  # fmt: skip
    p.add_argument("--families", nargs="+", default=list(prompt_family_names()),
                   choices=list(prompt_family_names()), help="families for prompt robustness")  # fmt: skip
    p.add_argument("--grid", default="unit", choices=list(GRIDS),
                   help="threshold grid: linspace(0,1,100) or over the score range")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16, help="volumes per forward pass")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--limit", type=int, default=None, help="only the first N volumes per split")
    p.add_argument("--json", type=Path, default=None, help="output JSON path")


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """(model, TrainConfig) of the checkpoint, or an untrained model of ``--config``."""
    from cagcl_mini.train.config import resolve_config  # heavy: torch and MONAI (cli docstring)
    from cagcl_mini.train.setup import load_model, model_for

    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
        return load_model(args.checkpoint)
    config = resolve_config(args.config)
    return model_for(config, seed=args.seed), config


def _datasets(args: argparse.Namespace, config: Any) -> tuple[Any, Any]:
    from torch.utils.data import Subset  # heavy: torch and MONAI (cli docstring)

    from cagcl_mini.train.setup import dataset_for

    if args.data is not None and not Path(args.data).exists():
        raise FileNotFoundError(f"dataset root {args.data} does not exist")
    splits = [args.split] + ([] if args.no_honest or args.split == "train" else ["train"])
    out = []
    for split in splits:
        ds = dataset_for(config, split, root=args.data, image_size=args.image_size)
        if args.limit is not None:
            ds = Subset(ds, range(min(args.limit, len(ds))))
        out.append(ds)
    return out[0], (out[1] if len(out) > 1 else None)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; returns the exit status (2 for a missing or unreadable input)."""
    from cagcl_mini.evaluation.evaluate import evaluate_model, format_report  # heavy (see above)
    from cagcl_mini.fileio import write_json

    try:
        model, config = _load(args)
        valid, train = _datasets(args, config)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"cagcl-mini evaluate: error: {exc}", file=sys.stderr)
        return 2
    if args.device is not None:
        model.to(args.device)
    results = evaluate_model(
        model, valid, train, family=args.family, families=args.families, grid=args.grid,
        batch_size=args.batch_size,
    )  # fmt: skip
    results["meta"] = {
        "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
        "untrained": bool(args.untrained),
        "seed": args.seed if args.untrained else None,
        "split": args.split,
        "family": args.family,
        "grid": args.grid,
        "config": config.to_dict(),
    }
    print(format_report(results))
    out = args.json
    if out is None and args.checkpoint is not None:
        out = args.checkpoint.parent / f"eval_{args.split}.json"
    if out is not None:
        write_json(out, results)
        print(f"\nresults written to {out}")
    return 0
