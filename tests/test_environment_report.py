"""The setup cell's environment report: one block with the kit and MONAI's configuration."""

from __future__ import annotations

import sys

from cagcl_mini.tutorial.environment import environment_report, print_environment


def test_report_has_the_kit_folders_and_monai_config(monkeypatch, tmp_path):
    monkeypatch.setenv("CAGCL_MINI_HOME", str(tmp_path / "home"))
    text = environment_report()
    lines = text.splitlines()
    assert lines[0].startswith("cagcl-mini version: ")
    assert lines[1] == f"cache root ($CAGCL_MINI_HOME): {tmp_path / 'home'}"
    assert lines[2].startswith("real data folder: ")
    assert "MONAI version:" in text and "Pytorch version:" in text


def test_print_environment_writes_once(monkeypatch):
    writes = []

    class Recorder:
        def write(self, s):
            if s:
                writes.append(s)
            return len(s)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Recorder())
    print_environment()
    assert len(writes) == 1 and "MONAI version:" in writes[0]
