"""Run the tutorial notebooks in order with papermill, into a run folder.

Each notebook is executed with kernel ``python3`` and ``notebooks/`` as working directory; the
executed copies, a ``summary.json`` and an HTML handout (one page per notebook, converted with
nbconvert, and ``index.html`` linking them) land in the run folder. A failure names the notebook and the
cell (index, first source line, exception) and stops the run, because later notebooks would only
repeat the error. While one notebook runs, the next notebook's kernel starts and imports the
heavy libraries (:mod:`cagcl_mini.tutorial.kernels`), and a finished notebook's kernel exits in
the background, so that mostly single-core work overlaps.

With ``jobs=2`` the notebooks run in two lanes (:func:`lanes`): those whose parameters cell names a
training ``preset`` share the checkpoint cache (the first to need a model trains it) and run one
after another in order; the others (no trained model) run beside them, also in order. Each
notebook's kernel still runs alone in its own process; only the wall time of the whole run shrinks.
"""

from __future__ import annotations

import ast
import html
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat
import papermill
from jupyter_client.manager import KernelManager
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import markdown2html_mistune
from papermill.exceptions import PapermillExecutionError

from cagcl_mini.fileio import atomic_write_text, write_json
from cagcl_mini.paths import repo_root
from cagcl_mini.tutorial.kernels import KERNEL, WARM_IMPORTS, LocalKernelManager, WarmKernel


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


def lanes(notebooks: list[Path]) -> list[list[Path]]:
    """The notebooks split in order into the lane that reads trained models (its parameters cell
    names ``preset``) and the lane that does not; empty lanes are left out."""
    model = [nb for nb in notebooks if "preset" in notebook_parameters(nb)]
    free = [nb for nb in notebooks if nb not in model]
    return [lane for lane in (model, free) if lane]


def _shut_down_in_background(km: KernelManager) -> threading.Thread:
    """Shut a finished notebook's kernel down in a thread (a kernel holding torch takes a second
    or more to exit); the caller joins it before the run returns."""

    def shut_down() -> None:
        if km.has_kernel:
            km.shutdown_kernel(now=False)

    thread = threading.Thread(target=shut_down, daemon=True)
    thread.start()
    return thread


def _execute(
    nb: Path,
    run_dir: Path,
    own: dict[str, Any],
    cell_timeout: int,
    folder: Path,
    km: KernelManager | None = None,
) -> dict[str, Any]:
    """One notebook through papermill, in the started kernel of ``km`` if given: its summary
    entry (name, parameters, status, seconds, warm)."""
    start = time.perf_counter()
    entry: dict[str, Any] = {"name": nb.stem, "parameters": own, "warm": km is not None}
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
            km=km,
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
    return entry


def run_notebooks(
    only: list[str] | None = None,
    out_dir: Path | None = None,
    parameters: dict[str, Any] | None = None,
    cell_timeout: int = 600,
    folder: Path | None = None,
    jobs: int = 1,
    warm_imports: tuple[str, ...] | None = WARM_IMPORTS,
) -> dict[str, Any]:
    """Execute the notebooks in order and write executed copies plus ``summary.json``.

    A parameter is injected only into the notebooks whose parameters cell defines it. While a
    notebook runs, the next one's kernel starts and imports ``warm_imports``
    (:class:`~cagcl_mini.tutorial.kernels.WarmKernel`; ``None``: each kernel starts when its
    notebook does). ``jobs=2`` runs the two :func:`lanes` side by side, each kernel started
    when its notebook starts (a failure in either lane stops both after their current
    notebook). Returns the summary: ``{"ok": bool, "run_dir": str, "seconds": wall time,
    "notebooks": [{"name", "status", "seconds", "warm", ...}]}`` in notebook order.
    """
    if int(jobs) < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
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

    order = {nb.stem: i for i, nb in enumerate(notebooks, start=1)}
    failed = threading.Event()
    entries: list[dict[str, Any]] = []

    warm = warm_imports is not None and int(jobs) == 1

    def run_lane(lane: list[Path]) -> None:
        upcoming: WarmKernel | None = None
        closing: list[threading.Thread] = []
        try:
            for i, nb in enumerate(lane):
                if failed.is_set():
                    return
                km = upcoming.take() if upcoming is not None else None
                # one kernel ahead: two imports beside a running notebook cost more than they save
                upcoming = (
                    WarmKernel(folder, warm_imports or ()) if warm and i + 1 < len(lane) else None
                )
                try:
                    ok = _run_one(nb, km)
                finally:
                    if km is not None:  # its exit overlaps the next notebook
                        closing.append(_shut_down_in_background(km))
                if not ok:
                    return
        finally:
            if upcoming is not None:
                upcoming.shutdown()
            for thread in closing:
                thread.join()

    def _run_one(nb: Path, km: KernelManager | None) -> bool:
        own = {k: v for k, v in parameters.items() if k in notebook_parameters(nb)}
        print(f"[{order[nb.stem]}/{len(notebooks)}] {nb.stem} ...", flush=True)
        entry = _execute(nb, run_dir, own, cell_timeout, folder, km)
        entries.append(entry)
        if entry["status"] != "ok":
            failed.set()
            print(
                f"    FAILED {nb.name}, cell {entry['cell_index']} ({entry['cell']!r}): "
                f"{entry['error']}\n    executed copy: {run_dir / nb.name}",
                flush=True,
            )
            return False
        print(f"    {nb.stem} ok in {entry['seconds']} s", flush=True)
        return True

    start = time.perf_counter()
    if int(jobs) == 1:
        run_lane(notebooks)
    else:
        split = lanes(notebooks)
        with ThreadPoolExecutor(max_workers=min(int(jobs), len(split))) as pool:
            for future in [pool.submit(run_lane, lane) for lane in split]:
                future.result()
    summary["notebooks"] = sorted(entries, key=lambda e: order[e["name"]])
    summary["ok"] = not failed.is_set()
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["notebook_seconds"] = round(sum(e["seconds"] for e in entries), 1)
    summary["jobs"] = int(jobs)
    summary["warm_kernels"] = warm
    summary["handout"] = str(
        write_handout(run_dir, summary["notebooks"], summary["seconds"], claims_section())
    )
    write_json(run_dir / "summary.json", summary)
    print(f"{'all ok' if summary['ok'] else 'FAILED'}: executed notebooks in {run_dir}")
    return summary


CLAIMS_HEADING = "### The CA-GCL claims at laptop scale"


def claims_section(readme: Path | None = None) -> str:
    """The README's claims section (heading to the next ``###``) as Markdown; "" when absent."""
    root = repo_root()
    readme = readme if readme is not None else (root / "README.md" if root else None)
    if readme is None or not readme.is_file():
        return ""
    text = readme.read_text(encoding="utf-8")
    start = text.find(CLAIMS_HEADING)
    if start < 0:
        return ""
    end = text.find("\n### ", start + len(CLAIMS_HEADING))
    return text[start : end if end > 0 else len(text)].strip()


def write_handout(
    run_dir: Path,
    entries: list[dict[str, Any]],
    seconds: float | None = None,
    claims: str = "",
) -> Path:
    """Convert each executed notebook of ``run_dir`` to HTML and write ``index.html`` linking them
    (title, status and seconds per notebook), with the run's wall ``seconds`` and the ``claims``
    (Markdown: the README's measured claims table) below; returns the index's path."""
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
    total = "" if seconds is None else f"<p>Wall time of this run: {seconds:.0f} s.</p>\n"
    table = (
        "<h2>Measured claims (README, <code>cagcl-mini bench claims</code>)</h2>\n"
        + markdown2html_mistune(claims.split("\n", 1)[1] if "\n" in claims else claims)
        if claims
        else ""
    )
    atomic_write_text(
        index,
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>cagcl-mini tutorial</title>'
        "</head><body><h1>cagcl-mini tutorial</h1><ol>\n"
        + "\n".join(rows)
        + "\n</ol>\n"
        + total
        + table
        + "</body></html>\n",
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
