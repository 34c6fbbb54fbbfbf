"""Where the tutorial keeps its data, checkpoints and notebook runs.

Everything lives under one home folder, ``$CAGCL_MINI_HOME`` (default ``~/.cache/cagcl-mini``), so a
course machine can point all notebooks at one shared cache and a test can point them at a temp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "CAGCL_MINI_HOME"
ENV_DATA = "CAGCL_MINI_DATA"


def home() -> Path:
    """The cache root: ``$CAGCL_MINI_HOME`` or ``~/.cache/cagcl-mini``."""
    return Path(os.environ.get(ENV_HOME, Path.home() / ".cache" / "cagcl-mini")).expanduser()


def default_data_dir() -> Path:
    """The embedded dataset root: ``$CAGCL_MINI_DATA`` or ``<home>/data/default``."""
    env = os.environ.get(ENV_DATA)
    return Path(env).expanduser() if env else home() / "data" / "default"


def site_data_dir(site: str, variant: str = "") -> Path:
    """Where an embedded dataset lives: the default data dir for the tutorial's own (site ``A``,
    default spec); beside it ``<default data dir>[-<variant>][-site-<site>]`` for another
    hospital or another spec (``variant``, e.g. ``realistic``), so datasets of different specs
    never overwrite one another."""
    base = default_data_dir()
    name = base.name + (f"-{variant}" if variant else "") + (f"-site-{site}" if site != "A" else "")
    return base.with_name(name)


def checkpoint_dir() -> Path:
    """Where trained tutorial checkpoints are cached, one sub-folder per run name."""
    return home() / "checkpoints"


def shared_data_dir() -> Path | None:
    """The project machines' real test data (``../shared/data`` beside the checkout), if present."""
    root = repo_root()
    folder = root.parent / "shared" / "data" if root is not None else None
    return folder if folder is not None and folder.is_dir() else None


def repo_root() -> Path | None:
    """The source checkout this package was imported from, or None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "notebooks").is_dir() and (root / "pyproject.toml").is_file() else None
