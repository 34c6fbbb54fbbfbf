"""The notebook runner: real papermill runs, parameter injection, failures named, nbval-ready files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import psutil
import pytest

from cagcl_mini.cli import main as cli
from cagcl_mini.tutorial.runner import (
    lanes,
    list_notebooks,
    notebook_parameters,
    parse_parameters,
    run_notebooks,
)

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
EXPECTED = [
    "00_data_tour",
    "01_mask_pooling",
    "02_contrastive_losses",
    "03_text_augmentation",
    "04_pretraining",
    "05_embedding_collapse",
    "06_zero_shot_evaluation",
    "07_retrieval_and_reports",
    "08_localisation_and_segmentation",
]


def _write_notebook(path: Path, sources: list[str], params: str = "x = 1") -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)


def test_parse_parameters_reads_literals_and_text():
    assert parse_parameters(["steps=50", "name=cagcl", "lr=1e-3", "flag=True", "xs=[1, 2]"]) == {
        "steps": 50,
        "name": "cagcl",
        "lr": 1e-3,
        "flag": True,
        "xs": [1, 2],
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_parameters(["no_equals_sign"])


@pytest.mark.parametrize("name", EXPECTED)
def test_each_notebook_is_stripped_and_has_a_literal_parameters_cell(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.exists():
        pytest.skip(f"{path.name} is not written yet")
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "outputs not stripped"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged `parameters`"
    assigned = [
        line.split("=", 1)[0].strip()
        for line in tagged[0].source.splitlines()
        if line and not line.startswith(("#", " ")) and "=" in line
    ]
    parsed = notebook_parameters(path)
    # papermill skips a line it cannot parse (an apostrophe or "=" in the comment, ...) with only
    # a log message, and `-p` for that name then fails: every assignment must come through
    assert assigned and list(parsed) == assigned, (assigned, list(parsed))
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert any("assert " in c.source for c in code[-3:]), "a final cell of asserts is missing"
    raw = json.loads(path.read_text(encoding="utf-8"))["cells"]  # nbformat.read would add ids
    ids = [c.get("id") for c in raw]
    assert None not in ids and len(set(ids)) == len(ids), (
        "every cell needs a unique id (nbformat 4.5)"
    )


def test_notebooks_are_listed_in_order():
    names = [p.stem for p in list_notebooks(folder=NOTEBOOKS)]
    assert names == sorted(names)
    assert names[0] == "00_data_tour"


def test_a_failing_cell_is_named_and_stops_the_run(tmp_path, capsys):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _write_notebook(folder / "00_ok.ipynb", ["y = x + 1"])
    _write_notebook(folder / "01_bad.ipynb", ["y = x + 1", "raise ValueError('boom in cell two')"])
    _write_notebook(folder / "02_never.ipynb", ["y = 2"])
    summary = run_notebooks(
        out_dir=tmp_path / "run", folder=folder, cell_timeout=120, warm_imports=()
    )
    assert not summary["ok"]
    statuses = [(e["name"], e["status"]) for e in summary["notebooks"]]
    assert statuses == [("00_ok", "ok"), ("01_bad", "failed")]
    assert _kernel_children() == [], "the kernel started ahead for 02_never is shut down"
    failed = summary["notebooks"][1]
    assert "boom in cell two" in failed["error"] and "ValueError" in failed["error"]
    assert "raise ValueError" in failed["cell"]
    out = capsys.readouterr().out
    assert "01_bad" in out and "boom in cell two" in out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["ok"] is False


def _kernel_children() -> list[int]:
    """Kernel processes this test process still has."""
    return [
        p.pid
        for p in psutil.Process().children(recursive=True)
        if "ipykernel" in " ".join(p.cmdline())
    ]


def _record(path: Path) -> str:
    """A cell that writes what its kernel looks like: process, folder, whether colorsys (which
    a fresh kernel does not import) is loaded, and its execution count so far."""
    return (
        "import json, os, pathlib, sys\n"
        f"pathlib.Path({str(path)!r}).write_text(json.dumps({{'pid': os.getpid(), "
        "'cwd': os.getcwd(), 'colorsys': 'colorsys' in sys.modules}))"
    )


def test_the_next_kernel_starts_and_imports_while_a_notebook_runs(tmp_path):
    folder, out = tmp_path / "nbs", tmp_path / "records"
    folder.mkdir()
    out.mkdir()
    names = ["00_first", "01_second", "02_third"]
    for name in names:
        _write_notebook(folder / f"{name}.ipynb", [_record(out / f"{name}.json")])
    summary = run_notebooks(
        out_dir=tmp_path / "run", folder=folder, cell_timeout=180, warm_imports=("colorsys",)
    )
    assert summary["ok"] and summary["warm_kernels"], summary
    assert [e["warm"] for e in summary["notebooks"]] == [False, True, True]
    records = [json.loads((out / f"{name}.json").read_text()) for name in names]
    assert [r["colorsys"] for r in records] == [False, True, True]  # imported ahead, not by 00
    assert all(Path(r["cwd"]) == folder for r in records)
    assert len({r["pid"] for r in records}) == 3  # a kernel of its own for each notebook
    for name in names:  # the warm-up left no trace in the executed notebook
        executed = nbformat.read(tmp_path / "run" / f"{name}.ipynb", as_version=4)
        counts = [c.execution_count for c in executed.cells if c.cell_type == "code"]
        assert counts[0] == 1 and counts == sorted(counts), (name, counts)
    for r in records:
        assert not psutil.pid_exists(r["pid"]), "every kernel is shut down after its notebook"


def test_a_failed_warm_up_falls_back_to_a_fresh_kernel(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _write_notebook(folder / "00_a.ipynb", ["y = x + 1"])
    _write_notebook(folder / "01_b.ipynb", ["y = x + 2"])
    summary = run_notebooks(
        out_dir=tmp_path / "run", folder=folder, cell_timeout=180,
        warm_imports=("no_such_module_for_cagcl",),
    )  # fmt: skip
    assert summary["ok"], summary
    assert [e["warm"] for e in summary["notebooks"]] == [False, False]
    assert _kernel_children() == []


def test_cold_kernels_start_with_their_notebooks(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _write_notebook(folder / "00_a.ipynb", ["y = x + 1"])
    _write_notebook(folder / "01_b.ipynb", ["y = x + 2"])
    summary = run_notebooks(out_dir=tmp_path / "run", folder=folder, warm_imports=None)
    assert summary["ok"] and not summary["warm_kernels"]
    assert [e["warm"] for e in summary["notebooks"]] == [False, False]


def test_two_lanes_run_side_by_side_and_report_in_order(tmp_path):
    folder, marker = tmp_path / "nbs", tmp_path / "model-lane-started"
    folder.mkdir()
    wait = (  # the free lane's first notebook waits for the model lane's first to start
        "import time, pathlib\n"
        f"p = pathlib.Path({str(marker)!r})\n"
        "deadline = time.time() + 120\n"
        "while not p.exists() and time.time() < deadline:\n"
        "    time.sleep(0.2)\n"
        "assert p.exists(), 'the lanes did not run side by side'"
    )
    _write_notebook(folder / "00_free.ipynb", [wait])
    _write_notebook(
        folder / "01_model.ipynb", [f"import pathlib; pathlib.Path({str(marker)!r}).touch()"],
        params="preset = 'cpu-quick'",
    )  # fmt: skip
    _write_notebook(folder / "02_free.ipynb", ["y = x + 1"])
    _write_notebook(folder / "03_model.ipynb", ["y = 2"], params="preset = 'cpu-quick'")
    assert [[p.stem for p in lane] for lane in lanes(list_notebooks(folder=folder))] == [
        ["01_model", "03_model"], ["00_free", "02_free"]
    ]  # fmt: skip
    summary = run_notebooks(out_dir=tmp_path / "run", folder=folder, cell_timeout=180, jobs=2)
    assert summary["ok"], summary
    assert [e["name"] for e in summary["notebooks"]] == [
        "00_free",
        "01_model",
        "02_free",
        "03_model",
    ]
    assert summary["jobs"] == 2 and summary["seconds"] <= summary["notebook_seconds"]
    assert all((tmp_path / "run" / f"{e['name']}.ipynb").exists() for e in summary["notebooks"])


def test_a_failure_in_one_lane_stops_the_other(tmp_path):
    folder, marker = tmp_path / "nbs", tmp_path / "failed-already"
    folder.mkdir()
    _write_notebook(
        folder / "00_model.ipynb",
        [f"import pathlib; pathlib.Path({str(marker)!r}).touch()", "raise RuntimeError('boom')"],
        params="preset = 'cpu-quick'",
    )  # fmt: skip
    wait = f"import pathlib, time\nwhile not pathlib.Path({str(marker)!r}).exists(): time.sleep(0.2)\ntime.sleep(3)"
    _write_notebook(folder / "01_free.ipynb", [wait])
    _write_notebook(folder / "02_free.ipynb", ["y = 2"])
    summary = run_notebooks(out_dir=tmp_path / "run", folder=folder, cell_timeout=180, jobs=2)
    assert not summary["ok"]
    statuses = {e["name"]: e["status"] for e in summary["notebooks"]}
    assert statuses == {"00_model": "failed", "01_free": "ok"}  # 02 never started
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run_notebooks(folder=folder, jobs=0)


def test_unknown_parameter_is_rejected_before_running(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _write_notebook(folder / "00_only.ipynb", ["y = x"])
    with pytest.raises(ValueError, match="typo_param"):
        run_notebooks(folder=folder, out_dir=tmp_path / "run", parameters={"typo_param": 3})


def test_cli_runs_notebook_00_with_an_injected_parameter(tmp_path, capfd):
    if not (NOTEBOOKS / "00_data_tour.ipynb").exists():
        pytest.skip("notebook 00 is not written yet")
    out = tmp_path / "run"
    rc = cli.main(
        ["notebooks", "--only", "00", "--out", str(out), "-p", "n_train=14", "-p", "n_valid=6"]
    )
    assert rc == 0
    assert "without encryption" not in capfd.readouterr().err  # the kernel runs over ipc
    summary = json.loads((out / "summary.json").read_text())
    assert [e["name"] for e in summary["notebooks"]] == ["00_data_tour"]
    assert summary["notebooks"][0]["parameters"] == {"n_train": 14, "n_valid": 6}
    executed = nbformat.read(out / "00_data_tour.ipynb", as_version=4)
    text = "".join(
        o.get("text", "") + json.dumps(o.get("data", {}))
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "14 training and 6 validation volumes" in text


def test_nbval_waits_longer_than_its_five_seconds_for_a_cells_output(tmp_path):
    """The root conftest lifts nbval's hard-coded 5 s wait for each output message (a late
    message on loaded cores failed a cell that had run): read off nbval's own collected items."""
    (tmp_path / "report_timeouts.py").write_text(
        "def pytest_collection_finish(session):\n"
        "    for item in session.items:\n"
        "        print('TIMEOUT', type(item).__name__, item.output_timeout)\n"
    )
    notebook = NOTEBOOKS / "01_mask_pooling.ipynb"
    code_cells = [c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        + ["-p", "report_timeouts", "--nbval-lax", str(notebook.relative_to(REPO))],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.split() for line in done.stdout.splitlines() if line.startswith("TIMEOUT")]
    assert len(lines) == len(code_cells)
    assert {kind for _, kind, _ in lines} == {"IPyNbCell"}
    root_conftest = importlib.util.spec_from_file_location("root_conftest", REPO / "conftest.py")
    settings = importlib.util.module_from_spec(root_conftest)
    root_conftest.loader.exec_module(settings)
    assert settings.NBVAL_OUTPUT_TIMEOUT_S > 5
    assert {int(t) for *_, t in lines} == {settings.NBVAL_OUTPUT_TIMEOUT_S}
