"""The contents manager of `make lab`: notebooks of the project's kernel are served with the
installed kernel's language_info (so JupyterLab does not mark them modified on open); others,
and the files on disk, are left as they are."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from cagcl_mini.tutorial.lab import TutorialContentsManager, kernel_language_info

REPO = Path(__file__).resolve().parent.parent


def test_notebooks_of_the_project_kernel_get_the_kernels_language_info(tmp_path):
    shutil.copy(REPO / "notebooks" / "01_mask_pooling.ipynb", tmp_path / "ours.ipynb")
    other = json.loads((tmp_path / "ours.ipynb").read_text())
    other["metadata"]["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    (tmp_path / "other.ipynb").write_text(json.dumps(other))
    manager = TutorialContentsManager(root_dir=str(tmp_path))

    ours = asyncio.run(manager.get("ours.ipynb"))["content"]["metadata"]
    assert ours["language_info"] == kernel_language_info()
    assert ours["language_info"]["version"].count(".") == 2  # the full Python version
    theirs = asyncio.run(manager.get("other.ipynb"))["content"]["metadata"]
    assert theirs["language_info"] == {"name": "python"}
    on_disk = json.loads((tmp_path / "ours.ipynb").read_text())["metadata"]["language_info"]
    assert on_disk == {"name": "python"}
    assert asyncio.run(manager.get("ours.ipynb", content=False))["content"] is None
