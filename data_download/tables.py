"""Adding rows to CT-RATE CSVs: several runs (or a larger ``--limit``) add up, atomically.

The layout itself (names and paths) is :mod:`cagcl_mini.layout`'s; the upsert is
:func:`cagcl_mini.fileio.upsert_rows`, here in CT-RATE's natural VolumeName order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cagcl_mini.fileio import upsert_rows as _upsert_rows
from cagcl_mini.layout import natural_key


def upsert_rows(
    path: Path, rows: pd.DataFrame | Iterable[Mapping[str, Any]], key: str = "VolumeName"
) -> Path:
    """Insert or replace rows (matched on ``key``) in the CSV at ``path``, keeping natural order.

    Rows already there for other volumes stay, so several runs (or a larger ``--limit``) add up.
    Columns missing on either side are left empty.
    """
    return _upsert_rows(path, rows, key, sort_key=natural_key)
