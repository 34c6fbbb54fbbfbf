"""data_download against real loopback HTTP servers serving real bytes.

The TotalSegmentator example files of ../shared/data are served by a ``ThreadingHTTPServer`` on
127.0.0.1; CT-RATE runs as a real ``python -m data_download`` process against a loopback server
that answers like the Hugging Face hub (``HF_ENDPOINT``); RAD-ChestCT against a loopback Zenodo
records API. Servers cut connections, refuse (401/403), lose files (404) and serve wrong bytes
on purpose. Unwritable destinations are simulated with a path under a regular file, because the
tests may run as root (for whom permission bits do not stop a write).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, shared_path
from helpers_data_download import FakeHub, FakeServer, FakeZenodo, non_loopback_address

from cagcl_mini import layout
from cagcl_mini.anatomy import ANATOMY_ID, CT_RATE_LABELS
from cagcl_mini.data.dataset import CTReportDataset
from data_download import (
    AccessDeniedError,
    ChecksumError,
    DestinationError,
    DownloadError,
    InsecureTransportError,
    MissingDependencyError,
    RemoteNotFoundError,
    download_ct_rate,
    download_rad_chestct,
    download_totalseg_example,
    make_totalseg_masks,
    rad_chestct,
    totalseg_example,
)
from data_download.__main__ import main as cli_main
from data_download.http import (
    RemoteFile,
    check_token_transport,
    download,
    ensure_writable,
    is_loopback,
    redact_url,
)
from data_download.tables import upsert_rows

SECRET = "hf_SECRETtoken1234567890abcdef"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Loopback requests must never go through a proxy the environment may define."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def example_bytes() -> dict[str, bytes]:
    folder = shared_path("totalseg_example")
    return {name: (folder / name).read_bytes() for name in totalseg_example.SHA256}


@pytest.fixture
def example_server(example_bytes):
    with FakeServer() as server:
        for name, data in example_bytes.items():
            server.files[f"/mirror/{name}"] = data
        yield server


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _nifti_bytes(data: np.ndarray, zooms=(1.5, 1.5, 2.0)) -> bytes:
    """A real .nii.gz file's bytes."""
    img = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    return gzip.compress(img.to_bytes(), mtime=0)


# ---------------------------------------------------------------- totalseg-example (in process)


def test_totalseg_example_success_writes_the_layout_with_verified_files(tmp_path, example_server):
    report = download_totalseg_example(
        tmp_path / "d", mirror=example_server.url + "/mirror/", progress=False
    )
    root = tmp_path / "d"
    ct = layout.ct_path(root, "valid_1_a_1.nii.gz")
    seg = layout.mask_path(root, "valid_1_a_1.nii.gz")
    assert ct == root / "dataset/valid/valid_1/valid_1_a/valid_1_a_1.nii.gz"
    assert seg == root / "dataset/ts_seg/ts_total/valid/valid_1/valid_1_a/valid_1_a_1.nii.gz"
    assert _sha256(ct) == totalseg_example.SHA256["example_ct_sm.nii.gz"]
    assert _sha256(seg) == totalseg_example.SHA256["example_seg.nii.gz"]
    assert sorted(report.fetched) == sorted(totalseg_example.SHA256)
    assert not list(root.rglob("*.part"))

    img, labels = nib.load(ct), np.asarray(nib.load(seg).dataobj)
    assert img.shape == (122, 101, 30) and labels.shape == img.shape
    ids = set(np.unique(labels).tolist())
    assert {5, 1, 2, 3} <= ids  # liver, spleen, both kidneys

    meta = pd.read_csv(layout.csv_path(root, "metadata", "valid"))
    assert meta.loc[0, "VolumeName"] == "valid_1_a_1.nii.gz"
    zx, zy, zz = img.header.get_zooms()
    assert meta.loc[0, "XYSpacing"] == f"[{float(zx)}, {float(zy)}]" and meta.loc[
        0, "ZSpacing"
    ] == pytest.approx(zz)
    assert (meta.loc[0, "RescaleSlope"], meta.loc[0, "RescaleIntercept"]) == (1.0, 0.0)
    labels_csv = pd.read_csv(layout.csv_path(root, "labels", "valid"))
    assert list(labels_csv.columns) == ["VolumeName", *CT_RATE_LABELS]
    assert labels_csv[list(CT_RATE_LABELS)].to_numpy().sum() == 0
    reports = pd.read_csv(layout.csv_path(root, "reports", "valid"))
    assert "no radiology report" in reports.loc[0, "Findings_EN"]

    # a second run finds everything verified in place and fetches nothing
    before = len(example_server.seen("GET"))
    again = download_totalseg_example(root, mirror=example_server.url + "/mirror/", progress=False)
    assert sorted(again.present) == sorted(totalseg_example.SHA256) and not again.fetched
    assert len(example_server.seen("GET")) == before


def test_totalseg_example_loads_in_the_dataset(tmp_path, example_server):
    download_totalseg_example(tmp_path, mirror=example_server.url + "/mirror", progress=False)
    ds = CTReportDataset(tmp_path, split="valid", size=32)
    assert len(ds) == 1 and ds.ids == ["valid_1_a_1"]
    item = ds[0]
    present = item["present"]
    for organ in ("liver", "spleen", "kidney"):
        assert bool(present[ANATOMY_ID[organ] - 1]), f"{organ} missing from the loaded example"
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0


def test_resume_after_a_cut_connection_sends_a_range_request(
    tmp_path, example_server, example_bytes
):
    name = "example_ct_sm.nii.gz"
    example_server.cut_once.add(f"/mirror/{name}")
    item = RemoteFile(
        url=f"{example_server.url}/mirror/{name}",
        dest=tmp_path / name,
        name=name,
        sha256=totalseg_example.SHA256[name],
    )
    assert download(item, progress=False, backoff=0) == "fetched"
    gets = example_server.seen("GET", f"/mirror/{name}")
    assert len(gets) == 2 and "Range" not in gets[0][2]
    half = len(example_bytes[name]) // 2
    assert gets[1][2]["Range"] == f"bytes={half}-"
    assert (tmp_path / name).read_bytes() == example_bytes[name]
    assert not (tmp_path / f"{name}.part").exists()


def test_a_partial_file_from_an_earlier_run_is_resumed(tmp_path, example_server, example_bytes):
    name = "example_seg.nii.gz"
    data = example_bytes[name]
    (tmp_path / f"{name}.part").write_bytes(data[:1000])
    item = RemoteFile(f"{example_server.url}/mirror/{name}", tmp_path / name, name, size=len(data))
    download(item, progress=False, backoff=0)
    (get,) = example_server.seen("GET")
    assert get[2]["Range"] == "bytes=1000-"
    assert (tmp_path / name).read_bytes() == data


def test_giving_up_keeps_the_partial_file_for_the_next_run(tmp_path, example_server, example_bytes):
    name = "example_ct_sm.nii.gz"
    path = f"/mirror/{name}"
    example_server.cut_once.add(path)
    item = RemoteFile(
        f"{example_server.url}{path}", tmp_path / name, name, sha256=totalseg_example.SHA256[name]
    )
    with pytest.raises(DownloadError, match="run the command again to resume") as info:
        download(item, progress=False, retries=0)
    assert name in str(info.value)
    assert (tmp_path / f"{name}.part").stat().st_size == len(example_bytes[name]) // 2
    assert download(item, progress=False) == "fetched"  # the next run resumes and verifies
    assert (tmp_path / name).read_bytes() == example_bytes[name]


def test_checksum_mismatch_names_the_file_and_both_hashes_and_leaves_nothing(
    tmp_path, example_server, example_bytes
):
    # the server hands out the label map under the CT's name: real bytes, wrong file
    example_server.files["/mirror/example_ct_sm.nii.gz"] = example_bytes["example_seg.nii.gz"]
    with pytest.raises(ChecksumError) as info:
        download_totalseg_example(tmp_path, mirror=example_server.url + "/mirror/", progress=False)
    message = str(info.value)
    assert "example_ct_sm.nii.gz" in message
    assert totalseg_example.SHA256["example_ct_sm.nii.gz"] in message
    assert hashlib.sha256(example_bytes["example_seg.nii.gz"]).hexdigest() in message
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no file, no .part


def test_404_is_skipped_and_reported_while_other_files_are_fetched(tmp_path, example_server):
    del example_server.files["/mirror/example_seg.nii.gz"]
    report = download_totalseg_example(
        tmp_path, mirror=example_server.url + "/mirror/", progress=False
    )
    assert report.fetched == ["example_ct_sm.nii.gz"]
    assert [name for name, _ in report.skipped] == ["example_seg.nii.gz"]
    summary = report.format()
    assert "skipped 1" in summary and "example_seg.nii.gz" in summary and "404" in summary
    assert layout.ct_path(tmp_path, "valid_1_a_1.nii.gz").is_file()
    assert not layout.mask_path(tmp_path, "valid_1_a_1.nii.gz").exists()


def test_missing_ct_is_an_error_not_a_skip(tmp_path, example_server):
    del example_server.files["/mirror/example_ct_sm.nii.gz"]
    with pytest.raises(RemoteNotFoundError, match="example_ct_sm.nii.gz"):
        download_totalseg_example(tmp_path, mirror=example_server.url + "/mirror/", progress=False)


@pytest.mark.parametrize("status", [401, 403])
def test_access_denied_on_the_mirror(tmp_path, example_server, status):
    example_server.status["/mirror/example_ct_sm.nii.gz"] = (status, {})
    with pytest.raises(AccessDeniedError, match=f"access denied \\({status}\\).*--mirror"):
        download_totalseg_example(tmp_path, mirror=example_server.url + "/mirror/", progress=False)
    assert not list(tmp_path.rglob("*.nii.gz*"))


def test_unwritable_destination_is_refused_up_front(tmp_path, example_server, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file where a folder should be")
    dest = blocker / "sub"
    with pytest.raises(DestinationError, match=f"cannot write to {dest}: {blocker} is a file"):
        download_totalseg_example(dest, mirror=example_server.url + "/mirror/", progress=False)
    code = cli_main(
        ["totalseg-example", "--dest", str(dest), "--mirror", example_server.url + "/mirror/"]
    )
    assert code == 1 and f"{blocker} is a file" in capsys.readouterr().err
    assert example_server.requests == []  # refused before any request


def test_ensure_writable_creates_missing_folders_and_leaves_no_probe_file(tmp_path):
    target = ensure_writable(tmp_path / "a" / "b")
    assert target.is_dir() and list(target.iterdir()) == []


def test_dry_run_lists_sizes_and_fetches_nothing(tmp_path, example_server, example_bytes, capsys):
    code = cli_main(
        [
            "totalseg-example",
            "--dest",
            str(tmp_path / "d"),
            "--mirror",
            example_server.url + "/mirror/",
            "--dry-run",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "would fetch 2 files" in out
    assert example_server.seen("GET") == [] and len(example_server.seen("HEAD")) == 2
    assert not (tmp_path / "d").exists()
    report = download_totalseg_example(
        tmp_path / "d", mirror=example_server.url + "/mirror/", dry_run=True
    )
    assert dict(report.planned) == {name: len(data) for name, data in example_bytes.items()}


def test_cli_fetches_the_example(tmp_path, example_server, capsys):
    code = cli_main(
        [
            "totalseg-example",
            "--dest",
            str(tmp_path),
            "--mirror",
            example_server.url + "/mirror/",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "fetched 2" in capsys.readouterr().out
    assert layout.mask_path(tmp_path, "valid_1_a_1.nii.gz").is_file()


def test_a_local_folder_works_as_a_mirror(tmp_path):
    """``--mirror file:///...`` installs verified copies offline (e.g. for notebook 00)."""
    folder = shared_path("totalseg_example")
    report = download_totalseg_example(tmp_path, mirror=folder.as_uri() + "/", progress=False)
    assert sorted(report.fetched) == sorted(totalseg_example.SHA256)
    assert (
        _sha256(layout.ct_path(tmp_path, "valid_1_a_1.nii.gz"))
        == totalseg_example.SHA256["example_ct_sm.nii.gz"]
    )
    with pytest.raises(RemoteNotFoundError, match="example_ct_sm.nii.gz"):
        download_totalseg_example(
            tmp_path / "x", mirror=(tmp_path / "empty").as_uri() + "/", progress=False
        )


# ---------------------------------------------------------------- credentials


def test_authorization_stays_with_its_origin_across_redirects(tmp_path):
    payload = b"x" * 5000
    with FakeServer() as hub, FakeServer() as cdn:
        cdn.files["/blob"] = payload
        hub.files["/same"] = payload
        hub.redirects["/file"] = f"{cdn.url}/blob"
        hub.redirects["/local"] = "/same"
        headers = {"Authorization": f"Bearer {SECRET}"}
        download(
            RemoteFile(f"{hub.url}/file", tmp_path / "a", "a", size=5000, headers=headers),
            progress=False,
        )
        download(
            RemoteFile(f"{hub.url}/local", tmp_path / "b", "b", size=5000, headers=headers),
            progress=False,
        )
        assert (tmp_path / "a").read_bytes() == payload == (tmp_path / "b").read_bytes()
        assert all("Authorization" not in h for _, _, h in cdn.requests)  # never leaked to the CDN
        same = hub.seen("GET", "/same")
        assert same and same[0][2]["Authorization"] == f"Bearer {SECRET}"


def test_token_never_appears_in_logs_or_errors(tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with FakeServer() as server:
        server.files["/f"] = b"y" * 3000
        server.cut_once.add("/f")
        server.status["/denied"] = (401, {})
        headers = {"Authorization": f"Bearer {SECRET}"}
        item = RemoteFile(
            f"{server.url}/f?token={SECRET}", tmp_path / "f", "f", size=3000, headers=headers
        )
        download(item, progress=True, backoff=0)  # one warning about the cut connection
        with pytest.raises(AccessDeniedError) as info:
            download(
                RemoteFile(
                    f"{server.url}/denied?token={SECRET}", tmp_path / "g", "g", headers=headers
                )
            )
    captured = capsys.readouterr()
    assert "resuming" in caplog.text
    for text in (caplog.text, captured.out, captured.err, str(info.value), repr(item)):
        assert SECRET not in text
    assert redact_url(f"http://u:p@h:1/x?token={SECRET}") == "http://h:1/x?…"


# ---------------------------------------------------------------- ct-rate (a real process vs a fake hub)

REPO_ID = "ibrahimhamamci/CT-RATE"


def _ct_rate_fixture() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    names = ["valid_1_a_1", "valid_1_a_2", "valid_2_a_1", "valid_10_a_1"]
    files: dict[str, bytes] = {}
    folders = {"valid_1": "valid_fixed", "valid_2": "valid", "valid_10": "valid_fixed"}
    for stem in names:
        patient = "_".join(stem.split("_")[:2])
        rel = f"{folders[patient]}/{patient}/{patient}_a/{stem}.nii.gz"
        ct = rng.integers(-1024, 1500, size=(12, 10, 6)).astype(np.int16)
        seg = rng.integers(0, 6, size=(12, 10, 6)).astype(np.uint8)
        if stem != "valid_1_a_2":  # listed in the CSVs, missing on the hub
            files[f"dataset/{rel}"] = _nifti_bytes(ct)
        files[f"dataset/ts_seg/ts_total/{rel}"] = _nifti_bytes(seg)
    rows = [f"{n}.nii.gz" for n in ["valid_10_a_1", "valid_2_a_1", "valid_1_a_2", "valid_1_a_1"]]
    reports = pd.DataFrame(
        {
            "VolumeName": rows,
            "Findings_EN": [f"Findings of {r}." for r in rows],
            "Impressions_EN": "x",
        }
    )
    labels = pd.DataFrame({"VolumeName": rows, **{c: [1, 0, 1, 0] for c in CT_RATE_LABELS}})
    meta = pd.DataFrame(
        {
            "VolumeName": rows,
            "XYSpacing": "[0.75, 0.75]",
            "ZSpacing": 1.5,
            "RescaleSlope": 1,
            "RescaleIntercept": -1024,
            "Manufacturer": "X",
        }
    )
    for kind, frame in (("reports", reports), ("labels", labels), ("metadata", meta)):
        files[f"dataset/{layout.csv_relpath(kind, 'valid')}"] = frame.to_csv(index=False).encode()
    return files


def _run_cli(args: list[str], env_extra: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")
    }
    env.update(
        {
            "HF_HOME": str(home / "hf"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "data_download", *args, "--no-progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def hub():
    files = _ct_rate_fixture()
    with FakeServer() as server:
        yield FakeHub(server, REPO_ID, SECRET, files)


def test_ct_rate_fetches_csvs_volumes_and_masks_and_skips_what_the_hub_lacks(tmp_path, hub):
    hub.resolve_status["dataset/ts_seg/ts_total/valid/valid_2/valid_2_a/valid_2_a_1.nii.gz"] = 404
    env = {"HF_ENDPOINT": hub.server.url, "HF_TOKEN": SECRET}
    dest = tmp_path / "ctrate"
    proc = _run_cli(
        ["ct-rate", "--dest", str(dest), "--limit", "3", "--include-masks"], env, tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    for text in (proc.stdout, proc.stderr):
        assert SECRET not in text
    # natural order: valid_1_a_1, valid_1_a_2 (not on the hub), valid_2_a_1; never valid_10
    # each volume keeps the hub's folder: `valid_fixed` (already HU) or `valid` (raw + CSV rescale)
    for stem, folder in (("valid_1_a_1", "valid_fixed"), ("valid_2_a_1", "valid")):
        patient = "_".join(stem.split("_")[:2])
        rel = f"{folder}/{patient}/{patient}_a/{stem}.nii.gz"
        local = layout.ct_path(dest, stem + ".nii.gz", folder)
        assert local.read_bytes() == hub.files[f"dataset/{rel}"]
    assert not layout.ct_path(dest, "valid_1_a_1.nii.gz", "valid").exists()
    assert (
        layout.mask_path(dest, "valid_1_a_1.nii.gz", "valid_fixed").read_bytes()
        == hub.files["dataset/ts_seg/ts_total/valid_fixed/valid_1/valid_1_a/valid_1_a_1.nii.gz"]
    )
    assert not layout.mask_path(dest, "valid_2_a_1.nii.gz").exists()
    assert not any(
        layout.ct_path(dest, "valid_10_a_1.nii.gz", f).exists() for f in ("valid", "valid_fixed")
    )
    assert "valid_1_a_2.nii.gz (volume): not on the hub" in proc.stdout
    assert "valid_2_a_1.nii.gz: the hub has no such file (404)" in proc.stdout
    # layout CSVs hold the rows (as published) of the volumes on disk only
    for kind in ("reports", "labels", "metadata"):
        table = pd.read_csv(layout.csv_path(dest, kind, "valid"))
        assert table["VolumeName"].tolist() == ["valid_1_a_1.nii.gz", "valid_2_a_1.nii.gz"]
    meta = pd.read_csv(layout.csv_path(dest, "metadata", "valid"))
    assert meta["RescaleIntercept"].tolist() == [-1024, -1024] and "Manufacturer" in meta.columns
    resolves = hub.server.seen("GET", f"/datasets/{REPO_ID}/resolve/")
    assert resolves and all(h.get("Authorization") == f"Bearer {SECRET}" for _, _, h in resolves)


def test_ct_rate_dry_run_lists_sizes_from_the_tree_and_fetches_nothing(tmp_path, hub):
    env = {"HF_ENDPOINT": hub.server.url, "HF_TOKEN": SECRET}
    proc = _run_cli(
        ["ct-rate", "--dest", str(tmp_path / "d"), "--limit", "2", "--dry-run"], env, tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert hub.server.seen("GET", f"/datasets/{REPO_ID}/resolve/") == []
    ct = "dataset/valid_fixed/valid_1/valid_1_a/valid_1_a_1.nii.gz"
    assert f"{ct}  " in proc.stdout and "would fetch 5 files" in proc.stdout  # 3 CSVs + 2 volumes
    assert "valid_10" not in proc.stdout
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("case", ["no_token", "terms_not_accepted"])
def test_ct_rate_cli_access_problems_give_the_gated_dataset_message(tmp_path, hub, case):
    env = {"HF_ENDPOINT": hub.server.url}
    if case == "terms_not_accepted":
        env["HF_TOKEN"] = SECRET
        hub.mode = "not_accepted"
    proc = _run_cli(["ct-rate", "--dest", str(tmp_path / "d"), "--limit", "1"], env, tmp_path)
    assert proc.returncode == 1
    assert "accept its terms" in proc.stderr and "HF_TOKEN" in proc.stderr
    if case == "no_token":
        assert "no Hugging Face token found" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert not list((tmp_path / "d").rglob("*.nii.gz"))


@pytest.fixture
def hub_online(monkeypatch):
    """In-process hub calls: conftest switches huggingface_hub offline; this test talks to loopback."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.mark.parametrize("case", ["wrong_token", "file_refused_401", "file_refused_403"])
def test_ct_rate_refusals_give_the_gated_dataset_message(tmp_path, hub, hub_online, case, caplog):
    caplog.set_level(logging.DEBUG)
    if case == "wrong_token":
        hub.token = "hf_another_token"
    else:
        path = "dataset/valid_fixed/valid_1/valid_1_a/valid_1_a_1.nii.gz"
        hub.resolve_status[path] = int(case[-3:])
    with pytest.raises(AccessDeniedError) as info:
        download_ct_rate(tmp_path, limit=1, endpoint=hub.server.url, token=SECRET, progress=False)
    message = str(info.value)
    assert "accept its terms" in message and "HF_TOKEN" in message
    if case != "wrong_token":
        assert f"access denied ({case[-3:]})" in message and "valid_1_a_1.nii.gz" in message
    assert SECRET not in message + caplog.text
    assert not list(tmp_path.rglob("*.nii.gz"))


# ---------------------------------------------------------------- rad-chestct (fake Zenodo)


def _npz(volume: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, ct=volume)
    return buf.getvalue()


@pytest.fixture
def zenodo():
    rng = np.random.default_rng(1)
    volumes = {
        f"val0000{i}": rng.integers(-1000, 1000, size=(7, 9, 11)).astype(np.int16)
        for i in (1, 2, 3)
    }
    labels = pd.DataFrame(
        {
            "NoteAcc_DEID": ["val00001", "val00002", "val00003"],
            "nodule*left_lower": [1, 0, 0],
            "nodule*liver": [0, 1, 0],  # a liver nodule is not a lung nodule
            "pleural_effusion*right_lung": [0, 1, 1],
            "air_trapping*lung": [0, 0, 1],
            "pacemaker_or_defib*heart": [1, 0, 0],
            "mass*lung": [1, 1, 1],  # no CT-RATE column: dropped
        }
    )
    files = {f"{k}.npz": _npz(v) for k, v in volumes.items()}
    files["trn00001.npz"] = _npz(volumes["val00001"])
    files[rad_chestct.LABEL_FILE["valid"]] = labels.to_csv(index=False).encode()
    with FakeServer() as server:
        fake = FakeZenodo(server, "777", files, token=SECRET)
        fake.volumes = volumes
        yield fake


def test_rad_chestct_converts_npz_to_nifti_with_spacing_and_mapped_labels(
    tmp_path, zenodo, monkeypatch
):
    monkeypatch.setenv("ZENODO_TOKEN", SECRET)
    report = download_rad_chestct(
        tmp_path, limit=2, record="777", mirror=zenodo.server.url, progress=False
    )
    assert sorted(report.fetched) == [
        rad_chestct.LABEL_FILE["valid"],
        "val00001.npz",
        "val00002.npz",
    ]
    for i, stem in ((1, "val00001"), (2, "val00002")):
        img = nib.load(layout.ct_path(tmp_path, f"valid_{i}_a_1.nii.gz"))
        assert img.header.get_zooms() == pytest.approx((0.8, 0.8, 0.8))
        assert img.get_data_dtype() == np.int16
        np.testing.assert_array_equal(
            np.asarray(img.dataobj), zenodo.volumes[stem].transpose(2, 1, 0)
        )
        assert nib.aff2axcodes(img.affine) == ("L", "P", "I")
    assert not layout.ct_path(tmp_path, "valid_3_a_1.nii.gz").exists()
    assert not list((tmp_path / ".download").rglob("*.npz"))  # converted then removed
    labels = pd.read_csv(layout.csv_path(tmp_path, "labels", "valid")).set_index("VolumeName")
    assert list(labels.columns) == list(CT_RATE_LABELS)
    row1, row2 = labels.loc["valid_1_a_1.nii.gz"], labels.loc["valid_2_a_1.nii.gz"]
    assert (row1["Lung nodule"], row1["Medical material"], row1["Pleural effusion"]) == (1, 1, 0)
    assert (row2["Lung nodule"], row2["Pleural effusion"], row2["Mosaic attenuation pattern"]) == (
        0,
        1,
        0,
    )
    assert labels.to_numpy().sum() == 3
    reports = pd.read_csv(layout.csv_path(tmp_path, "reports", "valid")).set_index("VolumeName")
    assert reports.loc["valid_2_a_1.nii.gz", "Findings_EN"] == "Pleural effusion is present."
    meta = pd.read_csv(layout.csv_path(tmp_path, "metadata", "valid"))
    assert meta["XYSpacing"].tolist() == ["[0.8, 0.8]"] * 2 and meta[
        "RescaleIntercept"
    ].tolist() == [0, 0]
    ids = pd.read_csv(tmp_path / "rad_chestct_ids.csv")
    assert ids["NoteAcc_DEID"].tolist() == ["val00001", "val00002"]

    # a larger limit adds the third volume, keeping the numbering and the earlier rows
    more = download_rad_chestct(
        tmp_path, limit=3, record="777", mirror=zenodo.server.url, progress=False
    )
    assert more.fetched == ["val00003.npz"]
    labels = pd.read_csv(layout.csv_path(tmp_path, "labels", "valid")).set_index("VolumeName")
    assert labels.loc["valid_3_a_1.nii.gz", "Mosaic attenuation pattern"] == 1
    assert len(labels) == 3


def test_rad_chestct_md5_mismatch_and_access_errors(tmp_path, zenodo, monkeypatch):
    zenodo.bad_md5.add("val00001.npz")
    with pytest.raises(ChecksumError, match="val00001.npz: md5 mismatch"):
        download_rad_chestct(
            tmp_path, limit=1, record="777", mirror=zenodo.server.url, token=SECRET, progress=False
        )
    assert not list(tmp_path.rglob("*.npz*")) and not list(tmp_path.rglob("*.nii.gz"))
    monkeypatch.delenv("ZENODO_TOKEN", raising=False)
    with pytest.raises(AccessDeniedError) as info:
        download_rad_chestct(
            tmp_path, limit=1, record="777", mirror=zenodo.server.url, progress=False
        )
    assert "ZENODO_TOKEN" in str(info.value) and "request" in str(info.value)


def test_rad_chestct_dry_run_lists_npz_sizes(tmp_path, zenodo):
    report = download_rad_chestct(
        tmp_path, limit=2, record="777", mirror=zenodo.server.url, token=SECRET, dry_run=True
    )
    assert [name for name, _ in report.planned] == [
        rad_chestct.LABEL_FILE["valid"],
        "val00001.npz",
        "val00002.npz",
    ]
    assert dict(report.planned)["val00002.npz"] == len(zenodo.files["val00002.npz"])
    assert zenodo.server.seen("GET", "/api/records/777/files/") == []


def test_label_map_covers_every_ct_rate_column():
    assert set(rad_chestct.LABEL_MAP) == set(CT_RATE_LABELS)
    frame = pd.DataFrame(
        {
            "NoteAcc_DEID": ["a"],
            "septal_thickening": [1],
            "hernia*diaphragm": [1],
            "hernia*abdomen": [0],
        }
    )
    mapped = rad_chestct.map_labels(frame).iloc[0]
    assert mapped["Interlobular septal thickening"] == 1 and mapped["Hiatal hernia"] == 1
    assert mapped[list(CT_RATE_LABELS)].sum() == 2


# ---------------------------------------------------------------- totalseg-masks


def _volume_without_mask(root: Path) -> Path:
    ct = layout.ct_path(root, "valid_1_a_1.nii.gz")
    ct.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.full((6, 5, 4), 40, np.int16), np.diag([2.0, 2.0, 3.0, 1.0])), ct)
    return ct


def test_totalseg_masks_without_totalsegmentator_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "totalsegmentator", None)  # not installed
    _volume_without_mask(tmp_path)
    with pytest.raises(
        MissingDependencyError, match="pip install TotalSegmentator.*totalseg_download_weights"
    ):
        make_totalseg_masks(tmp_path)
    dry = make_totalseg_masks(tmp_path, dry_run=True)
    assert [name for name, _ in dry.planned] == ["valid_1_a_1.nii.gz"]


def test_totalseg_masks_writes_the_label_map_at_the_layout_path(tmp_path, monkeypatch):
    """With a stand-in for TotalSegmentator's API (the real one needs weights and a GPU)."""
    import types

    calls = []

    def fake_totalsegmentator(input, output, **kwargs):  # noqa: A002
        calls.append(kwargs)
        img = nib.load(input)
        labels = (np.asarray(img.dataobj) > 0).astype(np.uint8) * 5  # "liver" everywhere
        nib.save(nib.Nifti1Image(labels, img.affine), output)
        return None

    api = types.ModuleType("totalsegmentator.python_api")
    api.totalsegmentator = fake_totalsegmentator
    monkeypatch.setitem(sys.modules, "totalsegmentator", types.ModuleType("totalsegmentator"))
    monkeypatch.setitem(sys.modules, "totalsegmentator.python_api", api)
    ct = _volume_without_mask(tmp_path)
    report = make_totalseg_masks(tmp_path, device="cpu")
    mask = layout.mask_path(tmp_path, "valid_1_a_1.nii.gz")
    assert report.written == [mask] and calls[0]["ml"] is True and calls[0]["fast"] is True
    seg = nib.load(mask)
    assert np.array_equal(seg.affine, nib.load(ct).affine) and set(
        np.unique(np.asarray(seg.dataobj))
    ) == {5}
    assert [p.name for p in mask.parent.iterdir()] == [mask.name]  # no temporary file left
    assert make_totalseg_masks(tmp_path).written == []  # nothing left to segment


# ---------------------------------------------------------------- tables


def test_upsert_rows_keeps_other_volumes_in_natural_order(tmp_path):
    path = tmp_path / "t.csv"
    upsert_rows(
        path,
        [
            {"VolumeName": "valid_10_a_1.nii.gz", "x": 1},
            {"VolumeName": "valid_2_a_1.nii.gz", "x": 2},
        ],
    )
    upsert_rows(path, [{"VolumeName": "valid_2_a_1.nii.gz", "x": 3, "y": "new"}])
    table = pd.read_csv(path)
    assert table["VolumeName"].tolist() == ["valid_2_a_1.nii.gz", "valid_10_a_1.nii.gz"]
    assert table["x"].tolist() == [3, 1] and table["y"].isna().tolist() == [False, True]


# ---------------------------------------------------------------- bad inputs


@pytest.fixture
def lan_address() -> str:
    """This machine's non-loopback address, standing in for "another machine" on plain http."""
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to serve plain http on")
    return address


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/x", "http://127.3.4.5/", "http://localhost:1/", "http://[::1]:2/"],
)
def test_plain_http_with_a_token_is_allowed_to_this_machine(url):
    assert is_loopback(url)
    check_token_transport(url, "ZENODO_TOKEN")  # no error
    check_token_transport("https://zenodo.org/api", "ZENODO_TOKEN")


def test_token_transport_refusal_names_the_redacted_url_and_the_token():
    assert not is_loopback("http://127.0.0.1.example.org/") and not is_loopback("http://10.0.0.1/")
    with pytest.raises(InsecureTransportError) as info:
        check_token_transport(
            f"http://u:{SECRET}@mirror.example.org:8080/z?key={SECRET}", "X_TOKEN"
        )
    message = str(info.value)
    assert "X_TOKEN" in message and "http://mirror.example.org:8080/z?…" in message
    assert "https://" in message and SECRET not in message


def test_download_never_sends_an_authorization_header_over_plain_http_to_another_machine(
    tmp_path, lan_address
):
    with FakeServer(host=lan_address) as server:
        server.files["/f"] = b"z" * 100
        url = f"{server.url}/f"
        with pytest.raises(InsecureTransportError, match=re.escape(redact_url(url))):
            download(
                RemoteFile(url, tmp_path / "f", "f", headers={"Authorization": f"Bearer {SECRET}"}),
                progress=False,
            )
        assert server.requests == []  # refused before connecting
        # a public file (no credentials) may still come over plain http
        assert download(RemoteFile(url, tmp_path / "f", "f", size=100), progress=False) == "fetched"


def test_rad_chestct_refuses_zenodo_token_to_a_plain_http_mirror(
    tmp_path, lan_address, monkeypatch, capsys
):
    monkeypatch.setenv("ZENODO_TOKEN", SECRET)
    files = {"val00001.npz": _npz(np.zeros((3, 4, 5), np.int16))}
    with FakeServer(host=lan_address) as server:
        FakeZenodo(server, "777", files, token=None)  # a public mirror
        dest = tmp_path / "d"
        args = ["rad-chestct", "--mirror", server.url, "--record", "777", "--dest", str(dest)]
        assert cli_main([*args, "--no-progress"]) == 1
        err = _one_line_error(capsys)
        assert "ZENODO_TOKEN" in err and server.url in err and "https://" in err
        assert "unset ZENODO_TOKEN" in err and SECRET not in err
        assert server.requests == [] and not dest.exists()
        # without the token the same public mirror is fine over plain http
        monkeypatch.delenv("ZENODO_TOKEN")
        report = download_rad_chestct(
            dest, limit=1, record="777", mirror=server.url, progress=False
        )
        assert report.fetched == ["val00001.npz"]
        assert all("Authorization" not in headers for _, _, headers in server.requests)


def test_ct_rate_refuses_the_hub_token_to_a_plain_http_endpoint(tmp_path, lan_address):
    with FakeServer(host=lan_address) as server:
        FakeHub(server, REPO_ID, SECRET, _ct_rate_fixture())
        with pytest.raises(InsecureTransportError) as info:
            download_ct_rate(
                tmp_path / "d", limit=1, endpoint=server.url, token=SECRET, progress=False
            )
        assert server.requests == []
    message = str(info.value)
    assert "HF_TOKEN" in message and server.url in message and "https://" in message
    assert SECRET not in message and not (tmp_path / "d").exists()


def test_rad_chestct_without_token_says_so_before_any_request(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ZENODO_TOKEN", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("the Zenodo API was asked without a token")

    monkeypatch.setattr(rad_chestct, "get_json", no_network)
    dest = tmp_path / "d"
    assert cli_main(["rad-chestct", "--dry-run", "--dest", str(dest), "--no-progress"]) == 1
    err = _one_line_error(capsys)
    assert "ZENODO_TOKEN is not set" in err and f"records/{rad_chestct.RECORD_ID}" in err
    assert "access request" in err and "personal access token" in err
    assert "account/settings/applications" in err and not dest.exists()


def test_totalseg_masks_on_a_missing_folder_says_it_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "MISSING"
    assert cli_main(["totalseg-masks", "--dest", str(missing)]) == 1
    err = _one_line_error(capsys)
    assert f"{missing} does not exist" in err and "already has a mask" not in err
    assert not missing.exists()
    with pytest.raises(DestinationError, match="is not a folder"):
        make_totalseg_masks(Path(__file__), dry_run=True)


def test_totalseg_masks_on_a_root_without_the_split_or_its_volumes_names_the_folder(
    tmp_path, capsys
):
    (tmp_path / "dataset" / "train").mkdir(parents=True)  # another split only
    assert cli_main(["totalseg-masks", "--dest", str(tmp_path), "--dry-run"]) == 1
    err = _one_line_error(capsys)
    assert f"{tmp_path / 'dataset' / 'valid'} does not exist" in err and "--split" in err
    folder = tmp_path / "dataset" / "valid"
    folder.mkdir()
    (folder / "notes.nii.gz").write_bytes(b"not a volume of the layout")
    with pytest.raises(DestinationError) as info:
        make_totalseg_masks(tmp_path)
    assert f"{folder} holds no volumes" in str(info.value)
    assert "valid_1_a_1.nii.gz" in str(info.value)
    _volume_without_mask(tmp_path)
    layout.mask_path(tmp_path, "valid_1_a_1.nii.gz").parent.mkdir(parents=True)
    layout.mask_path(tmp_path, "valid_1_a_1.nii.gz").write_bytes(b"")
    done = make_totalseg_masks(tmp_path)
    assert done.written == [] and "(1 found) already has a mask" in " ".join(done.notes)
