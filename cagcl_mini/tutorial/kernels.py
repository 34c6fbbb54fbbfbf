"""Notebook kernels for the runner: on this machine over Unix sockets, and started ahead of time.

Starting a kernel and importing torch, MONAI and transformers takes 7-10 s per notebook, nearly
all of it on one core. :class:`WarmKernel` does that work for the next notebook in a background
thread while the current one runs (on the other core), and hands the ready kernel to papermill.
The notebook's own cells run unchanged: its imports find the modules loaded and its first cell
still has execution count 1.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

from jupyter_client.connect import ConnectionFileMixin
from jupyter_client.manager import AsyncKernelManager, KernelManager
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import default

KERNEL = "python3"

# what every tutorial notebook's setup cell imports, heaviest first
WARM_IMPORTS: tuple[str, ...] = (
    "torch",
    "monai",
    "transformers",
    "matplotlib.pyplot",
    "pandas",
    "cagcl_mini.tutorial.environment",
)


class _LocalSockets(ConnectionFileMixin):
    """A kernel on this machine talks over Unix sockets (``ipc``), not TCP: nothing listens on
    a port, and ipykernel has no "running over TCP without encryption" warning to print into
    every notebook's run."""

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc" if os.name == "posix" else "tcp"

    def _ip_default(self) -> str:
        """For ipc, sockets named after this kernel in Jupyter's runtime folder: jupyter_client's
        default, ``kernel-ipc-N`` in the working directory, collides when two kernels start at
        once and litters ``notebooks/``."""
        if self.transport != "ipc":
            return super()._ip_default()
        folder = Path(jupyter_runtime_dir())
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / f"cagcl-{uuid.uuid4().hex[:12]}-ipc")


class LocalKernelManager(_LocalSockets, AsyncKernelManager):
    """The kernel manager papermill starts a notebook's kernel with."""


class _WarmKernelManager(_LocalSockets, KernelManager):
    """A blocking manager (usable from any thread) whose clients are, once handed over, the
    asynchronous ones nbclient expects."""


class WarmKernel:
    """A kernel started in ``cwd`` and made to import ``imports``, in a background thread.

    :meth:`take` waits for it and returns the manager for ``papermill.execute_notebook(km=...)``,
    or ``None`` when the start or an import failed (the notebook then starts its own kernel).
    The caller shuts a taken kernel down with :meth:`shutdown`; nbclient leaves kernels it did
    not start running.
    """

    def __init__(
        self,
        cwd: Path,
        imports: tuple[str, ...] = WARM_IMPORTS,
        kernel_name: str = KERNEL,
        timeout: float = 300.0,
    ) -> None:
        self.km = _WarmKernelManager(kernel_name=kernel_name)
        self.error: str | None = None
        self.seconds: float | None = None
        self._thread = threading.Thread(
            target=self._warm_up, args=(Path(cwd), tuple(imports), timeout), daemon=True
        )
        self._thread.start()

    def _warm_up(self, cwd: Path, imports: tuple[str, ...], timeout: float) -> None:
        start = time.perf_counter()
        try:
            self.km.start_kernel(cwd=str(cwd))
            client = self.km.client()
            client.start_channels()
            try:
                client.wait_for_ready(timeout=timeout)
                if imports:
                    code = "\n".join(f"import {name}" for name in imports)
                    reply = client.execute_interactive(
                        code,
                        silent=True,
                        store_history=False,
                        timeout=timeout,
                        output_hook=lambda msg: None,  # import-time chatter stays out of the run
                    )
                    if reply["content"]["status"] != "ok":
                        content = reply["content"]
                        raise RuntimeError(f"{content.get('ename')}: {content.get('evalue')}")
            finally:
                client.stop_channels()
        except Exception as exc:  # any failure: the notebook starts a kernel of its own
            self.error = f"{type(exc).__name__}: {exc}"
        self.seconds = round(time.perf_counter() - start, 1)

    def take(self) -> KernelManager | None:
        """The ready kernel's manager (its clients now asynchronous), or ``None`` on failure."""
        self._thread.join()
        if self.error is not None or not self.km.has_kernel:
            self.shutdown()
            return None
        self.km.client_class = "jupyter_client.asynchronous.AsyncKernelClient"
        return self.km

    def shutdown(self) -> None:
        """Stop the kernel (after the warm-up finished) and remove its connection files."""
        self._thread.join()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=False)
        else:
            self.km.cleanup_resources()
