"""Notebook 00 in a real JupyterLab, driven by headless Chromium: the slice viewer shows an image
and every slider changes it.

nbval and the unit tests run the notebook in a kernel only; what a student sees depends on the
widget front end, which only a browser runs. The server is the project's venv on 127.0.0.1 at a
random port with a token; the browser is Debian's ``chromium`` through Playwright's
``executable_path`` (Playwright's own browser download is never used).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import REPO

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (make install adds it)"
)
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium on PATH: `apt-get install -y chromium` (make install does it as root)",
    ),
    pytest.mark.timeout(900),
]
NOTEBOOK = "00_data_tour.ipynb"
RUN_TIMEOUT_MS = 600_000


def _make_lab_contents_flag() -> str:
    """The contents-manager flag ``make lab`` passes (read from the Makefile, so they agree)."""
    for line in (REPO / "Makefile").read_text(encoding="utf-8").splitlines():
        if line.startswith("LAB_CONTENTS = "):
            return line.split("=", 1)[1].strip()
    raise AssertionError("the Makefile defines no LAB_CONTENTS for `make lab`")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a copy of the notebooks; yields its base URL and token."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    port, token = _free_port(), secrets.token_hex(16)
    # every cell in the page (JupyterLab 4 renders only the visible ones by default)
    settings = root / "lab_settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = {
        **os.environ,
        "CAGCL_MINI_HOME": str(root / "home"),
        "JUPYTER_CONFIG_DIR": str(root / "jupyter_config"),
        "JUPYTER_RUNTIME_DIR": str(root / "jupyter_runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(root / "lab_settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "lab_workspaces"),
    }
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root / 'notebooks'}",
        "--ServerApp.port_retries=0", "--LabApp.news_url=None", "--LabApp.check_for_updates_class="
        "jupyterlab.NeverCheckForUpdate", _make_lab_contents_flag(),
    ]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield base, token, root
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def _run_all_cells(page, tries: int = 3) -> None:
    """Run > Run All Cells, until the first code cell starts. On a loaded machine a click that
    lands while the kernel connection is still settling can be lost (the cells stay ``[ ]``)."""
    first_prompt = page.locator(".jp-CodeCell .jp-InputPrompt").first
    for attempt in range(tries):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        try:
            page.wait_for_function(
                "(el) => /\\[(\\*|\\d+)\\]/.test(el.textContent)",
                arg=first_prompt.element_handle(),
                timeout=90_000,
            )
            return
        except playwright_api.TimeoutError:
            if attempt == tries - 1:
                raise


def _viewer_src(page) -> str:
    img = page.locator(".jp-OutputArea-output .widget-vbox img").first
    img.wait_for(state="visible", timeout=60_000)
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 100", arg=img.element_handle())
    return img.get_attribute("src") or ""


def test_notebook_00_runs_and_its_slice_viewer_draws_and_follows_every_slider(lab):
    base, token, lab_dir = lab
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
        page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=120_000)
        page.wait_for_function(
            "() => document.querySelectorAll('.jp-Notebook .jp-Cell').length > 10", timeout=60_000
        )
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
            timeout=120_000
        )
        page.wait_for_timeout(3_000)  # the kernel's language_info reaches the model by now
        tab = page.locator(".lm-TabBar-tab.jp-mod-current")
        assert "jp-mod-dirty" not in (tab.get_attribute("class") or ""), (
            "opening the notebook marked it modified"
        )
        _run_all_cells(page)
        n = page.locator(".jp-Notebook .jp-CodeCell").count()
        if n <= 5:
            page.screenshot(path=str(lab_dir / "lab.png"))
        assert n > 5, f"{n} code cells in the page (screenshot in {lab_dir})"
        # every code cell gets an execution count, and none is left running
        page.wait_for_function(
            """(n) => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                return prompts.length === n && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            }""",
            arg=n,
            timeout=RUN_TIMEOUT_MS,
        )
        outputs = page.locator(".jp-OutputArea-output")
        texts = [outputs.nth(i).inner_text() for i in range(outputs.count())]
        errors = [t for t in texts if "Traceback" in t or "Error displaying widget" in t]
        assert not errors, errors[0][:2000]
        as_text = [t for t in texts if t.startswith(("VBox(", "interactive(", "HBox("))]
        assert not as_text, f"a widget was rendered as text: {as_text[0][:200]}"

        src = _viewer_src(page)
        assert src.startswith(("blob:", "data:image/png")), src[:40]
        sliders = page.locator(".jp-OutputArea-output .widget-vbox .widget-slider")
        assert sliders.count() == 4  # axial, coronal, sagittal, overlay
        for i in range(4):
            readout = sliders.nth(i).locator(".widget-readout")
            before = readout.inner_text()
            readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("0.9" if i == 3 else "3")
            page.keyboard.press("Enter")
            page.wait_for_function(
                """([sel, old]) => {
                    const img = document.querySelector(sel);
                    return img && img.src !== old && img.complete && img.naturalWidth > 100;
                }""",
                arg=[".jp-OutputArea-output .widget-vbox img", src],
                timeout=60_000,
            )
            assert readout.inner_text() != before
            src = _viewer_src(page)
        browser.close()
