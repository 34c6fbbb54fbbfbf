"""The ``cagcl-mini`` command: one parser tree, every subcommand documents its options."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from cagcl_mini.cli.main import COMMANDS, build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _leaves(parser: argparse.ArgumentParser, path=()):
    subs = _subparsers(parser)
    if not subs:
        yield path, parser
    for name, sub in subs.items():
        yield from _leaves(sub, (*path, name))


def test_every_command_is_in_the_tree():
    assert set(_subparsers(build_parser())) == set(COMMANDS)
    bench = _subparsers(_subparsers(build_parser())["bench"])
    assert set(bench) == {
        "data", "reports", "pooling", "train", "claims", "ablations", "probe",
        "retrieval", "localisation", "segmentation",
    }  # fmt: skip


def test_bench_ablations_parses_its_choices_and_refuses_others(capsys):
    args = build_parser().parse_args(
        ["bench", "ablations", "--which", "disease", "--weight", "0.5"]
    )
    assert args.which == ["disease"] and args.weight == 0.5 and args.seeds == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "ablations", "--which", "dictionarys"])
    assert "invalid choice: 'dictionarys'" in capsys.readouterr().err


def test_bench_claims_takes_other_sites_and_refuses_site_a(capsys):
    args = build_parser().parse_args(["bench", "claims", "--site", "B", "--site", "C"])
    assert args.site == ["B", "C"] and build_parser().parse_args(["bench", "claims"]).site is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "claims", "--site", "A"])
    err = capsys.readouterr().err
    assert "--site: invalid choice: 'A'" in err and "choose from" in err


@pytest.mark.parametrize("path", [p for p, _ in _leaves(build_parser())], ids=lambda p: " ".join(p))
def test_every_subcommand_help_lists_its_options(path, capsys):
    leaf = dict(_leaves(build_parser()))[path]
    options = [o for a in leaf._actions for o in a.option_strings if o.startswith("--")]
    assert "--help" in options and len(options) > 1, path
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*path, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in options:
        assert option in text, f"`cagcl-mini {' '.join(path)} --help` does not list {option}"


def test_python_dash_m_is_the_same_command():
    out = subprocess.run(
        [sys.executable, "-m", "cagcl_mini", "bench", "claims", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert out.startswith("usage: cagcl-mini bench claims") and "--seeds" in out


def test_a_mistyped_option_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--stpes", "3"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --stpes" in capsys.readouterr().err


# ----------------------------------------------------------------------------- user errors
CLI = REPO / ".venv" / "bin" / "cagcl-mini"


def _cli(*args: str, env_home=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed ``cagcl-mini`` as a user would (offline, one thread, a test home)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if env_home is not None:
        env["CAGCL_MINI_HOME"] = str(env_home)
    return subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "stepz=3"], ["unknown key 'stepz'", "batch_size", "warmup_steps"]),
        (["--set", "lr=-1"], ["lr: expected > 0, got -1"]),
        (["--set", "model.embed_dim=big"], ["model.embed_dim: expected an integer, got 'big'"]),
        (["--loss-preset", "foo"], ["unknown loss preset 'foo'", "fvlm, ctglip, cagcl"]),
        (["--set", "log_format=xml"], ["log_format: expected 'jsonl' or 'csv', got 'xml'"]),
    ],
    ids=["unknown-key", "negative-lr", "embed-dim-word", "loss-preset", "log-format"],
)
def test_a_bad_config_value_fails_at_print_config_in_one_line(tmp_path, args, expected):
    proc = _cli("train", *args, "--print-config", env_home=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    line = _one_line(proc.stderr)
    assert line.startswith("cagcl-mini train: error: ")
    for part in expected:
        assert part in line


def test_a_bad_yaml_field_names_the_file_and_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nmodel:\n  embed_dim: big\n")
    proc = _cli("train", "--config", str(bad), "--print-config", env_home=tmp_path)
    line = _one_line(proc.stderr)
    assert proc.returncode == 2
    assert f"{bad}: model.embed_dim: expected an integer, got 'big'" in line


def test_a_missing_data_folder_is_one_line_and_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "no-such-dataset"
    proc = _cli("train", "--data", str(missing), "--out", str(tmp_path / "run"), env_home=tmp_path)
    assert proc.returncode == 2
    assert _one_line(proc.stderr) == (
        f"cagcl-mini train: error: dataset root {missing} does not exist (data_root)"
    )
    assert not (tmp_path / "run").exists()  # nothing was started
    for debug in (["--debug", "train"], ["train", "--debug"]):  # before or after the command
        proc = _cli(*debug, "--data", str(missing), env_home=tmp_path)
        assert proc.returncode != 0 and "Traceback" in proc.stderr
        assert "FileNotFoundError: dataset root" in proc.stderr


def test_evaluate_and_import_dicom_errors_are_one_line(tmp_path):
    proc = _cli("evaluate", "--checkpoint", str(tmp_path / "none.pt"), env_home=tmp_path)
    assert proc.returncode == 2
    assert _one_line(proc.stderr) == (
        f"cagcl-mini evaluate: error: checkpoint {tmp_path / 'none.pt'} does not exist"
    )
    proc = _cli("import-dicom", str(tmp_path / "no-series"), "--out", str(tmp_path / "ds"))
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert line.startswith("cagcl-mini import-dicom: error: ") and "no-series" in line


def test_an_unwritable_out_fails_before_the_dataset_is_built(tmp_path):
    """A read-only run folder: one line naming it, and no phantom dataset built first."""
    out = _unwritable_folder(tmp_path) / "run"
    home = tmp_path / "home"
    proc = _cli("train", "--out", str(out), "--steps", "1", env_home=home)
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert line.startswith(f"cagcl-mini train: error: cannot write the run folder {out}: ")
    assert not (home / "data").exists() and not any(home.glob("**/*.nii.gz"))


def _unwritable_folder(tmp_path):
    """A folder this process cannot write into: a read-only mode, or (as root, whom modes do not
    stop) a folder of a read-only file system."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    for candidate in (Path("/sys"), Path("/proc/sys")):
        try:
            (candidate / "cagcl-mini-probe").mkdir()
        except OSError:
            return candidate
        (candidate / "cagcl-mini-probe").rmdir()
    pytest.skip("running as root with no read-only file system to write into")


def test_a_stale_make_data_lock_of_a_killed_process_blocks_nothing(tmp_path):
    """SIGKILL a process holding make-data's folder lock: its lock file stays (naming the dead
    pid) and a new `cagcl-mini make-data` starts at once, without waiting."""
    out = tmp_path / "ds"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from cagcl_mini.fileio import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(300)",
         str(out)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    lock = tmp_path / ".ds.lock"
    assert lock.read_text() == str(holder.pid)  # the marker outlived its process
    proc = _cli(
        "make-data", "--out", str(out), "--n-train", "1", "--n-valid", "1", "--size", "32",
        "--workers", "1", env_home=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "waiting for" not in proc.stderr and f"dataset ready at {out}" in proc.stdout


def test_make_data_site_b_writes_the_dataset_the_transfer_evaluation_reads(tmp_path, monkeypatch):
    """`make-data --site B` (as notebook 06 tells a reader) writes the second hospital with the
    few training volumes `dataset_for(site="B")` expects, so the notebook reads it as written
    instead of rebuilding it; `--n-train` still overrides."""
    from cagcl_mini.layout import SPLITS
    from cagcl_mini.paths import site_data_dir
    from cagcl_mini.phantom.sites import TRANSFER_TRAIN
    from cagcl_mini.train.config import resolve_config
    from cagcl_mini.train.setup import dataset_for

    proc = _cli(
        "make-data", "--site", "B", "--n-valid", "3", "--size", "32", "--workers", "1",
        env_home=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("CAGCL_MINI_HOME", str(tmp_path))
    root = site_data_dir("B", "nvalid3-size32")  # its own folder: not the tutorial's spec
    assert f"dataset ready at {root}" in proc.stdout
    written = {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")}
    cts = {split: len(list((root / "dataset" / split).rglob("*.nii.gz"))) for split in SPLITS}
    assert cts == {"train": TRANSFER_TRAIN, "valid": 3}
    config = resolve_config("cpu-quick").replace(n_valid=3, data_size=32, image_size=32)
    assert len(dataset_for(config, "valid", site="B")) == 3
    assert len(dataset_for(config, "train", site="B")) == TRANSFER_TRAIN
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")} == written, "rebuilt"

    out = tmp_path / "b2"
    proc = _cli(
        "make-data", "--site", "B", "--n-train", "2", "--n-valid", "1", "--size", "32",
        "--workers", "1", "--out", str(out), env_home=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(list((out / "dataset" / "train").rglob("*.nii.gz"))) == 2


def test_evaluate_without_a_train_split_points_at_no_honest(tmp_path):
    import shutil

    from cagcl_mini.phantom.build import make_dataset

    root = make_dataset(tmp_path / "ds", n_train=2, n_valid=3, size=32, workers=1, progress=False)
    shutil.rmtree(root / "dataset" / "train")  # a valid-only download, as `--split valid` gives
    args = (
        "evaluate",
        "--untrained",
        "--data",
        str(root),
        "--image-size",
        "32",
        "--families",
        "fvlm",
    )
    proc = _cli(*args, env_home=tmp_path)
    assert proc.returncode == 2
    assert _one_line(proc.stderr) == (
        f"cagcl-mini evaluate: error: no train split in {root}: "
        "pass --no-honest to calibrate on the evaluated split"
    )


def test_hu_check_is_a_config_field_the_datasets_follow(tmp_path):
    from cagcl_mini.train.config import resolve_config
    from cagcl_mini.train.setup import dataset_for

    config = resolve_config("cpu-quick").replace(n_train=2, n_valid=2, data_size=32)
    assert config.hu_check and dataset_for(config, "valid").hu_check
    off = config.with_overrides(["hu_check=false"])
    assert not off.hu_check and not dataset_for(off, "valid").hu_check
    assert off.fingerprint() == config.fingerprint()  # a check, not a different computation
