"""The ``cagcl-mini`` command: one parser tree, one module per subcommand.

``cagcl-mini COMMAND --help`` lists a command's options. ``python -m cagcl_mini COMMAND ...`` is
the same command (``torchrun --nproc_per_node N -m cagcl_mini train ...`` for several processes).

The one place where the package imports inside functions: a command's ``run`` imports its
implementation. Importing MONAI loads all of its sub-packages (about 15 s on a 2-core laptop) and
torch several more, so the parser tree is built from light modules only, and ``--help`` or a
mistyped option answers at once.

Errors in what the user gave (a missing file, a bad config value, a dataset that does not fit, a
folder that cannot be written, a lock held too long) are printed as one line,
``cagcl-mini COMMAND: error: MESSAGE``, exit status 2; ``--debug`` (before or after the command)
shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from cagcl_mini.cli import bench, evaluate, import_dicom, make_data, notebooks, train
from cagcl_mini.errors import DataError
from cagcl_mini.fileio import LockTimeout

COMMANDS = {
    "make-data": make_data,
    "import-dicom": import_dicom,
    "notebooks": notebooks,
    "train": train,
    "evaluate": evaluate,
    "bench": bench,
}
# What a user's input can cause: shown as one line, not a traceback. OSError covers the missing
# and unwritable files, LockTimeout and the dataset writer's errors; the config's checks raise
# ValueError (DataError is one) or KeyError.
USER_ERRORS: tuple[type[BaseException], ...] = (
    DataError, ValueError, KeyError, OSError, LockTimeout, FloatingPointError,
)  # fmt: skip
DEBUG_HELP = "show the full traceback of an error instead of one line"


def error_line(exc: BaseException) -> str:
    """The message of an error on one line (a KeyError's without its quotes)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(str(text).split()) or type(exc).__name__
    return text


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(
        prog="cagcl-mini",
        description="Data, notebooks, training, evaluation and benchmarks of cagcl-mini.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        description = (module.__doc__ or "").strip().split("\n\n")[0]
        p = sub.add_parser(name, help=module.HELP, description=description)
        # SUPPRESS: a subcommand's default would overwrite a --debug given before the command
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process arguments) and run the command; the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = [a for a in argv if a != "--debug"]
    try:
        return args.run(args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"cagcl-mini {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"cagcl-mini {args.command}: interrupted", file=sys.stderr)
        return 130
