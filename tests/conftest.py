"""Shared fixtures: the real data in ../shared/data, and a small embedded dataset built once."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is absent (only the project's machines have ../shared/data)")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep every test's caches out of the user's home folder."""
    home = tmp_path_factory.getbasetemp() / "cagcl_home"
    monkeypatch.setenv("CAGCL_MINI_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # text prefix states stay in memory: a test's cache misses are its own (test_text_prefix_disk
    # turns the on-disk copy on)
    monkeypatch.setenv("CAGCL_MINI_PREFIX_DISK", "0")
