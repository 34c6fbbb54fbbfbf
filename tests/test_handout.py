"""The tutorial run's HTML handout and its clean outputs: real papermill and nbconvert runs."""

from __future__ import annotations

import json
import re

import nbformat

from cagcl_mini.tutorial.runner import claims_section, run_notebooks


def _notebook(path, title: str, sources: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\nText."), params]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)


def test_run_writes_an_html_page_per_notebook_and_an_index(tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "00_first.ipynb", "First steps", ["print('hello from', x)"])
    loop = "from cagcl_mini.progress import progress_bar as bar\nprint(sum(bar(range(5), desc='work')))"
    _notebook(folder / "01_second.ipynb", "Second: bars", [loop])
    summary = run_notebooks(out_dir=tmp_path / "run", folder=folder, cell_timeout=120)
    assert summary["ok"]
    run = tmp_path / "run"
    index = (run / "index.html").read_text()
    assert summary["handout"] == str(run / "index.html")
    assert re.findall(r'href="([^"]+)"', index) == ["00_first.html", "01_second.html"]
    assert "First steps" in index and "Second: bars" in index and "(ok, " in index
    assert f"Wall time of this run: {summary['seconds']:.0f} s" in index
    # the README's measured claims table, rendered (the source checkout has one)
    assert "<table>" in index and "cross-anatomy text cosine" in index
    first = (run / "00_first.html").read_text()
    assert "<html" in first and "hello from 1" in first
    # no progress bar is frozen into the executed copy (and so into the handout)
    executed = nbformat.read(run / "01_second.ipynb", as_version=4)
    outputs = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "10" in outputs and "work" not in outputs and "%|" not in outputs
    assert json.loads((run / "summary.json").read_text())["handout"].endswith("index.html")


def test_a_failed_run_still_writes_the_handout_of_what_ran(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "00_ok.ipynb", "Fine", ["y = x + 1"])
    _notebook(folder / "01_bad.ipynb", "Broken", ["raise ValueError('boom')"])
    summary = run_notebooks(out_dir=tmp_path / "run", folder=folder, cell_timeout=120)
    assert not summary["ok"]
    index = (tmp_path / "run" / "index.html").read_text()
    assert "(ok, " in index and "(failed, " in index
    assert "boom" in (tmp_path / "run" / "01_bad.html").read_text()


def test_the_claims_section_is_cut_from_a_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n### The CA-GCL claims at laptop scale (bench)\n| a |\n| - |\n\n### Next\nno"
    )
    section = claims_section(readme)
    assert (
        section.startswith("### The CA-GCL claims") and "| a |" in section and "Next" not in section
    )
    assert claims_section(tmp_path / "missing.md") == ""


def test_progress_bars_follow_tqdm_disable(monkeypatch):
    from cagcl_mini.progress import bars_disabled, progress_bar

    for value, off in (("", False), ("0", False), ("false", False), ("1", True), ("yes", True)):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert bars_disabled() is off
        assert progress_bar(total=3).disable is off
    monkeypatch.delenv("TQDM_DISABLE")
    assert progress_bar(total=3, disable=True).disable and not progress_bar(total=3).disable
