"""Nothing lost, nothing silent: existing runs refused or set aside, SIGTERM / SIGINT checkpoints,
stale temporaries cleaned, inputs checked before work starts, clear errors on mismatches."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers_train import FROZEN_MODEL, make_tiny_data, tiny_config, train_env

from cagcl_mini.train import checkpoint as ckpt
from cagcl_mini.train import step as step_mod
from cagcl_mini.train.log import read_log
from cagcl_mini.train.loop import PREVIOUS_RUN, RunExistsError, fit
from cagcl_mini.train.setup import load_model

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / ".venv" / "bin" / "cagcl-mini"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_data(tmp_path_factory.mktemp("tiny_phantom"))


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), *args], env=train_env(), capture_output=True, text=True, timeout=timeout
    )


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- signals
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_the_current_step_and_resume_finishes(tiny_data, tmp_path, sig):
    """A real `cagcl-mini train` process gets the signal after its first logged step: it writes
    the checkpoint of the step it is at, prints the resume command, exits 128 + signal; without
    --resume the folder is refused, with it the run reaches its last step."""
    out = tmp_path / "run"
    steps = 40
    yaml_path = tiny_config(
        tiny_data, out, steps=steps, checkpoint_every=0, model=FROZEN_MODEL
    ).save_yaml(tmp_path / "tiny.yaml")
    proc = subprocess.Popen(
        [str(CLI), "train", "--config", str(yaml_path)],
        env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        log = out / "log.jsonl"
        while not (log.is_file() and log.read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no logged step within 300 s"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, stderr
    last = _lines(stderr)[-1]
    match = re.fullmatch(r"interrupted at step (\d+); checkpoint (\S+); resume with: (.+)", last)
    assert match, stderr
    step = int(match.group(1))
    assert 1 <= step < steps and Path(match.group(2)) == ckpt.step_path(out, step)
    assert match.group(3) == f"cagcl-mini train --config {yaml_path} --resume"
    state = ckpt.load_checkpoint(ckpt.step_path(out, step))
    assert state["step"] == step and "optimizer" in state
    assert not ckpt.final_path(out).exists()
    assert [r["step"] for r in read_log(out / "log.jsonl")][-1] == step

    refused = _cli("train", "--config", str(yaml_path))
    assert refused.returncode == 2
    assert _lines(refused.stderr) == [
        f"cagcl-mini train: error: {out} already holds a run (step {step} checkpoint); pass "
        "--resume to continue it or --overwrite to start again"
    ]
    assert ckpt.step_path(out, step).is_file()  # refusing deleted nothing

    resumed = _cli("train", "--config", str(yaml_path), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(_lines(resumed.stdout)[-1])
    assert summary["step"] == steps and Path(summary["checkpoint"]) == ckpt.final_path(out)
    assert [r["step"] for r in read_log(out / "log.jsonl")] == list(range(1, steps + 1))


# ----------------------------------------------------------------------------- existing runs
def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(
    tiny_data, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    config = tiny_config(tiny_data, out, steps=2, checkpoint_every=0, model=FROZEN_MODEL)
    first = fit(config)
    old_bytes = first.checkpoint.read_bytes()
    with pytest.raises(RunExistsError, match=r"already holds a run \(step 2 checkpoint\)"):
        fit(config, overwrite=False)
    assert first.checkpoint.read_bytes() == old_bytes

    def broken(*args, **kwargs):
        raise RuntimeError("the new run dies before its first checkpoint")

    monkeypatch.setattr(step_mod, "compute_losses", broken)
    with pytest.raises(RuntimeError, match="dies before"):
        fit(config.replace(seed=1))
    kept = out / PREVIOUS_RUN
    assert (kept / "final.pt").read_bytes() == old_bytes and (kept / "log.jsonl").is_file()
    monkeypatch.undo()
    second = fit(config.replace(seed=1))
    assert not kept.exists() and second.checkpoint.read_bytes() != old_bytes
    assert [r["step"] for r in read_log(second.log)] == [1, 2]


def test_stale_temporaries_of_a_killed_checkpoint_write_are_removed_at_start(tiny_data, tmp_path):
    """SIGKILL a process inside ``atomic_path`` (as during a checkpoint write): its hidden .tmp
    file stays; the next training start in that folder removes it."""
    out = tmp_path / "run"
    out.mkdir()
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, time
            from cagcl_mini.fileio import atomic_path
            with atomic_path(sys.argv[1]) as tmp:
                tmp.write_bytes(b"half a checkpoint")
                print(tmp, flush=True)
                time.sleep(300)
        """), str(ckpt.step_path(out, 2))],
        stdout=subprocess.PIPE, text=True, env=train_env(),
    )  # fmt: skip
    try:
        stale = Path(writer.stdout.readline().strip())
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert stale.is_file() and stale.name.startswith(".step_0000002.pt.")
    assert stale.name.endswith(".tmp")
    fit(tiny_config(tiny_data, out, steps=1, checkpoint_every=0, model=FROZEN_MODEL))
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "final.pt", "log.jsonl"]


# ----------------------------------------------------------------------------- checks first
def test_a_dataset_smaller_than_a_batch_fails_before_anything_is_written(tiny_data, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(tiny_data, out, batch_size=16, model=FROZEN_MODEL)
    with pytest.raises(ValueError) as err:
        fit(config)
    assert str(err.value).startswith(f"the train split of {tiny_data}")
    assert str(err.value).endswith("holds 8 volumes, fewer than one batch (batch_size 16)")
    assert not out.exists()  # no config.yaml, no empty log, no folder
    phantom = config.replace(data_root=None, n_train=3, batch_size=4)
    with pytest.raises(ValueError, match=r"3 volumes \(n_train\), fewer than one batch"):
        fit(phantom)


def test_a_checkpoint_whose_config_disagrees_with_its_weights_names_the_parameter(
    tiny_data, tmp_path
):
    result = fit(tiny_config(tiny_data, tmp_path / "run", steps=1, model=FROZEN_MODEL))
    state = torch.load(result.checkpoint, weights_only=True)
    state["config"]["model"]["embed_dim"] = 48  # edited by hand: the weights are 32-d
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    with pytest.raises(ValueError) as err:
        load_model(edited)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{edited}: its config does not match")
    assert re.search(r"has shape \(32, \d+\) in the file but \(48, \d+\) in the model", message)


# ----------------------------------------------------------------------------- scripts
def test_an_unguarded_script_stops_with_the_guard_advice_or_works(tmp_path):
    """A script calling ensure_trained at module level, on a tiny phantom built with worker
    processes (which import the script): it must not hang on the locks its parent holds."""
    script = tmp_path / "train_here.py"
    script.write_text(
        textwrap.dedent("""
        from cagcl_mini.train.loop import ensure_trained

        path = ensure_trained(
            "cpu-quick", n_train=4, n_valid=2, data_size=32, image_size=32, batch_size=4,
            steps=1, checkpoint_every=0, progress=False,
            model={"vision": "tiny", "embed_dim": 32, "text_train_layers": 0, "max_length": 32},
        )
        print("trained", path)
    """)
    )
    env = train_env() | {"CAGCL_MINI_HOME": str(tmp_path / "home")}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=420
    )
    assert time.monotonic() - start < 420
    if proc.returncode == 0:  # one core: the phantom is built without worker processes
        assert (os.cpu_count() or 1) == 1 and "trained" in proc.stdout
        return
    assert 'if __name__ == "__main__":' in proc.stderr, proc.stderr
    assert "waiting for" not in proc.stderr  # no worker ever waited on its parent's lock
    shutil.rmtree(tmp_path / "home", ignore_errors=True)
