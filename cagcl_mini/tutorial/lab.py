"""JupyterLab for the tutorial: opening a notebook does not mark it modified.

JupyterLab 4 copies the kernel's ``language_info`` (which includes the exact Python version)
into an open notebook once the kernel connects, and a notebook whose stored ``language_info``
differs becomes "modified": a student who only looked is asked to save. The version differs
from machine to machine, so the files in git cannot carry it. :class:`TutorialContentsManager`,
the server's contents manager under ``make lab`` (and the browser test), fills in the
``language_info`` the installed kernel reports when it serves a notebook of that kernel; the
file on disk changes only when the user saves.
"""

from __future__ import annotations

from typing import Any

from ipykernel.ipkernel import IPythonKernel
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

from cagcl_mini.tutorial.standard import KERNELSPEC


def kernel_language_info() -> dict[str, Any]:
    """The ``language_info`` the project's kernel (ipykernel in this interpreter) reports."""
    return dict(IPythonKernel.language_info)


class TutorialContentsManager(AsyncLargeFileManager):
    """Jupyter Server's default contents manager, serving notebooks of the project's kernel
    with the kernel's own ``language_info``."""

    async def get(self, path: str, content: bool = True, type: str | None = None, **kwargs: Any):
        model = await super().get(path, content=content, type=type, **kwargs)
        notebook = model.get("content") if model.get("type") == "notebook" else None
        if notebook is not None:
            metadata = notebook.setdefault("metadata", {})
            if metadata.get("kernelspec", {}).get("name") == KERNELSPEC["name"]:
                metadata["language_info"] = kernel_language_info()
        return model
