"""Progress bars: ``tqdm.auto`` everywhere, off when ``TQDM_DISABLE`` is set.

tqdm's notebook bar ignores ``TQDM_DISABLE`` (it passes ``disable=False`` explicitly), so a bar
drawn while papermill or nbval executes a notebook stays in the saved copy as a frozen
"0%| 0/120" widget. The tutorial runner sets the variable; every bar of the package comes from
:func:`progress_bar`, which honours it.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm


def bars_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` asks for no progress bars (any value but "", "0", "false")."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def progress_bar(*args: Any, disable: bool = False, **kwargs: Any) -> tqdm:
    """A ``tqdm.auto`` bar, disabled when asked or when :func:`bars_disabled`."""
    return tqdm(*args, disable=disable or bars_disabled(), **kwargs)
