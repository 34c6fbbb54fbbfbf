"""The ``cagcl-mini`` command: one parser tree, one module per subcommand.

``cagcl-mini COMMAND --help`` lists a command's options. ``python -m cagcl_mini COMMAND ...`` is
the same command (``torchrun --nproc_per_node N -m cagcl_mini train ...`` for several processes).

The one place where the package imports inside functions: a command's ``run`` imports its
implementation. Importing MONAI loads all of its sub-packages (about 15 s on a 2-core laptop) and
torch several more, so the parser tree is built from light modules only, and ``--help`` or a
mistyped option answers at once.
"""

from __future__ import annotations

import argparse
import sys

from cagcl_mini.cli import bench, evaluate, import_dicom, make_data, notebooks, train

COMMANDS = {
    "make-data": make_data,
    "import-dicom": import_dicom,
    "notebooks": notebooks,
    "train": train,
    "evaluate": evaluate,
    "bench": bench,
}


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(
        prog="cagcl-mini",
        description="Data, notebooks, training, evaluation and benchmarks of cagcl-mini.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        description = (module.__doc__ or "").strip().split("\n\n")[0]
        p = sub.add_parser(name, help=module.HELP, description=description)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process arguments) and run the command; the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return args.run(args)
