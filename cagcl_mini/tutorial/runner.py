"""Run the tutorial notebooks in order with papermill, into a run folder.

Each notebook is executed with kernel ``python3`` and ``notebooks/`` as working directory; the
executed copies, a ``summary.json`` and an HTML handout (one page per notebook, converted with
nbconvert, and ``index.html`` linking them) land in the run folder. A failure names the notebook and the
cell (index, first source line, exception) and stops the run, because later notebooks would only
repeat the error.
"""

from __future__ import annotations

import ast
import html
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat
import papermill
from jupyter_client.manager import AsyncKernelManager
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError
from traitlets import default

from cagcl_mini.fileio import atomic_write_text, write_json
from cagcl_mini.paths import repo_root

KERNEL = "python3"


def notebooks_dir() -> Path:
    """The ``notebooks/`` folder of the source checkout (the notebooks are not in the wheel)."""
    root = repo_root()
    if root is None:
        raise FileNotFoundError(
            "the tutorial notebooks live in the source checkout's notebooks/ folder; "
            "clone the repository and run `make tutorial` there"
        )
    return root / "notebooks"


def list_notebooks(only: list[str] | None = None, folder: Path | None = None) -> list[Path]:
    """The numbered notebooks in order, optionally those whose name contains one of ``only``."""
    folder = folder or notebooks_dir()
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(o in p.stem for o in only)]
        if not found:
            raise ValueError(f"no notebook in {folder} matches --only {only}")
    return found


def parse_parameters(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["steps=50", "preset='gpu-full'"]`` into a dict; values are Python literals or text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"parameter {pair!r} is not of the form key=value")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        params[key.strip()] = value
    return params


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The names and default values in a notebook's ``parameters`` cell."""
    return {name: info["default"] for name, info in papermill.inspect_notebook(str(path)).items()}


def _check_parameters(notebooks: list[Path], parameters: dict[str, Any]) -> None:
    known = set().union(*(notebook_parameters(nb) for nb in notebooks)) if notebooks else set()
    unknown = sorted(set(parameters) - known)
    if unknown:
        names = ", ".join(nb.stem for nb in notebooks)
        raise ValueError(
            f"parameter(s) {unknown} appear in no parameters cell of {names}; known: {sorted(known)}"
        )


class LocalKernelManager(AsyncKernelManager):
    """A kernel on this machine talks over Unix sockets (``ipc``), not TCP: nothing listens on
    a port, and ipykernel has no "running over TCP without encryption" warning to print into
    every notebook's run."""

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc" if os.name == "posix" else "tcp"


def run_notebooks(
    only: list[str] | None = None,
    out_dir: Path | None = None,
    parameters: dict[str, Any] | None = None,
    cell_timeout: int = 600,
    folder: Path | None = None,
) -> dict[str, Any]:
    """Execute the notebooks in order and write executed copies plus ``summary.json``.

    A parameter is injected only into the notebooks whose parameters cell defines it. Returns the
    summary: ``{"ok": bool, "run_dir": str, "notebooks": [{"name", "status", "seconds", ...}]}``.
    """
    folder = folder or notebooks_dir()
    notebooks = list_notebooks(only, folder)
    parameters = parameters or {}
    _check_parameters(notebooks, parameters)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(out_dir) if out_dir else folder.parent / "runs" / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"ok": True, "run_dir": str(run_dir), "notebooks": []}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # progress bars would stay in the executed copies as frozen "0%| 0/120" widgets
    os.environ.setdefault("TQDM_DISABLE", "1")

    for i, nb in enumerate(notebooks, start=1):
        own = {k: v for k, v in parameters.items() if k in notebook_parameters(nb)}
        print(f"[{i}/{len(notebooks)}] {nb.stem} ...", flush=True)
        start = time.perf_counter()
        entry: dict[str, Any] = {"name": nb.stem, "parameters": own}
        try:
            papermill.execute_notebook(
                str(nb),
                str(run_dir / nb.name),
                parameters=own,
                kernel_name=KERNEL,
                cwd=str(folder),
                progress_bar=False,
                execution_timeout=cell_timeout,
                kernel_manager_class=LocalKernelManager,
            )
            entry["status"] = "ok"
        except PapermillExecutionError as err:
            first_line = (err.source or "").strip().splitlines()[:1]
            entry.update(
                status="failed",
                cell_index=err.cell_index,
                cell=first_line[0] if first_line else "",
                error=f"{err.ename}: {err.evalue}",
            )
        entry["seconds"] = round(time.perf_counter() - start, 1)
        summary["notebooks"].append(entry)
        if entry["status"] != "ok":
            summary["ok"] = False
            print(
                f"    FAILED {nb.name}, cell {entry['cell_index']} ({entry['cell']!r}): "
                f"{entry['error']}\n    executed copy: {run_dir / nb.name}",
                flush=True,
            )
            break
        print(f"    ok in {entry['seconds']} s", flush=True)

    summary["seconds"] = round(sum(e["seconds"] for e in summary["notebooks"]), 1)
    summary["handout"] = str(write_handout(run_dir, summary["notebooks"]))
    write_json(run_dir / "summary.json", summary)
    print(f"{'all ok' if summary['ok'] else 'FAILED'}: executed notebooks in {run_dir}")
    return summary


def write_handout(run_dir: Path, entries: list[dict[str, Any]]) -> Path:
    """Convert each executed notebook of ``run_dir`` to HTML and write ``index.html`` linking them
    (title, status and seconds per notebook); returns the index's path."""
    exporter = HTMLExporter()
    rows = []
    for entry in entries:
        executed = run_dir / f"{entry['name']}.ipynb"
        if not executed.exists():
            continue
        nb = nbformat.read(executed, as_version=4)
        body, _ = exporter.from_notebook_node(nb)
        page = run_dir / f"{entry['name']}.html"
        atomic_write_text(page, body)
        title = _notebook_title(nb) or entry["name"]
        rows.append(
            f'<li><a href="{html.escape(page.name)}">{html.escape(title)}</a> '
            f"({html.escape(entry['status'])}, {entry['seconds']} s)</li>"
        )
    index = run_dir / "index.html"
    atomic_write_text(
        index,
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>cagcl-mini tutorial</title>'
        "</head><body><h1>cagcl-mini tutorial</h1><ol>\n"
        + "\n".join(rows)
        + "\n</ol></body></html>\n",
    )
    return index


def _notebook_title(nb: Any) -> str:
    """The text of a notebook's first heading (its first markdown cell starts with ``# ``)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""
