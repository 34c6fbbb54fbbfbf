"""``cagcl-mini evaluate``: evaluate a checkpoint (or an untrained model), print a table, write JSON.

::

    cagcl-mini evaluate --checkpoint RUN/final.pt [--data DIR] [--split valid] [--json OUT]
    cagcl-mini evaluate --untrained [--config cpu-quick|FILE.yaml] [--seed 0] ...

The data defaults to the run's own (``TrainConfig.data_root``, else the embedded phantom dataset,
built on demand) at the run's ``image_size``. The honest thresholds come from the ``train`` split
(``--no-honest`` skips embedding it). The JSON (strict: NaN written as null) goes to ``--json``,
else next to the checkpoint as ``eval_<split>.json``; it holds :func:`evaluate.evaluate_model`'s
dict plus a ``meta`` block.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cagcl_mini.anatomy import prompt_family_names
from cagcl_mini.metrics import GRIDS, METRICS


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cagcl-mini evaluate``."""
    p = argparse.ArgumentParser(
        prog="cagcl-mini evaluate",
        description="Zero-shot detection, prompt robustness, collapse statistics, anatomy "
        "recognition and retrieval of a checkpoint.",
    )
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
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--limit", type=int, default=None, help="only the first N volumes per split")
    p.add_argument("--json", type=Path, default=None, help="output JSON path")
    return p


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(rows: Mapping[str, Mapping[str, Any]], columns: list[str], index_name: str) -> str:
    frame = pd.DataFrame.from_dict(
        {k: {c: _fmt(r.get(c)) for c in columns} for k, r in rows.items()}, orient="index"
    )
    frame.index.name = index_name or None
    return frame.to_string() if len(frame) else "(none)"


def format_report(results: Mapping[str, Any]) -> str:
    """Plain-text aligned tables of an :func:`evaluate.evaluate_model` dict (or its JSON)."""
    det = results["detection"]
    cols = ["anatomy", "n", "n_pos", "auc", *METRICS, "honest_accuracy", "honest_sensitivity",
            "honest_specificity"]  # fmt: skip
    out = [
        f"Zero-shot detection, prompt family {det['family']!r} "
        f"({results['n_volumes']} volumes; threshold: closest ROC point to (0,1), "
        f"honest_* = threshold picked on {results.get('n_train_volumes', 0)} training volumes)",
        _table(det["per_abnormality"], cols, "abnormality"),
    ]
    macro_cols = ["n_abnormalities", "auc", *METRICS, *(f"honest_{m}" for m in METRICS)]
    out += [
        "",
        "Macro averages",
        _table({"all findings": det["macro"], "CT-RATE 18": det["macro_ct_rate"]}, macro_cols, ""),
    ]
    if det["skipped"]:
        out += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in det["skipped"].items())]
    rob = results["prompt_robustness"]
    fam_rows = {
        f: {"macro_auc": rob["macro_auc"][f], "macro_auc_ct_rate": rob["macro_auc_ct_rate"][f]}
        for f in rob["families"]
    }
    out += [
        "",
        "Prompt families (macro AUC)",
        _table(fam_rows, ["macro_auc", "macro_auc_ct_rate"], "family"),
        f"mean {_fmt(rob['mean'])}  std {_fmt(rob['std'])}   "
        f"(CT-RATE 18: mean {_fmt(rob['mean_ct_rate'])}  std {_fmt(rob['std_ct_rate'])})",
    ]
    rec = results["anatomy_recognition"]
    out += [
        "",
        f"Anatomy recognition top-1: {_fmt(rec['top1'])} over {rec['n_tokens']} tokens",
        _table({"top1": rec["per_anatomy"]}, list(rec["per_anatomy"]), ""),
    ]
    ret = results["retrieval"]
    out += [
        "",
        f"Volume-report retrieval ({ret['n']} volumes)",
        _table(
            {
                "image->text": ret["image_to_text"],
                "text->image": ret["text_to_image"],
                "chance": ret["chance"],
            },
            list(ret["chance"]),
            "",
        ),  # fmt: skip
    ]
    col = results["collapse"]
    out += [
        "",
        f"Text collapse ({col['n_texts']} distinct descriptions, effective rank "
        f"{_fmt(col['effective_rank'], 2)})",
        _table(
            {g: col[g] for g in ("within", "across")},
            ["n_pairs", "mean", "std", "share_above"],
            "anatomy pairs",
        ),
    ]
    return "\n".join(out)


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Strict JSON (NaN as null) written to a temp file and renamed over ``path``."""
    from cagcl_mini.evaluate import jsonable
    from cagcl_mini.train_config import atomic_write_text

    atomic_write_text(Path(path), json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")
    return Path(path)


def _load(args: argparse.Namespace):
    """(model, TrainConfig) of the checkpoint, or an untrained model of ``--config``."""
    import torch

    if args.checkpoint is not None:
        from cagcl_mini.train import load_model

        if not args.checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
        return load_model(args.checkpoint)
    from cagcl_mini.model import AnatomyCLIP
    from cagcl_mini.train_config import resolve_config

    config = resolve_config(args.config)
    torch.manual_seed(args.seed)
    return AnatomyCLIP(config.model_config()), config


def _datasets(args: argparse.Namespace, config: Any) -> tuple[Any, Any]:
    from torch.utils.data import Subset

    from cagcl_mini.data import CTReportDataset

    root = args.data if args.data is not None else config.data_root
    if root is None:
        from cagcl_mini.phantom import ensure_dataset

        root = ensure_dataset(
            None, n_train=config.n_train, n_valid=config.n_valid, size=config.data_size,
            seed=config.data_seed,
        )  # fmt: skip
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    size = args.image_size or config.image_size
    splits = [args.split] + ([] if args.no_honest or args.split == "train" else ["train"])
    out = []
    for split in splits:
        ds = CTReportDataset(root, split, size=size, cache=config.data_cache)
        if args.limit is not None:
            ds = Subset(ds, range(min(args.limit, len(ds))))
        out.append(ds)
    return out[0], (out[1] if len(out) > 1 else None)


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; returns the exit status (2 for a missing or unreadable input)."""
    from cagcl_mini.evaluate import evaluate_model

    args = build_parser().parse_args(argv)
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
