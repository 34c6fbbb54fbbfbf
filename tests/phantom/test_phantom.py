"""The embedded phantom dataset: layout, files, determinism, crash safety, findings and reports."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO  # noqa: E402

from cagcl_mini.anatomy import (
    ABNORMALITY_BY_NAME,
    ALL_LABELS,
    ANATOMIES,
    ANATOMY_ID,
    CT_RATE_LABELS,
    EXTRA_LABELS,
    TOTALSEG_MAX_ID,
    TOTALSEG_TO_ANATOMY,
)
from cagcl_mini.data.index import index_split
from cagcl_mini.layout import resolve_dataset_dir
from cagcl_mini.phantom.build import (
    MANIFEST,
    DatasetWriteError,
    dataset_complete,
    default_root,
    ensure_dataset,
    make_dataset,
    read_manifest,
)
from cagcl_mini.phantom.plan import INTERCEPTS, PhantomSpec, plan_case
from cagcl_mini.phantom.render import body_for, render_volume, spec_for
from cagcl_mini.phantom.reports import NORMAL_IMPRESSION, compatible_normals
from cagcl_mini.text.citations import strip_citations
from cagcl_mini.text.findings import is_abnormal
from cagcl_mini.text.reports import split_report

# the realistic difficulty: its HU ranges are a CT's (tests/phantom/test_dials.py has the tutorial)
SMALL = {"n_train": 6, "n_valid": 3, "size": 40, "seed": 3, "difficulty": "realistic"}
CSVS = {
    "train": (
        "radiology_text_reports/train_reports.csv",
        "multi_abnormality_labels/train_predicted_labels.csv",
        "metadata/train_metadata.csv",
    ),
    "valid": (
        "radiology_text_reports/validation_reports.csv",
        "multi_abnormality_labels/valid_predicted_labels.csv",
        "metadata/validation_metadata.csv",
    ),
}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def volume_names(split: str, n: int) -> list[str]:
    return [f"{split}_{pid}_a_1.nii.gz" for pid in range(1, n + 1)]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """One small dataset built with two worker processes."""
    return make_dataset(
        tmp_path_factory.mktemp("phantom") / "ds", workers=2, progress=False, **SMALL
    )


# ----------------------------------------------------------------------------- layout and files
def test_layout_is_exactly_ct_rates(small):
    expected = {MANIFEST}
    for split, n in (("train", SMALL["n_train"]), ("valid", SMALL["n_valid"])):
        for pid in range(1, n + 1):
            rel = f"{split}/{split}_{pid}/{split}_{pid}_a/{split}_{pid}_a_1.nii.gz"
            expected |= {f"dataset/{rel}", f"dataset/ts_seg/ts_total/{rel}"}
            expected.add(f"dataset/ts_seg/findings/{rel}")
        expected |= {f"dataset/{c}" for c in CSVS[split]}
    expected.add("dataset/ts_seg/findings/labels.json")
    assert set(all_files(small)) == expected
    siblings = {p.name for p in small.parent.iterdir()}
    assert not any(".partial" in s or ".old-" in s for s in siblings), siblings
    assert dataset_complete(small, PhantomSpec(**SMALL).params())
    manifest = read_manifest(small)
    assert set(manifest["files"]) == expected - {MANIFEST}


def test_csv_columns_and_one_row_per_volume(small):
    for split, n in (("train", SMALL["n_train"]), ("valid", SMALL["n_valid"])):
        names = volume_names(split, n)
        reports, labels, meta = (read_rows(small / "dataset" / c) for c in CSVS[split])
        for rows in (reports, labels, meta):
            assert sorted(r["VolumeName"] for r in rows) == sorted(names)
        assert {"VolumeName", "Findings_EN", "Impressions_EN", "ClinicalInformation_EN",
                "Technique_EN"} <= set(reports[0])  # fmt: skip
        with open(small / "dataset" / CSVS[split][1], encoding="utf-8") as f:
            header = f.readline().strip().split(",")
        assert header == ["VolumeName", *CT_RATE_LABELS, *EXTRA_LABELS]
        assert all(r[c] in ("0", "1") for r in labels for c in ALL_LABELS)
        for r in meta:
            sx, sy = json.loads(r["XYSpacing"])
            assert sx == sy and 5.0 < sx * SMALL["size"] / 64 < 6.5
            assert float(r["ZSpacing"]) > 0 and r["RescaleSlope"] == "1"
            assert int(r["RescaleIntercept"]) in INTERCEPTS
        for r in reports:
            assert r["Findings_EN"].strip() and r["Impressions_EN"].strip()


def test_nifti_files_read_back_as_ct_rate_does(small):
    meta = {r["VolumeName"]: r for s in CSVS for r in read_rows(small / "dataset" / CSVS[s][2])}
    intercepts = set()
    for ct_path in sorted((small / "dataset").glob("*/*/*/*.nii.gz")):
        if "ts_seg" in ct_path.parts:
            continue
        seg_path = (
            small / "dataset" / "ts_seg" / "ts_total" / ct_path.relative_to(small / "dataset")
        )
        ct, seg = nib.load(ct_path), nib.load(seg_path)
        assert ct.get_data_dtype() == np.int16 and seg.get_data_dtype() == np.uint8
        assert ct.shape == seg.shape == (SMALL["size"],) * 3
        np.testing.assert_array_equal(ct.affine, seg.affine)
        assert nib.aff2axcodes(ct.affine) == ("R", "A", "S")
        # The header carries no rescale: that is the metadata CSV's job (as in CT-RATE).
        assert math.isnan(ct.header["scl_slope"]) and math.isnan(ct.header["scl_inter"])
        row = meta[ct_path.name]
        sx, sy = json.loads(row["XYSpacing"])
        assert ct.header.get_zooms() == (sx, sy, float(row["ZSpacing"]))
        slope, intercept = float(row["RescaleSlope"]), int(row["RescaleIntercept"])
        intercepts.add(intercept)
        stored = np.asarray(ct.dataobj)
        hu = stored * slope + intercept
        assert -1024 <= hu.min() and hu.max() <= 3071
        assert stored.min() >= -1024 - intercept  # stored = HU - intercept
        labels = np.asarray(seg.dataobj)
        assert labels.max() <= TOTALSEG_MAX_ID
        anatomy = TOTALSEG_TO_ANATOMY[labels]
        assert set(np.unique(anatomy)) == set(range(len(ANATOMIES) + 1)), ct_path.name
        corner = hu[:4, :4, :]
        assert np.all(np.abs(np.median(corner) + 1000) < 60), "air outside the body"
        lung = hu[anatomy == ANATOMY_ID["lung"]]
        assert -920 < lung.mean() < -600
        for organ in ("liver", "spleen", "kidney", "heart", "aorta"):
            assert -40 < np.median(hu[anatomy == ANATOMY_ID[organ]]) < 300, organ
        assert hu[(labels >= 26) & (labels <= 50)].mean() > 150, "vertebrae are bone"
    assert intercepts == set(INTERCEPTS), "both rescale intercepts occur"


def test_ctrate_loader_indexes_the_phantom(small):
    records = index_split(resolve_dataset_dir(small), "train")
    assert [r.name for r in records] == volume_names("train", SMALL["n_train"])
    assert all(r.intercept in INTERCEPTS and r.slope == 1.0 for r in records)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_is_byte_identical_and_other_seed_differs(small, tmp_path):
    again = make_dataset(tmp_path / "again", workers=1, progress=False, **SMALL)
    assert all_files(again) == all_files(small)  # one worker vs two: same bytes, manifest too
    other = make_dataset(tmp_path / "other", workers=1, progress=False, **{**SMALL, "seed": 4})
    a, b = all_files(small), all_files(other)
    assert set(a) == set(b)
    differ = [k for k in a if k.endswith(".nii.gz") and a[k] != b[k]]
    assert len(differ) == len([k for k in a if k.endswith(".nii.gz")])
    # Reproducible gzip: no file name and mtime 0 in the header.
    raw = a["dataset/train/train_1/train_1_a/train_1_a_1.nii.gz"]
    assert raw[3] == 0 and raw[4:8] == b"\0\0\0\0"
    assert gzip.decompress(raw)[:4] == (348).to_bytes(4, "little")


def test_volume_does_not_depend_on_dataset_size(small, tmp_path):
    fewer = make_dataset(tmp_path / "fewer", **{**SMALL, "n_train": 2, "n_valid": 1}, workers=1,
                         progress=False)  # fmt: skip
    a, b = all_files(small), all_files(fewer)
    shared = [k for k in b if k.endswith(".nii.gz")]
    assert len(shared) == 9 and all(a[k] == b[k] for k in shared)  # CT, anatomy map, findings


# ----------------------------------------------------------------------------- findings
SIZE = 64
SEED = 17  # a non-contrast patient (the harder case for fluid and cyst contrast)


@pytest.fixture(scope="module")
def baseline():
    assert not body_for(SEED, SIZE).contrast
    return render_volume(SEED, SIZE)


def _with(name: str, severity: float):
    spec = dataclasses.replace(spec_for(SEED, name, body_for(SEED, SIZE)), severity=severity)
    return render_volume(SEED, SIZE, [spec])


# Findings painted strictly inside their anatomy (the others change its shape or add devices).
LOCAL = set(ALL_LABELS) - {
    "Medical material", "Cardiomegaly", "Pericardial effusion", "Splenomegaly", "Lymphadenopathy",
    "Hiatal hernia",
}  # fmt: skip


@pytest.mark.parametrize("severity", [0.1, 0.9])
@pytest.mark.parametrize("name", ALL_LABELS)
def test_each_finding_is_visible_in_its_anatomy(baseline, name, severity):
    from scipy.ndimage import binary_dilation

    vol = _with(name, severity)
    assert [s.name for s in vol.findings] == [name]
    aid = ANATOMY_ID[ABNORMALITY_BY_NAME[name].anatomy]
    m0 = TOTALSEG_TO_ANATOMY[baseline.labels] == aid
    m1 = TOTALSEG_TO_ANATOMY[vol.labels] == aid
    h0, h1 = baseline.hu[m0], vol.hu[m1]
    diff = vol.hu - baseline.hu
    up = int((diff[m0 | m1] > 100).sum())
    down = int((diff[m0 | m1] < -15).sum())
    growth = m1.sum() / m0.sum()
    if name in LOCAL:  # changed voxels lie in the anatomy (blur reaches two voxels further)
        changed = np.abs(diff) > 5
        near = binary_dilation(m0 | m1, iterations=2)
        assert (changed & near).sum() >= 0.95 * changed.sum() > 0
    if name in ("Cardiomegaly", "Splenomegaly"):
        assert growth > 1.3
    elif name == "Pericardial effusion":
        assert growth > 1.2
        new = vol.hu[m1 & ~m0]
        assert -60 < np.median(new) < 60, "the added rim is fluid, not fat or lung"
        assert h1.mean() < h0.mean() + 10
    elif name == "Hiatal hernia":
        assert growth > 1.2 and (h1 < -500).sum() > (h0 < -500).sum()  # air in the sac
    elif name in ("Coronary artery wall calcification", "Arterial wall calcification"):
        assert (h1 > 400).sum() >= (h0 > 400).sum() + 2
    elif name == "Medical material":
        assert (h1 > 2000).sum() >= 3 and (h0 > 2000).sum() == 0
    elif name == "Lymphadenopathy":
        assert h1.mean() > h0.mean() + 20, "nodes narrow the tracheal lumen"
    elif name == "Emphysema":
        assert (h1 < -950).sum() > (h0 < -950).sum() and h1.mean() < h0.mean()
    elif name == "Mosaic attenuation pattern":
        assert h1.std() > h0.std() and down > 100 and (diff[m0] > 15).sum() > 100
    elif name == "Bronchiectasis":
        assert down >= 5 and up >= 5  # dark dilated lumens with walls
    elif name == "Hepatic steatosis":
        assert h1.mean() < h0.mean() - 20
    elif name in ("Liver lesion", "Renal cyst"):
        assert down >= 5 and h1.mean() < h0.mean()
    else:  # denser lung findings: nodule, effusion, atelectasis, opacity, consolidation, ...
        assert ABNORMALITY_BY_NAME[name].anatomy == "lung"
        assert up >= 3 and h1.mean() > h0.mean()


def test_findings_scale_with_severity(baseline):
    lung = TOTALSEG_TO_ANATOMY[baseline.labels] == ANATOMY_ID["lung"]
    weak, strong = (_with("Lung opacity", s).hu[lung].mean() for s in (0.1, 0.9))
    assert strong > weak > baseline.hu[lung].mean()
    liver = baseline.labels == 5
    weak, strong = (_with("Hepatic steatosis", s).hu[liver].mean() for s in (0.1, 0.9))
    assert strong < weak - 20


def test_render_rejects_unknown_finding():
    with pytest.raises(KeyError, match="unknown abnormality"):
        render_volume(0, 32, ["Broken heart"])


# ----------------------------------------------------------------------------- reports
def test_reports_mention_every_labelled_finding(small):
    for split in CSVS:
        reports = {r["VolumeName"]: r for r in read_rows(small / "dataset" / CSVS[split][0])}
        labels = read_rows(small / "dataset" / CSVS[split][1])
        for row in labels:
            pid = int(row["VolumeName"].split("_")[1])
            plan = plan_case(SMALL["seed"], split, pid, SMALL["size"], SMALL["difficulty"])
            assert [c for c in ALL_LABELS if row[c] == "1"] == [f.name for f in plan.findings]
            assert reports[row["VolumeName"]]["Findings_EN"] == plan.report["Findings_EN"]


def test_report_sentences_follow_the_catalog():
    seen_orders, omitted, normal = set(), 0, 0
    for pid in range(1, 201):
        plan = plan_case(1, "train", pid, 64)
        text = strip_citations(
            plan.report["Findings_EN"]
        )  # citations: tests/phantom/test_citations
        names = {f.name for f in plan.findings}
        for f in plan.findings:  # every finding has one of its phrasings, filled in
            ab = ABNORMALITY_BY_NAME[f.name]
            assert any(f.fill(p) in text for p in ab.phrasings), (f.name, text)
            assert "{" not in text
        for anatomy in ANATOMIES:
            present = {n for n in names if ABNORMALITY_BY_NAME[n].anatomy == anatomy.name}
            allowed = set(compatible_normals(anatomy, present))
            for sentence in anatomy.normal_phrasings:
                if sentence in text:
                    assert sentence in allowed, (sentence, present)
            said = [p for p in anatomy.normal_phrasings if p in text]
            omitted += not present and not said
        normal += not names
        if not names:
            assert plan.report["Impressions_EN"] == NORMAL_IMPRESSION
        else:
            terms = [ABNORMALITY_BY_NAME[n].term for n in names]
            assert all(t in plan.report["Impressions_EN"].lower() for t in terms)
        seen_orders.add(text.split(". ")[0])
    assert omitted > 50, "normal anatomies are sometimes not mentioned"
    assert 10 < normal < 80, "some volumes are fully normal"
    assert len(seen_orders) > 20, "wording and order vary"
    lung_with_nodule = compatible_normals(ANATOMIES[0], {"Lung nodule"})
    assert "The lungs are clear." not in lung_with_nodule
    assert "No pleural effusion or pneumothorax is detected." in lung_with_nodule


def test_prevalence_is_moderate():
    counts = np.zeros(len(ALL_LABELS))
    n = 400
    for pid in range(1, n + 1):
        names = {f.name for f in plan_case(2, "train", pid, 64).findings}
        counts += [name in names for name in ALL_LABELS]
    assert np.all((counts / n > 0.08) & (counts / n < 0.42)), dict(
        zip(ALL_LABELS, counts / n, strict=True)
    )


def test_report_splitter_recovers_anatomy_flags():
    correct = total = 0
    wrong = []
    for pid in range(1, 21):
        plan = plan_case(0, "train", pid, 64)
        parts = split_report(plan.report["Findings_EN"])
        for anatomy in ANATOMIES:
            truth = any(ABNORMALITY_BY_NAME[f.name].anatomy == anatomy.name for f in plan.findings)
            got = is_abnormal(anatomy.name, parts[anatomy.name])
            correct += got == truth
            total += 1
            if got != truth:
                wrong.append((anatomy.name, truth, parts[anatomy.name]))
    assert correct / total >= 0.95, wrong


# ----------------------------------------------------------------------------- robustness
def _cli(*args: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cagcl_mini", "make-data", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=os.environ.copy(), **kw)


def test_cli_make_data(tmp_path):
    out = tmp_path / "cli"
    proc = _cli("--out", str(out), "--n-train", "2", "--n-valid", "1", "--size", "32",
                "--workers", "1", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert f"dataset ready at {out}" in stdout
    assert dataset_complete(out, PhantomSpec(2, 1, 32, 0).params())


def test_killed_build_never_looks_complete_and_resumes(tmp_path):
    params = {"n_train": 60, "n_valid": 2, "size": 40, "seed": 5}
    out = tmp_path / "killed"
    progress = tmp_path / ".killed.partial" / ".progress"
    proc = _cli("--out", str(out), "--n-train", "60", "--n-valid", "2", "--size", "40",
                "--seed", "5", "--workers", "1", start_new_session=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.is_dir() and len(list(progress.glob("*.json"))) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not dataset_complete(out) and not (out / MANIFEST).exists()
    finished = sorted(progress.glob("*.json"))
    assert 3 <= len(finished) < 62
    # Corrupt one finished volume: the resume must notice (sha256) and redo it.
    record = json.loads(finished[0].read_text())
    victim = tmp_path / ".killed.partial" / next(iter(record["files"]))
    victim.write_bytes(victim.read_bytes()[:100])
    stats: dict = {}
    make_dataset(out, workers=2, progress=False, stats=stats, **params)
    assert stats["resumed"] == len(finished) - 1 and stats["rendered"] == 62 - stats["resumed"]
    reference = make_dataset(tmp_path / "reference", workers=1, progress=False, **params)
    assert all_files(out) == all_files(reference)
    assert not (tmp_path / ".killed.partial").exists()


def test_rerun_reuses_and_other_parameters_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("CAGCL_MINI_DATA", str(tmp_path / "default"))
    root = ensure_dataset(n_train=2, n_valid=1, size=32, workers=1, progress=False)
    assert root == tmp_path / "default-ntrain2-nvalid1-size32" and dataset_complete(root)
    stamp = (root / MANIFEST).stat().st_mtime_ns
    stats: dict = {}
    make_dataset(root, PhantomSpec(2, 1, 32, 0), workers=1, progress=False, stats=stats)
    assert (root / MANIFEST).stat().st_mtime_ns == stamp and stats == {}
    make_dataset(root, PhantomSpec(3, 1, 32, 0), workers=1, progress=False)  # same folder
    assert read_manifest(root)["params"]["n_train"] == 3
    assert (root / "dataset/train/train_3/train_3_a/train_3_a_1.nii.gz").is_file()


def test_each_spec_keeps_its_own_cache_folder(tmp_path, monkeypatch):
    """Two runs on two difficulties (or sizes, or sites) at once must not rebuild each other's
    dataset under their feet: each spec has a folder, the tutorial's is the default one."""
    monkeypatch.setenv("CAGCL_MINI_DATA", str(tmp_path / "default"))
    small = {"n_train": 2, "n_valid": 1, "size": 32, "workers": 1, "progress": False}
    tutorial = ensure_dataset(**small)
    stamp = (tutorial / MANIFEST).stat().st_mtime_ns
    realistic = ensure_dataset(difficulty="realistic", **small)
    site_c_spec = PhantomSpec(n_valid=1, size=32).at_site("C")
    site_c = ensure_dataset(spec=site_c_spec, workers=1, progress=False)
    assert realistic == tmp_path / "default-realistic-ntrain2-nvalid1-size32"
    assert site_c == tmp_path / "default-nvalid1-size32-site-C"
    assert (tutorial / MANIFEST).stat().st_mtime_ns == stamp, "the first dataset was rebuilt"
    assert read_manifest(realistic)["params"]["difficulty"] == "realistic"
    assert read_manifest(site_c)["params"]["site"] == "C"
    assert PhantomSpec().variant() == "" and default_root(PhantomSpec()) == tmp_path / "default"
    assert default_root(PhantomSpec().at_site("B")) == tmp_path / "default-site-B"


def test_unwritable_output_fails_up_front_naming_the_folder(tmp_path):
    # Tests run as root, which ignores permission bits, so a chmod-ed folder would still be
    # writable. A path below a regular file (and one in /proc) is unwritable for root as well.
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for bad in (blocker / "sub" / "ds", Path("/proc/cagcl_mini_phantom_test/ds")):
        t0 = time.monotonic()
        with pytest.raises(DatasetWriteError, match=re.escape(str(bad))):
            make_dataset(bad, n_train=200, n_valid=50, size=64, workers=1, progress=False)
        assert time.monotonic() - t0 < 10, "fails before rendering anything"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetWriteError, match="not a cagcl-mini dataset"):
        make_dataset(foreign, n_train=1, n_valid=1, size=32, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"size": 31}, "size"),
        ({"n_train": 0}, "n_train"),
        ({"n_valid": 0}, "n_valid"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
        ({"size": 40.5}, "size"),
    ],
)
def test_invalid_arguments_name_the_argument(tmp_path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_dataset(tmp_path / "x", **{"n_train": 1, "n_valid": 1, "size": 32, **kwargs})
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_planned_lung_nodule_is_always_drawn_inside_the_lung(seed):
    """Regression: nodule centres came from lung points cached before the heart was painted."""
    from cagcl_mini.anatomy import ANATOMIES
    from cagcl_mini.phantom.render import render_volume

    lung_ids = list(ANATOMIES[0].totalseg_ids)
    without = render_volume(seed, 64, [])
    with_nodule = render_volume(seed, 64, ["Lung nodule"])
    diff = np.abs(with_nodule.hu - without.hu)
    assert (diff > 0).sum() > 0, "the nodule changed no voxel"
    core = diff > 0.5 * diff.max()  # the blur spreads a faint halo past the lung edge
    assert np.isin(with_nodule.labels[core], lung_ids).mean() > 0.95
