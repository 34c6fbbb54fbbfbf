"""The phantom's two dials: difficulty (how visible findings are) and site (another hospital)."""

from __future__ import annotations

import csv
import os

import nibabel as nib
import numpy as np
import pytest

from cagcl_mini.anatomy import ALL_LABELS, CT_RATE_LABELS
from cagcl_mini.data.dataset import CTReportDataset
from cagcl_mini.layout import csv_path, ct_path, mask_path
from cagcl_mini.phantom.build import WORKER_ENV, DatasetWriteError, make_dataset
from cagcl_mini.phantom.findings import DIFFICULTIES, TUTORIAL, Visibility, visibility
from cagcl_mini.phantom.io import fmt_float
from cagcl_mini.phantom.plan import PhantomSpec, plan_case
from cagcl_mini.phantom.render import body_for, render_volume, spec_for
from cagcl_mini.phantom.sites import SITES

LUNG_FINDINGS = ["Lung nodule", "Emphysema", "Lung opacity", "Pulmonary fibrotic sequela"]


def test_every_finding_has_a_tutorial_visibility_at_least_the_realistic_one():
    assert set(TUTORIAL) == set(ALL_LABELS) and DIFFICULTIES == ("tutorial", "realistic")
    for name, vis in TUTORIAL.items():
        assert vis.severity[0] >= 0.0 and vis.severity[1] <= 1.0, name
        assert vis.extent >= 1.0 and vis.contrast >= 1.0, name
        assert visibility(name, "realistic") == Visibility()
    with pytest.raises(ValueError, match="difficulty must be one of"):
        visibility("Lung nodule", "hard")


@pytest.mark.parametrize("name", LUNG_FINDINGS + ["Cardiomegaly", "Hepatic steatosis"])
def test_a_seed_keeps_its_patient_and_finding_across_difficulties(name):
    body = body_for(5, 48)
    easy, hard = (spec_for(5, name, body, d) for d in ("tutorial", "realistic"))
    assert easy.side == hard.side  # the same draws
    lo, hi = TUTORIAL[name].severity
    assert lo <= easy.severity <= hi and easy.severity >= hard.severity * (hi - lo) + lo - 1e-9
    without = [render_volume(5, 48, [], difficulty=d).hu for d in ("tutorial", "realistic")]
    assert np.array_equal(*without), "the patient does not depend on the difficulty"
    healthy = without[0]
    changed = {
        d: np.abs(render_volume(5, 48, [name], difficulty=d).hu - healthy).sum()
        for d in ("tutorial", "realistic")
    }
    assert changed["tutorial"] >= changed["realistic"] > 0, changed


def test_site_b_scans_stores_and_reports_differently():
    a, b = plan_case(0, "valid", 4, 64, site="A"), plan_case(0, "valid", 4, 64, site="B")
    assert a.intercept in SITES["A"].intercepts and b.intercept == 0
    assert float(b.metadata["ZSpacing"]) == pytest.approx(2 * float(a.metadata["ZSpacing"]), 0.2)
    assert b.metadata["NumberofSlices"] == "32" and b.metadata["Manufacturer"].endswith("site B")
    sentences = [s for s in b.report["Findings_EN"].split(". ") if s]
    assert all(s.rstrip(".").endswith("is present") for s in sentences) or "None of" in sentences[0]
    assert b.label_columns() == CT_RATE_LABELS and a.label_columns() == ALL_LABELS
    vol = render_volume(b.seed_sequence(), 64, b.findings, site="B")
    assert vol.hu.shape == (64, 64, 32) == vol.labels.shape
    patient = body_for(b.seed_sequence(), 64)  # the same patient as site A would scan them
    assert vol.affine[2, 2] == pytest.approx(2 * patient.spacing[2])
    # a larger field of view: the same matrix covers 1.2-1.35x the width, as the CSV says
    fov = vol.affine[0, 0] / patient.spacing[0]
    assert 1.2 - 1e-2 <= fov <= 1.35 + 1e-2
    assert (
        b.metadata["XYSpacing"] == f"[{fmt_float(vol.affine[0, 0])}, {fmt_float(vol.affine[1, 1])}]"
    )
    body_share = {
        s: (render_volume(b.seed_sequence(), 64, [], site=s).labels > 0).mean() for s in "AB"
    }
    assert body_share["B"] < 0.8 * body_share["A"], body_share
    # a sharp kernel: more high-frequency noise in air than site A
    air = {s: render_volume(b.seed_sequence(), 64, [], site=s).hu[:6, :6] for s in "AB"}
    assert np.diff(air["B"], axis=0).std() > 2 * np.diff(air["A"], axis=0).std()


def test_site_c_shifts_the_other_way_soft_thick_and_reading_low():
    c = plan_case(0, "valid", 4, 64, site="C")
    vol = {s: render_volume(c.seed_sequence(), 64, c.findings, site=s) for s in "AC"}
    assert c.intercept == -1000 and c.metadata["Manufacturer"].endswith("site C")
    assert vol["C"].hu.shape == (64, 64, 22) and c.metadata["NumberofSlices"] == "22"
    patient = body_for(c.seed_sequence(), 64)
    assert vol["C"].affine[2, 2] == pytest.approx(3 * patient.spacing[2])
    assert 0.85 - 1e-2 <= vol["C"].affine[0, 0] / patient.spacing[0] <= 0.95 + 1e-2
    # a smaller field of view: the patient fills more of the same matrix
    share = {s: (render_volume(c.seed_sequence(), 64, [], site=s).labels > 0).mean() for s in "AC"}
    assert share["C"] > 1.1 * share["A"], share

    # a soft kernel: less high-frequency noise in air than site A
    def air_noise(v):
        air = (v.labels == 0) & (v.hu < -950)
        both = air[1:] & air[:-1]
        return np.diff(v.hu, axis=0)[both].std()

    assert air_noise(vol["C"]) < air_noise(vol["A"])
    offsets = [SITES["C"].offset(np.random.default_rng(k)) for k in range(20)]
    assert all(-20.0 <= o <= -8.0 for o in offsets), "site C's scanner reads low"
    assert labels_only_over_ct_rate(c)


def labels_only_over_ct_rate(case) -> bool:
    """A labels-only report over the 18 CT-RATE findings, as site B writes them."""
    sentences = [s for s in case.report["Findings_EN"].split(". ") if s]
    labelled = all(s.rstrip(".").endswith("is present") for s in sentences)
    return (labelled or "None of" in sentences[0]) and case.label_columns() == CT_RATE_LABELS


def test_a_site_b_dataset_loads_with_the_same_loader(tmp_path):
    root = make_dataset(
        tmp_path / "b", PhantomSpec(2, 3, 40, 0, site="B"), workers=1, progress=False
    )
    name = "valid_1_a_1.nii.gz"
    ct, seg = nib.load(ct_path(root, name)), nib.load(mask_path(root, name))
    assert ct.shape == seg.shape == (40, 40, 20)
    np.testing.assert_allclose(ct.affine, seg.affine)
    with open(csv_path(root, "labels", "valid"), newline="") as f:
        assert next(csv.reader(f))[1:] == list(CT_RATE_LABELS)
    ds = CTReportDataset(root, "valid", size=32)
    item = ds[0]
    assert item["image"].shape == (1, 32, 32, 32) and item["present"].sum() >= 6
    air = float(np.asarray(ct.dataobj)[0, 0, 0])  # intercept 0: stored values are HU
    assert -1024 <= air < -900


def test_a_worker_process_never_starts_a_build(tmp_path, monkeypatch):
    monkeypatch.setenv(WORKER_ENV, str(os.getpid() + 1))  # as if a build's worker imported us
    with pytest.raises(DatasetWriteError, match='needs `if __name__ == "__main__":`'):
        make_dataset(tmp_path / "x", n_train=1, n_valid=1, size=32, progress=False)
    assert not (tmp_path / "x").exists()


def test_pertinent_negatives_route_to_their_anatomy_and_read_normal():
    from cagcl_mini.anatomy import ABNORMALITIES
    from cagcl_mini.phantom.reports import NEGATIVE_TERMS, PERTINENT_NEGATIVES
    from cagcl_mini.text.findings import is_abnormal
    from cagcl_mini.text.reports import route_sentence

    for ab in ABNORMALITIES:
        for template in PERTINENT_NEGATIVES:
            sentence = template.format(x=NEGATIVE_TERMS.get(ab.name, ab.term))
            sentence = sentence[:1].upper() + sentence[1:]
            assert route_sentence(sentence) == ab.anatomy, sentence
            assert not is_abnormal(ab.anatomy, sentence), sentence
    reports = [plan_case(0, "train", pid, 48).report["Findings_EN"] for pid in range(1, 30)]
    assert sum(" no " in f" {r.lower()}" for r in reports) > 20  # reports state absences
