"""What a download run did: planned, fetched, already present, and skipped files, printable."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_download.http import format_bytes


@dataclass
class DownloadReport:
    """The outcome of one source's run; ``format()`` gives the summary the CLI prints."""

    source: str
    dest: Path
    dry_run: bool = False
    verb: str = "fetch"  # what the dry run would do to each planned file
    planned: list[tuple[str, int | None]] = field(default_factory=list)  # (name, size)
    fetched: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    written: list[Path] = field(default_factory=list)  # files we created (CSVs, NIfTI, masks)
    notes: list[str] = field(default_factory=list)

    def plan(self, name: str, size: int | None) -> None:
        """Record a file this run would fetch (dry run) or is about to fetch."""
        self.planned.append((name, size))

    def skip(self, name: str, reason: str) -> None:
        """Record a file that was skipped, with the reason shown in the summary."""
        self.skipped.append((name, reason))

    @property
    def planned_bytes(self) -> int:
        """Total size of the planned files whose size is known."""
        return sum(s for _, s in self.planned if s is not None)

    def format(self) -> str:
        """A multi-line, human-readable summary (no secrets: names and sizes only)."""
        lines = [f"{self.source} -> {self.dest}"]
        if self.dry_run:
            unknown = sum(1 for _, s in self.planned if s is None)
            head = f"dry run: would {self.verb} {len(self.planned)} files"
            if self.verb == "fetch":
                head += f", {format_bytes(self.planned_bytes)}"
                head += f" (+{unknown} of unknown size)" if unknown else ""
            lines.append(head)
            if self.present:
                lines.append(f"already present: {len(self.present)} files")
            lines += [
                f"  {name}  {format_bytes(size)}"
                if size is not None or self.verb == "fetch"
                else f"  {name}"
                for name, size in self.planned
            ]
        else:
            lines.append(
                f"fetched {len(self.fetched)}, already present {len(self.present)}, "
                f"skipped {len(self.skipped)}, wrote {len(self.written)} files"
            )
        if self.skipped:
            lines.append("skipped:")
            lines += [f"  {name}: {reason}" for name, reason in self.skipped]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)
