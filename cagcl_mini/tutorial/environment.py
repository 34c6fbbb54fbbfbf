"""What a notebook's setup cell prints: the package, its folders and MONAI's configuration, once.

``monai.config.print_config`` writes its report in about 25 separate ``print`` calls, which a
notebook shows as many small output fragments; :func:`environment_report` gathers it into one
string with the kit's own version, cache root and real-data folder in front.
"""

from __future__ import annotations

import io
from importlib.metadata import PackageNotFoundError, version

from monai.config import print_config

from cagcl_mini import paths


def environment_report() -> str:
    """The kit's version and folders, then MONAI's ``print_config`` output, as one text."""
    try:
        kit = version("cagcl-mini")
    except PackageNotFoundError:
        kit = "not installed (source tree)"
    shared = paths.shared_data_dir()
    head = [
        f"cagcl-mini version: {kit}",
        f"cache root ($CAGCL_MINI_HOME): {paths.home()}",
        f"real data folder: {shared if shared is not None else 'none found'}",
    ]
    buffer = io.StringIO()
    print_config(file=buffer)
    return "\n".join(head) + "\n" + buffer.getvalue()


def print_environment() -> None:
    """Print :func:`environment_report` in one write (one output block in a notebook)."""
    print(environment_report(), end="", flush=True)
