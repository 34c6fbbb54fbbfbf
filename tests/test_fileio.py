"""cagcl_mini.fileio: atomic writes (nothing half-written, nothing left behind), strict JSON."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

from cagcl_mini import fileio


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    fileio.atomic_write_text(target, "one")
    fileio.atomic_write_text(target, "two")
    assert target.read_text() == "two" and _listing(target.parent) == ["a.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.bin"
    fileio.atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="disk full"), fileio.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and _listing(tmp_path) == ["a.bin"]


def test_temporary_names_keep_a_suffix_for_extension_sniffing_writers(tmp_path):
    with fileio.atomic_path(tmp_path / "ct.nii.gz", suffix=".tmp.nii.gz") as tmp:
        assert tmp.name.startswith(".ct.nii.gz.") and tmp.name.endswith(".tmp.nii.gz")
        tmp.write_bytes(b"x")
    assert _listing(tmp_path) == ["ct.nii.gz"]


def test_strict_json(tmp_path):
    data = {
        "nan": math.nan, "inf": -math.inf, "np": np.float32(0.5), "t": torch.tensor(2.0),
        "arr": np.array([1, 2]), "nested": [{"x": math.nan}], 3: "key",
    }  # fmt: skip
    assert fileio.jsonable(data) == {
        "nan": None, "inf": None, "np": 0.5, "t": 2.0, "arr": [1, 2], "nested": [{"x": None}],
        "3": "key",
    }  # fmt: skip
    path = fileio.write_json(tmp_path / "r.json", data)
    assert json.loads(path.read_text())["nested"] == [{"x": None}]


def test_hashes_agree(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert fileio.file_sha256(tmp_path / "f") == fileio.sha256(b"abc")


def test_a_held_lock_is_reported_and_times_out(tmp_path):
    target = tmp_path / "ds"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from cagcl_mini.fileio import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)",
         str(target)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        said = []
        with pytest.raises(
            fileio.LockTimeout, match=rf"held by another process \(pid {holder.pid}\)"
        ):
            with fileio.folder_lock(target, timeout=1.0, notify=said.append, notify_after=0.2):
                pass
        assert said and str(holder.pid) in said[0] and ".ds.lock" in said[0]
    finally:
        holder.kill()
        holder.wait()
    with fileio.folder_lock(target, timeout=5.0):  # the kernel released the dead holder's lock
        assert (tmp_path / ".ds.lock").read_text() == str(os.getpid())
