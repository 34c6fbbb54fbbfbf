"""Phantom slice citations: the cited slice of the written volume holds the finding."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cagcl_mini import layout
from cagcl_mini.phantom.build import make_dataset
from cagcl_mini.phantom.finding_masks import FINDING_MASK_LABELS
from cagcl_mini.phantom.plan import CITED_SERIES, plan_case
from cagcl_mini.text.citations import mine_citations
from cagcl_mini.text.reports import route_sentence

SPEC = {"n_train": 14, "n_valid": 4, "size": 32, "seed": 5}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("cite") / "ds", workers=1, progress=False, **SPEC)


def test_cited_slice_contains_the_finding(built):
    checked = 0
    for split in layout.SPLITS:
        reports = pd.read_csv(layout.csv_path(built, "reports", split), index_col="VolumeName")
        meta = pd.read_csv(layout.csv_path(built, "metadata", split), index_col="VolumeName")
        for name, text in reports["Findings_EN"].items():
            pid = layout.parse_volume_name(name)[1]
            plan = plan_case(SPEC["seed"], split, pid, SPEC["size"])
            mined = mine_citations(text)
            assert sorted(p.image for p in mined) == sorted(plan.citations.values())
            if not mined:
                continue
            mask = nib.load(layout.finding_mask_path(built, name))
            ct = nib.load(layout.ct_path(built, name))
            data = np.asarray(mask.dataobj)
            assert data.shape[2] == int(meta.loc[name, "NumberofSlices"])
            for finding, image in plan.citations.items():
                assert 1 <= image <= data.shape[2]
                label = FINDING_MASK_LABELS[finding]
                assert (data[..., image - 1] == label).any(), (name, finding, image)
                zs = np.nonzero(data == label)[2]
                assert zs.min() + 1 <= image <= zs.max() + 1
                (pair,) = [p for p in mined if p.image == image]
                assert pair.series == CITED_SERIES
                assert route_sentence(pair.snippet) is not None
                # "image N" is stored slice N-1 of axis 2 (RAS+, superior): its world z is the
                # metadata's first-slice z plus (N - 1) slice spacings.
                z0 = json.loads(meta.loc[name, "ImagePositionPatient"])[2]
                world = ct.affine @ np.array([0.0, 0.0, image - 1, 1.0])
                assert world[2] == pytest.approx(z0 + (image - 1) * meta.loc[name, "ZSpacing"])
                checked += 1
    assert checked >= 3, "the small dataset has cited findings"


def test_site_b_reports_cite_nothing():
    for pid in range(1, 30):
        plan = plan_case(0, "train", pid, 32, site="B")
        assert plan.citations == {} and "series" not in plan.report["Findings_EN"]


def test_citations_leave_voxels_and_other_columns_alone(monkeypatch):
    from cagcl_mini.phantom import plan as plan_module

    cited = [pid for pid in range(1, 30) if plan_case(0, "valid", pid, 32).citations]
    assert cited
    for pid in cited[:5]:
        with_cites = plan_case(0, "valid", pid, 32)
        with monkeypatch.context() as m:
            m.setattr(plan_module, "choose_citations", lambda specs, rng: [])
            without = plan_case(0, "valid", pid, 32)
        assert with_cites.findings == without.findings and without.citations == {}
        assert with_cites.metadata == without.metadata
        for column in ("ClinicalInformation_EN", "Technique_EN", "Impressions_EN"):
            assert with_cites.report[column] == without.report[column]
        assert with_cites.report["Findings_EN"] != without.report["Findings_EN"]
