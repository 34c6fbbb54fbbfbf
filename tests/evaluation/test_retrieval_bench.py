"""``cagcl-mini bench retrieval --json`` end to end as a process: three presets trained for two steps
on a tiny phantom set, their retrieval and report figures and the baselines in one JSON object."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers_train import FROZEN_MODEL, REPO, tiny_config, train_env

from cagcl_mini.phantom.build import make_dataset

CLI = REPO / ".venv" / "bin" / "cagcl-mini"
REPORT_KEYS = ("rouge_l", "bertscore_f1", "ce_precision", "ce_recall", "ce_f1")


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    if not CLI.is_file():
        pytest.skip(f"{CLI} is absent: install the package into .venv (make install)")
    return subprocess.run(
        [str(CLI), *args], env=train_env(), capture_output=True, text=True, timeout=timeout
    )


def _in_unit(value: float) -> bool:
    return 0.0 <= value <= 1.0


def _check_report_figures(row: dict, where: str) -> None:
    for key in REPORT_KEYS:
        lo, hi = row[f"{key}_ci95"]
        assert _in_unit(row[key]) and lo <= row[key] <= hi, (where, key, row[key], lo, hi)


@pytest.mark.slow
def test_bench_retrieval_prints_every_preset_and_the_baselines(tmp_path):
    root = make_dataset(
        tmp_path / "phantom", n_train=8, n_valid=12, size=32, seed=0, workers=1, progress=False
    )
    config = tiny_config(root, None, model=dict(FROZEN_MODEL)).save_yaml(tmp_path / "tiny.yaml")
    proc = _cli("bench", "retrieval", "--json", "--config", str(config), "--steps", "2",
                "--bootstrap", "50")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["steps"] == 2 and out["n_valid"] == 12 and out["n_train"] == 8
    for preset in ("fvlm", "ctglip", "cagcl"):
        row = out[preset]
        for direction in ("image_to_text", "text_to_image"):
            recall = [row[direction][f"recall_at_{k}"] for k in (1, 5, 10)]
            assert all(_in_unit(r) for r in recall) and recall == sorted(recall), (preset, recall)
            for k in (1, 5, 10):
                lo, hi = row[direction][f"recall_at_{k}_ci95"]
                assert lo <= row[direction][f"recall_at_{k}"] <= hi
        _check_report_figures(row, preset)
        assert row["bertscore_f1"] > 0.3  # real MiniLM scores, not NaN or 0
    base = out["baselines"]
    assert base["chance"] == {"recall_at_1": 1 / 12, "recall_at_5": 5 / 12, "recall_at_10": 10 / 12}
    for name in ("random_report", "most_common_normal"):
        _check_report_figures(base[name], name)
    assert base["most_common_normal"]["ce_recall"] == 0.0  # it asserts no finding


def test_bench_retrieval_names_a_config_that_does_not_exist(tmp_path):
    proc = _cli("bench", "retrieval", "--json", "--config", str(tmp_path / "nope.yaml"))
    assert proc.returncode != 0
    assert (
        "nope.yaml' is neither a preset" in proc.stderr
        and "nor an existing YAML file" in proc.stderr
    )
