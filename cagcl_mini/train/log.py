"""The training metrics log: one JSON object per line (``log.jsonl``) or a CSV (``log.csv``).

Lines are flushed as they are written, so a killed run keeps its curve. On resume from step k the
lines of steps after k (written after the checkpoint the run resumes from) are dropped first, so
the log holds each step once.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from cagcl_mini.fileio import atomic_write_text


class MetricsLogger:
    """Append-only metrics log of one run (a no-op on non-main ranks)."""

    def __init__(
        self,
        out_dir: str | Path,
        fmt: str = "jsonl",
        truncate_after: int | None = 0,
        enabled: bool = True,
    ) -> None:
        self.path = self.path_for(out_dir, fmt)
        self.fmt = fmt
        self.enabled = enabled
        self._fields: list[str] | None = None
        self._fh = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_log(self.path) if r["step"] <= (truncate_after or 0)]
        if fmt == "csv" and kept:
            self._fields = list(kept[0])
        atomic_write_text(self.path, self._render(kept))
        self._fh = self.path.open("a", newline="")

    @staticmethod
    def path_for(out_dir: str | Path, fmt: str) -> Path:
        """``out_dir/log.jsonl`` or ``out_dir/log.csv``."""
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"log format must be 'jsonl' or 'csv', got {fmt!r}")
        return Path(out_dir) / f"log.{fmt}"

    def _render(self, rows: list[dict[str, Any]]) -> str:
        if self.fmt == "jsonl":
            return "".join(json.dumps(r) + "\n" for r in rows)
        if not rows:
            return ""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self._fields or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()

    def write(self, metrics: dict[str, Any]) -> None:
        """Append one row and flush."""
        if self._fh is None:
            return
        if self.fmt == "jsonl":
            self._fh.write(json.dumps(metrics) + "\n")
        else:
            if self._fields is None:
                self._fields = list(metrics)
                csv.DictWriter(self._fh, fieldnames=self._fields).writeheader()
            csv.DictWriter(self._fh, fieldnames=self._fields, extrasaction="ignore").writerow(
                metrics
            )
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``log.jsonl`` or ``log.csv`` (numbers parsed), [] when absent."""
    path = Path(path)
    if not path.is_file():
        return []
    if path.suffix == ".jsonl":
        rows = []
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                # a run killed mid-line leaves a partial last line; anything else is damage
                if i == len(lines):
                    break
                raise ValueError(f"{path}:{i} is not a JSON line") from None
        return rows
    with path.open(newline="") as fh:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _number(text: str) -> Any:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value
