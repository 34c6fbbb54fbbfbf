"""The notebook standard (``cagcl_mini.tutorial.standard``): every tutorial notebook conforms, and
the checker catches each rule broken on a copy of a real notebook."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cagcl_mini.tutorial.runner import list_notebooks
from cagcl_mini.tutorial.standard import KERNELSPEC, notebook_problems

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = list_notebooks(folder=REPO / "notebooks")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_meets_the_standard(path):
    assert notebook_problems(path) == []


def test_the_kernelspec_is_the_one_make_install_registers():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    registered = re.search(r'--name (\S+) --display-name "([^"]+)"', makefile)
    assert registered, "make install must register the kernel with --name and --display-name"
    assert registered.groups() == (KERNELSPEC["name"], KERNELSPEC["display_name"])


def _broken(tmp_path: Path, change) -> list[str]:
    nb = json.loads(NOTEBOOKS[1].read_text(encoding="utf-8"))
    change(nb)
    path = tmp_path / "broken.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    return notebook_problems(path)


def _code(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _setup_without_environment(nb):
    setup = _code(nb)[0]
    setup["source"] = [s for s in setup["source"] if "print_environment()" not in s]


def _params_with_expression(nb):
    cell = next(c for c in _code(nb) if "parameters" in c["metadata"].get("tags", []))
    cell["source"] = [*cell["source"], "\nsize = 2 * 32\n"]


BREAKS = {
    "title": (
        lambda nb: nb["cells"][0]["source"].__setitem__(0, "# Mask pooling\n"),
        "markdown title",
    ),
    "learn": (
        lambda nb: nb["cells"][0].update(source=["# 01 · Mask pooling\n"]),
        "What you will learn",
    ),
    "setup": (_setup_without_environment, "print_environment"),
    "parameters": (_params_with_expression, "line"),
    "asserts": (lambda nb: _code(nb)[-1].update(source=["print(1)\n"]), "asserts"),
    "closing": (lambda nb: nb["cells"].pop(), "## Summary, ## Exercises, ## References"),
    "outputs": (lambda nb: _code(nb)[0].update(execution_count=3), "stripped"),
    "long line": (lambda nb: _code(nb)[1]["source"].append("\nx = 1  # " + "y" * 100), "line"),
    "kernel": (
        lambda nb: nb["metadata"]["kernelspec"].update(display_name="Python 3"),
        "kernelspec",
    ),
}


@pytest.mark.parametrize("rule", BREAKS)
def test_the_checker_names_each_broken_rule(tmp_path, rule):
    change, expected = BREAKS[rule]
    problems = _broken(tmp_path, change)
    assert len(problems) == 1, problems
    assert problems[0].startswith("broken.ipynb: ") and expected in problems[0]


def test_exercises_are_counted(tmp_path):
    def one_exercise(nb):
        nb["cells"][-2]["source"] = ["## Exercises\n", "1. Only one thing to try.\n"]

    (problem,) = _broken(tmp_path, one_exercise)
    assert "2-4 items, has 1" in problem
