"""Adding rows to CT-RATE CSVs: several runs (or a larger ``--limit``) add up, atomically.

The layout itself (names and paths) is :mod:`cagcl_mini.layout`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cagcl_mini.fileio import atomic_path
from cagcl_mini.layout import natural_key


def upsert_rows(
    path: Path, rows: pd.DataFrame | Iterable[Mapping[str, Any]], key: str = "VolumeName"
) -> Path:
    """Insert or replace rows (matched on ``key``) in the CSV at ``path``, keeping natural order.

    Rows already there for other volumes stay, so several runs (or a larger ``--limit``) add up.
    Columns missing on either side are left empty.
    """
    new = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if key not in new.columns:
        raise ValueError(f"rows for {path} have no {key!r} column")
    path = Path(path)
    if path.is_file():
        old = pd.read_csv(path)
        if key not in old.columns:
            raise ValueError(f"{path} has no {key!r} column; it is not a CT-RATE table")
        old = old[~old[key].isin(new[key])]
        columns = list(old.columns) + [c for c in new.columns if c not in old.columns]
        merged = pd.concat([old, new], ignore_index=True)[columns]
    else:
        merged = new
    order = sorted(range(len(merged)), key=lambda i: natural_key(merged[key].iloc[i]))
    merged = merged.iloc[order].reset_index(drop=True)
    with atomic_path(path) as tmp:
        merged.to_csv(tmp, index=False)
    return path
