"""Finding masks: the phantom writes which voxels each lesion, nodule, cyst or effusion painted."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest

from cagcl_mini.anatomy import ABNORMALITY_BY_NAME, ANATOMY_ID, TOTALSEG_TO_ANATOMY
from cagcl_mini.layout import finding_labels_path, finding_mask_path
from cagcl_mini.phantom.build import make_dataset, read_manifest
from cagcl_mini.phantom.finding_masks import FINDING_MASK_LABELS, finding_label, label_table
from cagcl_mini.phantom.plan import PhantomSpec, plan_case
from cagcl_mini.phantom.render import body_for, render_volume, spec_for

SIZE = 48
SEED = 17


def _render(name: str, severity: float = 0.9, masks: bool = True):
    spec = dataclasses.replace(spec_for(SEED, name, body_for(SEED, SIZE)), severity=severity)
    return render_volume(SEED, SIZE, [spec], finding_masks=masks)


def test_label_table_and_lookup():
    assert label_table() == {0: "background", 1: "Lung nodule", 2: "Pleural effusion",
                             3: "Liver lesion", 4: "Renal cyst"}  # fmt: skip
    assert finding_label("lesion") == finding_label("Liver lesion") == 3
    with pytest.raises(ValueError, match=r"'Cardiomegaly' has no mask; masked findings are"):
        finding_label("Cardiomegaly")


@pytest.mark.parametrize("name", sorted(FINDING_MASK_LABELS))
def test_mask_marks_the_painted_voxels_inside_the_anatomy_and_changes_nothing_else(name):
    with_masks, plain = _render(name), _render(name, masks=False)
    np.testing.assert_array_equal(with_masks.hu, plain.hu)
    np.testing.assert_array_equal(with_masks.labels, plain.labels)
    assert plain.finding_map is None
    fmap = with_masks.finding_map
    assert fmap.shape == with_masks.hu.shape and fmap.dtype == np.uint8
    assert set(np.unique(fmap)) == {0, FINDING_MASK_LABELS[name]}
    masked = fmap > 0
    assert 0.0001 < masked.mean() < 0.2, masked.mean()
    # a mask is where the finding is: mostly inside (or, for an effusion, beside) its anatomy
    aid = ANATOMY_ID[ABNORMALITY_BY_NAME[name].anatomy]
    inside = (TOTALSEG_TO_ANATOMY[with_masks.labels] == aid)[masked].mean()
    assert inside > (0.3 if name == "Pleural effusion" else 0.7), inside
    # and the HU there differs from the same patient without the finding
    base = render_volume(SEED, SIZE)
    assert np.abs(with_masks.hu - base.hu)[masked].mean() > 20


def test_a_volume_without_masked_findings_has_an_empty_mask():
    vol = _render("Cardiomegaly")
    assert not vol.finding_map.any()


def test_an_effusion_is_larger_than_a_nodule():
    nodule, effusion = _render("Lung nodule"), _render("Pleural effusion")
    assert (effusion.finding_map > 0).sum() > 3 * (nodule.finding_map > 0).sum()


def test_dataset_writes_masks_beside_the_anatomy_maps(tmp_path):
    spec = PhantomSpec(n_train=4, n_valid=2, size=32, seed=5)
    root = make_dataset(tmp_path / "ds", spec, workers=1, progress=False)
    manifest = read_manifest(root)
    table = json.loads(finding_labels_path(root).read_text())
    assert {int(k): v for k, v in table["labels"].items()} == label_table()
    seen = set()
    for split, n in (("train", 4), ("valid", 2)):
        for pid in range(1, n + 1):
            name = f"{split}_{pid}_a_1.nii.gz"
            path = finding_mask_path(root, name)
            assert path.relative_to(root).as_posix() in manifest["files"]
            ct = nib.load(root / "dataset" / split / f"{split}_{pid}" / f"{split}_{pid}_a" / name)
            mask = nib.load(path)
            assert mask.shape == ct.shape and np.allclose(mask.affine, ct.affine)
            data = np.asarray(mask.dataobj)
            assert data.dtype == np.uint8
            plan = plan_case(spec.seed, split, pid, spec.size, spec.difficulty)
            names = {f.name for f in plan.findings}
            expected = {v for k, v in FINDING_MASK_LABELS.items() if k in names}
            present = set(np.unique(data)) - {0}
            assert present <= expected, (name, present, expected)
            seen |= present
    assert seen, "no masked finding in six volumes"
