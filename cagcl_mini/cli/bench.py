"""``cagcl-mini bench NAME``: measure the figures of the README.

Each benchmark is a function of :mod:`cagcl_mini.bench` returning a dict of measured figures. This
command prints them one per line or, with ``--json``, as one JSON object on the last line, so
scripts can parse it. Timings are medians over repeats; ratios against a naive or reference
version are reported next to them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cagcl_mini.fileio import jsonable
from cagcl_mini.phantom.findings import DIFFICULTIES
from cagcl_mini.phantom.sites import SITES

HELP = "measure the figures of the README"


def _data(args: argparse.Namespace) -> dict:
    from cagcl_mini.bench import data  # heavy (cli docstring)

    return data.benchmark(out=args.out, repeats=args.repeats)


def _reports(args: argparse.Namespace) -> dict:
    from cagcl_mini.bench import reports  # heavy (cli docstring)

    return reports.benchmark(shuffle_seeds=args.seeds, repeats=args.repeats)


def _pooling(args: argparse.Namespace) -> dict:
    from cagcl_mini.bench import pooling  # heavy (cli docstring)

    return pooling.benchmark(repeats=max(5, 5 * args.repeats))


def _train(args: argparse.Namespace) -> dict:
    _check_overrides(args)
    from cagcl_mini.bench import train  # heavy (cli docstring)

    return train.run_train_bench(repeats=args.repeats, out=args.out, overrides=args.set)


def _check_overrides(args: argparse.Namespace) -> None:
    """A bad ``--set`` fails before the heavy imports, naming the field."""
    if args.set:
        from cagcl_mini.train.config import resolve_config

        resolve_config("cpu-quick").with_overrides(args.set)


def _claims(args: argparse.Namespace) -> dict:
    _check_overrides(args)
    from cagcl_mini.bench import claims  # heavy (cli docstring)

    return claims.benchmark(
        seeds=args.seeds, out=args.out, steps=args.steps, difficulty=args.difficulty,
        prompts=args.prompts, overrides=args.set, sites=tuple(args.site or ["B"]),
    )  # fmt: skip


def _ablations(args: argparse.Namespace) -> dict:
    _check_overrides(args)
    from cagcl_mini.bench import ablations  # heavy (cli docstring)

    return ablations.benchmark(
        which=args.which, seeds=args.seeds, out=args.out, steps=args.steps,
        difficulty=args.difficulty, prompts=args.prompts, weight=args.weight,
        overrides=args.set,
    )  # fmt: skip


def _probe(args: argparse.Namespace) -> dict:
    _check_overrides(args)
    from cagcl_mini.bench import probe  # heavy (cli docstring)

    return probe.benchmark(
        steps=args.steps, seed=args.seed, difficulty=args.difficulty,
        supervised_seeds=args.supervised_seeds, overrides=args.set,
        supervised_only=args.supervised_only,
    )  # fmt: skip


def _retrieval(args: argparse.Namespace) -> dict:
    from cagcl_mini.train.config import resolve_config

    config = resolve_config(args.config)  # a bad --config fails before the heavy imports
    from cagcl_mini.bench import retrieval  # heavy (cli docstring)

    return retrieval.benchmark(
        config, steps=args.steps, seed=args.seed, k_vote=args.k_vote,
        n_bootstrap=args.bootstrap,
    )  # fmt: skip


def _localisation(args: argparse.Namespace) -> dict:
    from cagcl_mini.bench import localisation  # heavy (cli docstring)

    return localisation.benchmark(
        args.config, steps=args.steps, seed=args.seed, head_steps=args.head_steps,
        n_bootstrap=args.bootstrap, term_weight=args.term_weight,
    )  # fmt: skip


def _segmentation(args: argparse.Namespace) -> dict:
    from cagcl_mini.train.config import resolve_config

    config = resolve_config(args.config)  # a bad --config fails before the heavy imports
    from cagcl_mini.bench import segmentation  # heavy (cli docstring)

    return segmentation.benchmark(
        config, finding=args.finding, n_labelled=args.labelled, seeds=args.seeds,
        steps=args.steps,
    )  # fmt: skip


# name: (help, function, the options it takes beyond --json)
BENCHMARKS: dict[str, tuple[str, Callable[[argparse.Namespace], dict], tuple[str, ...]]] = {
    "data": ("embedded dataset generation speed", _data, ("repeats", "out")),
    "reports": ("report splitting on the real CT-RATE cases", _reports, ("repeats", "seeds")),
    "pooling": ("mask pooling speed vs sum() and a loop", _pooling, ("repeats",)),
    "train": ("training throughput, memory, text caches", _train, ("repeats", "set", "out")),
    "claims": (
        "the CA-GCL claims, fvlm vs cagcl over seeds",
        _claims,
        ("claim_seeds", "steps", "difficulty", "prompts", "site", "set", "out"),
    ),
    "ablations": (
        "CT-GLIP dictionary scale and prompt-based disease supervision",
        _ablations,
        ("which", "ablation_seeds", "steps", "difficulty", "prompts", "weight", "set", "out"),
    ),
    "probe": (
        "zero-shot AUC next to its supervised bounds",
        _probe,
        ("steps", "seed", "difficulty", "supervised_seeds", "supervised_only", "set"),
    ),
    "retrieval": (
        "volume-report retrieval and report generation",
        _retrieval,
        ("config", "steps", "seed", "k_vote", "bootstrap"),
    ),
    "localisation": (
        "snippet localisation error (mm) against two baselines",
        _localisation,
        ("config", "steps", "seed", "head_steps", "bootstrap", "term_weight"),
    ),
    "segmentation": (
        "segmentation transfer: scratch vs fvlm vs cagcl encoders",
        _segmentation,
        ("config", "finding", "labelled", "seeds", "steps"),
    ),
}
OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "repeats": (("--repeats",), {"type": int, "default": 3, "help": "timed repeats"}),
    "seeds": (("--seeds",), {"type": int, "default": 3, "help": "seeds (shuffles for reports)"}),
    "steps": (
        ("--steps",),
        {"type": int, "default": None, "help": "training steps (default: the preset's)"},
    ),
    "seed": (("--seed",), {"type": int, "default": 0, "help": "training seed"}),
    "supervised_seeds": (
        ("--supervised-seeds",),
        {
            "type": int,
            "default": 3,
            "help": "seeds of the supervised tower (seed, seed+1, ...; mean and spread)",
        },
    ),
    "supervised_only": (
        ("--supervised-only",),
        {
            "action": "store_true",
            "help": "only the supervised tower over its seeds (no trained presets, no intensity)",
        },
    ),
    "ablation_seeds": (
        ("--seeds",),
        {"type": int, "default": 3, "help": "training seeds per setting (95%% t intervals)"},
    ),
    "which": (
        ("--which",),
        {
            "nargs": "+",
            "choices": ("dictionary", "disease"),
            "default": ["dictionary", "disease"],
            "help": "the ablations to run (default: both)",
        },
    ),
    "weight": (
        ("--weight",),
        {"type": float, "default": 1.0, "help": "weight of the disease supervision term"},
    ),
    "claim_seeds": (
        ("--seeds",),
        {
            "type": int,
            "default": 5,
            "help": "training seeds per preset (means with 95%% t intervals)",
        },
    ),
    "prompts": (
        ("--prompts",),
        {
            "type": Path,
            "default": None,
            "help": "a prompt file whose families join the prompt spread",
        },
    ),
    "difficulty": (
        ("--difficulty",),
        {
            "choices": DIFFICULTIES,
            "default": None,
            "help": "phantom difficulty (default: tutorial)",
        },
    ),
    "site": (
        ("--site",),
        {
            "action": "append",
            "choices": tuple(s for s in SITES if s != "A"),
            "default": None,
            "help": "another hospital of the phantom to score every run at without fine-tuning "
            "(repeatable; default: B)",
        },
    ),
    "config": (
        ("--config",),
        {"default": "cpu-quick", "help": "a preset name or a YAML file (default: cpu-quick)"},
    ),
    "k_vote": (
        ("--k-vote",),
        {"type": int, "default": 1, "help": "nearest descriptions voting normal/abnormal"},
    ),
    "bootstrap": (
        ("--bootstrap",),
        {"type": int, "default": 1000, "help": "bootstrap replicates of the 95%% intervals"},
    ),
    "head_steps": (
        ("--head-steps",),
        {"type": int, "default": 300, "help": "steps that train each localisation head"},
    ),
    "term_weight": (
        ("--term-weight",),
        {
            "type": float,
            "default": 1.0,
            "help": "weight of the localisation term in the cagcl+localisation run (0: no run)",
        },
    ),
    "finding": (
        ("--finding",),
        {"default": "effusion", "help": "the masked finding to segment (default: effusion)"},
    ),
    "labelled": (
        ("--labelled",),
        {"type": int, "nargs": "+", "default": [10, 30], "help": "labelled training volumes"},
    ),
    "set": (
        ("--set",),
        {
            "action": "append",
            "default": [],
            "metavar": "KEY=VALUE",
            "help": "change a training config field, as in 'cagcl-mini train' (repeatable)",
        },
    ),
    "out": (
        ("--out",),
        {"type": Path, "default": None, "help": "scratch folder (default: a temporary one)"},
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="NAME")
    for name, (help_text, function, options) in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON object last")
        for option in options:
            flags, kwargs = OPTIONS[option]
            p.add_argument(*flags, **kwargs)
        p.set_defaults(benchmark_function=function)


def run(args: argparse.Namespace) -> int:
    result = args.benchmark_function(args)
    if args.json:
        print(json.dumps(jsonable(result), sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0
