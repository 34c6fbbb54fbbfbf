"""``cagcl-mini evaluate``: evaluate a checkpoint (or an untrained model), print tables, write JSON.

::

    cagcl-mini evaluate --checkpoint RUN/final.pt [--data DIR] [--split valid] [--json OUT]
    cagcl-mini evaluate --untrained [--config cpu-quick|FILE.yaml] [--seed 0] ...
    cagcl-mini evaluate ... --prompts PROMPTS.yaml [--prompts-only] [--family NAME]

The data defaults to the run's own (``TrainConfig.data_root``, else the embedded phantom dataset,
built on demand) at the run's ``image_size``. The honest thresholds come from the ``train`` split
(``--no-honest`` skips embedding it). The JSON (strict: NaN written as null) goes to ``--json``,
else next to the checkpoint as ``eval_<split>.json``; it holds
:func:`~cagcl_mini.evaluation.evaluate.evaluate_model`'s dict plus a ``meta`` block.

``--prompts FILE`` reads prompt families (templates and per-abnormality prompt pairs; the format
is in :mod:`cagcl_mini.evaluation.prompts`, an example in ``examples/prompts.yaml``) and adds them
to the prompt-robustness table after the built-in ``--families``; ``--prompts-only`` leaves the
built-in ones out. ``--family`` may then name a file family for the detection table. The file is
read before any model or dataset is loaded; a malformed one is a one-line error naming its line
and key, exit status 2. The file's prompts are copied into ``meta.prompt_families``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cagcl_mini.anatomy import prompt_family_names
from cagcl_mini.evaluation.prompts import PromptFamily, load_prompts

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
    p.add_argument("--family", default="fvlm",
                   help=f"prompt family of the detection table: {', '.join(prompt_family_names())}"
                        " or, with --prompts, one of the file's (default: %(default)s)")  # fmt: skip
    p.add_argument("--families", nargs="+", default=None, choices=list(prompt_family_names()),
                   help="built-in families for prompt robustness (default: all)")  # fmt: skip
    p.add_argument("--prompts", type=Path, default=None, metavar="FILE.yaml",
                   help="prompt families from a YAML file (see examples/prompts.yaml), added to "
                        "the prompt-robustness table")  # fmt: skip
    p.add_argument("--prompts-only", action="store_true",
                   help="with --prompts: the robustness table holds the file's families only")  # fmt: skip
    p.add_argument("--grid", default="unit", choices=list(GRIDS),
                   help="threshold grid: linspace(0,1,100) or over the score range")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16, help="volumes per forward pass")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--limit", type=int, default=None, help="only the first N volumes per split")
    p.add_argument("--json", type=Path, default=None, help="output JSON path")


def _prompt_families(
    args: argparse.Namespace,
) -> tuple[str | PromptFamily, list[str | PromptFamily], dict[str, PromptFamily]]:
    """(detection family, robustness families, the file's families) of the options; light, so
    a bad file or name is reported before anything heavy loads."""
    from_file = {} if args.prompts is None else load_prompts(args.prompts)
    if args.prompts_only and args.prompts is None:
        raise ValueError("--prompts-only needs --prompts FILE.yaml")
    if args.prompts_only and args.families is not None:
        raise ValueError("--families picks built-in families; leave it out with --prompts-only")
    builtin = (
        [] if args.prompts_only else list(dict.fromkeys(args.families or prompt_family_names()))
    )
    if args.family in from_file:
        family: str | PromptFamily = from_file[args.family]
    elif args.family in prompt_family_names():
        family = args.family
    else:
        names = ", ".join([*prompt_family_names(), *from_file])
        raise ValueError(
            f"unknown prompt family {args.family!r} for --family; choose one of {names}"
        )
    return family, [*builtin, *from_file.values()], from_file


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """(model, TrainConfig) of the checkpoint, or an untrained model of ``--config``."""
    from cagcl_mini.train.config import resolve_config  # heavy: torch (cli docstring)
    from cagcl_mini.train.setup import load_model, model_for

    if args.checkpoint is not None:
        return load_model(args.checkpoint)
    config = resolve_config(args.config)
    return model_for(config, seed=args.seed), config


def _datasets(args: argparse.Namespace, config: Any) -> tuple[Any, Any]:
    from torch.utils.data import Subset  # heavy: torch and MONAI (cli docstring)

    from cagcl_mini.train.setup import dataset_for

    splits = [args.split] + ([] if args.no_honest or args.split == "train" else ["train"])
    out = []
    for split in splits:
        try:
            ds = dataset_for(config, split, root=args.data, image_size=args.image_size)
        except FileNotFoundError:
            if split == args.split:
                raise
            root = args.data if args.data is not None else config.data_root
            raise FileNotFoundError(
                f"no train split in {root}: pass --no-honest to calibrate on the evaluated split"
            ) from None
        if args.limit is not None:
            ds = Subset(ds, range(min(args.limit, len(ds))))
        out.append(ds)
    return out[0], (out[1] if len(out) > 1 else None)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; the exit status. A missing or unreadable input raises, and
    :func:`cagcl_mini.cli.main.main` prints it as one line (exit status 2)."""
    family, families, from_file = _prompt_families(args)
    if args.checkpoint is not None and not args.checkpoint.is_file():  # before the heavy imports
        raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
    if args.data is not None and not Path(args.data).exists():
        raise FileNotFoundError(f"dataset root {args.data} does not exist")

    from cagcl_mini.evaluation.evaluate import evaluate_model, format_report  # heavy (see above)
    from cagcl_mini.fileio import write_json

    model, config = _load(args)
    valid, train = _datasets(args, config)
    if args.device is not None:
        model.to(args.device)
    results = evaluate_model(
        model, valid, train, family=family, families=families, grid=args.grid,
        batch_size=args.batch_size,
    )  # fmt: skip
    results["meta"] = {
        "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
        "untrained": bool(args.untrained),
        "seed": args.seed if args.untrained else None,
        "split": args.split,
        "family": args.family,
        "grid": args.grid,
        "prompts": None if args.prompts is None else str(args.prompts),
        "prompts_only": bool(args.prompts_only),
        "prompt_families": {name: fam.to_dict() for name, fam in from_file.items()},
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
