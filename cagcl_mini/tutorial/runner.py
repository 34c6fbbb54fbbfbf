"""Run the tutorial notebooks in order with papermill, into a run folder.

Each notebook is executed with kernel ``python3`` and ``notebooks/`` as working directory; the
executed copies and a ``summary.json`` land in the run folder. A failure names the notebook and the
cell (index, first source line, exception) and stops the run, because later notebooks would only
repeat the error.
"""

from __future__ import annotations

import ast
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import papermill
from papermill.exceptions import PapermillExecutionError

from cagcl_mini.fileio import write_json
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
    write_json(run_dir / "summary.json", summary)
    print(f"{'all ok' if summary['ok'] else 'FAILED'}: executed notebooks in {run_dir}")
    return summary
