"""CTReportDataset on real NIfTI files written in the CT-RATE layout (tests/layout_fixtures.py)."""

from __future__ import annotations

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import shared_path
from layout_fixtures import FixtureVolume, dataset_file, write_layout

from cagcl_mini.anatomy import (
    ALL_LABELS,
    ANATOMIES,
    ANATOMY_ID,
    ANATOMY_NAMES,
    CT_RATE_LABELS,
    EXTRA_LABELS,
    NUM_ANATOMIES,
    TOTALSEG_TO_ANATOMY,
)
from cagcl_mini.data.dataset import CTReportDataset, collate
from cagcl_mini.data.transforms import build_pipeline
from cagcl_mini.errors import DataError, LayoutWarning
from cagcl_mini.layout import csv_relpath

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
TS = {"spleen": 1, "kidney_r": 2, "liver": 5, "lung": 10, "heart": 51, "aorta": 52}


def phantom(shape=(20, 18, 16), seed=0):
    """A CT in HU (air outside a soft-tissue body) and a TS label map with a few organs."""
    rng = np.random.default_rng(seed)
    ct = np.full(shape, -1000, dtype=np.int16)
    ct[2:-2, 2:-2, 1:-1] = 40
    seg = np.zeros(shape, dtype=np.uint8)
    seg[3:9, 3:9, 8:14] = TS["lung"]
    ct[3:9, 3:9, 8:14] = -850
    seg[11:17, 4:10, 2:7] = TS["liver"]
    ct[11:17, 4:10, 2:7] = 60
    seg[9:12, 10:14, 9:12] = TS["heart"]
    seg[4:7, 12:15, 2:5] = TS["spleen"]
    ct += rng.integers(-5, 6, size=shape).astype(np.int16)
    return ct, seg


def _item_ids(item):
    return set(torch.unique(item["anatomy"]).tolist())


# ----------------------------------------------------------------------------- items and scaling
def test_item_layout_values_and_texts(tmp_path):
    ct, seg = phantom()
    report = "The heart is enlarged. The lungs are clear. There is a simple renal cyst."
    labels = {"Cardiomegaly": 1, "Renal cyst": 1}
    root = write_layout(tmp_path, [FixtureVolume(ct=ct, seg=seg, report=report, labels=labels)])
    ds = CTReportDataset(root, "train", size=16)
    assert len(ds) == 1 and ds.volume_names == ["train_1_a_1.nii.gz"] and ds.ids == ["train_1_a_1"]
    item = ds[0]
    assert item["image"].shape == (1, 16, 16, 16) and item["image"].dtype == torch.float32
    assert item["anatomy"].shape == (16, 16, 16) and item["anatomy"].dtype == torch.long
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    expected_present = {ANATOMY_ID[n] for n in ("lung", "liver", "heart", "spleen")}
    assert _item_ids(item) - {0} == expected_present
    present = item["present"]
    assert present.dtype == torch.bool and present.shape == (NUM_ANATOMIES,)
    assert {i + 1 for i in torch.nonzero(present).flatten().tolist()} == expected_present
    texts = dict(zip(ANATOMY_NAMES, item["texts"], strict=True))
    assert "heart is enlarged" in texts["heart"]
    assert texts["kidney"] == "" and texts["aorta"] == ""  # absent anatomies get no text
    assert texts["liver"] == ANATOMIES[ANATOMY_ID["liver"] - 1].normal_sentence  # unmentioned
    abnormal = dict(zip(ANATOMY_NAMES, item["abnormal"].tolist(), strict=True))
    assert abnormal["heart"] is True and abnormal["lung"] is False
    assert abnormal["kidney"] is False  # abnormal report text, but no kidney in the map
    assert item["labels"].shape == (len(ALL_LABELS),) and item["labels"].dtype == torch.float32
    assert item["labels"][ALL_LABELS.index("Cardiomegaly")] == 1
    assert item["labels"][ALL_LABELS.index("Renal cyst")] == 1
    assert item["labels"].sum() == 2
    assert item["id"] == "train_1_a_1" and item["report"] == report


def test_hu_window_scaling_is_linear_and_clipped(tmp_path):
    ct = np.zeros((8, 8, 8), dtype=np.int16)
    ct[:, :, 0:2], ct[:, :, 2:4], ct[:, :, 4:6], ct[:, :, 6:8] = -1200, -500, 250, 1800
    seg = np.zeros_like(ct, dtype=np.uint8)
    seg[2:6, 2:6, 2:6] = TS["liver"]
    root = write_layout(tmp_path, [FixtureVolume(ct=ct, seg=seg, affine=np.eye(4))])
    # no air at -1000 HU in this test pattern: the HU sanity check is off
    image = CTReportDataset(root, size=8, hu_window=(-1000, 1000), hu_check=False)[0]["image"][0]
    np.testing.assert_allclose(image[0, 0, :].numpy(), [0, 0, 0.25, 0.25, 0.625, 0.625, 1, 1])
    image = CTReportDataset(root, size=8, hu_window=(-500, 500), hu_check=False)[0]["image"][0]
    np.testing.assert_allclose(image[0, 0, :].numpy(), [0, 0, 0, 0, 0.75, 0.75, 1, 1])


@pytest.mark.parametrize("slope,intercept", [(1.0, -8192.0), (1.0, -1024.0), (2.0, -2048.0)])
def test_csv_rescale_gives_hu(tmp_path, slope, intercept):
    hu = np.tile([-1000.0, -200.0, 0.0, 400.0], 2)
    raw = np.broadcast_to(((hu - intercept) / slope)[None, None, :], (8, 8, 8)).astype(np.int16)
    seg = np.zeros(raw.shape, dtype=np.uint8)
    seg[2:6, 2:6, 2:6] = TS["liver"]
    vol = FixtureVolume(ct=raw, seg=seg, affine=np.eye(4), slope=slope, intercept=intercept)
    root = write_layout(tmp_path, [vol])
    image = CTReportDataset(root, size=8)[0]["image"][0]
    np.testing.assert_allclose(image[1, 2].numpy(), (hu + 1000) / 2000, atol=1e-6)


@pytest.mark.parametrize("csv_scaling", [(1.0, -8192.0), (1.0, 0.0)])
def test_header_scaling_is_not_applied_twice(tmp_path, csv_scaling):
    hu = np.tile([-1000.0, -200.0, 0.0, 400.0], 2)
    raw = np.broadcast_to((hu + 8192)[None, None, :], (8, 8, 8)).astype(np.int16)
    seg = np.zeros(raw.shape, np.uint8)
    seg[2:6, 2:6, 2:6] = TS["liver"]  # an anatomy, so the map itself raises no warning
    vol = FixtureVolume(
        ct=raw,
        seg=seg,
        affine=np.eye(4),
        header_scaling=(1.0, -8192.0),
        slope=csv_scaling[0],
        intercept=csv_scaling[1],
    )
    root = write_layout(tmp_path, [vol])
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayoutWarning)
        image = CTReportDataset(root, size=8)[0]["image"][0]
    np.testing.assert_allclose(image[0, 0].numpy(), (hu + 1000) / 2000, atol=1e-6)


def test_header_scaling_disagreeing_with_csv_wins_with_warning(tmp_path):
    raw = np.full((8, 8, 8), 8192, dtype=np.int16)  # 0 HU with the header's intercept ...
    raw[:, :, :4] = 8192 - 1000  # ... and air
    seg = np.zeros(raw.shape, np.uint8)
    seg[2:6, 2:6, 2:6] = TS["liver"]
    vol = FixtureVolume(
        ct=raw,
        seg=seg,
        affine=np.eye(4),
        header_scaling=(1.0, -8192.0),
        intercept=-1024.0,
    )
    root = write_layout(tmp_path, [vol])
    with pytest.warns(LayoutWarning, match=r"train_1_a_1\.nii\.gz.*header scaling"):
        image = CTReportDataset(root, size=8)[0]["image"][0]
    np.testing.assert_allclose(image[:, :, 4:].numpy(), 0.5, atol=1e-6)
    np.testing.assert_allclose(image[:, :, :4].numpy(), 0.0, atol=1e-6)


# ----------------------------------------------------------------------------- geometry
def _canonical(array, affine):
    return np.asarray(nib.as_closest_canonical(nib.Nifti1Image(array, affine)).dataobj)


@pytest.mark.parametrize(
    "affine",
    [
        LPS,
        np.array([[0, 0, -2.0, 5], [1.5, 0, 0, -3], [0, -1.0, 0, 7], [0, 0, 0, 1]]),  # permuted
    ],
    ids=["LPS", "permuted"],
)
def test_reorientation_to_ras_matches_nibabel(tmp_path, affine):
    ct, seg = phantom(shape=(12, 12, 12))
    root = write_layout(tmp_path, [FixtureVolume(ct=ct, seg=seg, affine=affine)])
    item = CTReportDataset(root, size=12)[0]
    expected_ct = np.clip((_canonical(ct, affine).astype(np.float32) + 1000) / 2000, 0, 1)
    np.testing.assert_allclose(item["image"][0].numpy(), expected_ct, atol=1e-6)
    expected_ids = TOTALSEG_TO_ANATOMY[_canonical(seg, affine)]
    np.testing.assert_array_equal(item["anatomy"].numpy(), expected_ids)


def test_lps_volume_puts_patient_left_at_low_x(tmp_path):
    ct, seg = phantom(shape=(12, 12, 12))
    seg[:] = 0
    seg[1:4, 5:7, 5:7] = TS["spleen"]  # low i in LPS = towards the patient's right
    root = write_layout(tmp_path, [FixtureVolume(ct=ct, seg=seg, affine=LPS)])
    anatomy = CTReportDataset(root, size=12)[0]["anatomy"]
    x, y, _ = torch.nonzero(anatomy == ANATOMY_ID["spleen"]).float().mean(0).tolist()
    assert x == pytest.approx(12 - 1 - 2)  # RAS: flipped along x ...
    assert y == pytest.approx(12 - 1 - 5.5)  # ... and along y


@pytest.mark.parametrize("size", [7, 31])
def test_nearest_neighbour_resize_invents_no_labels(tmp_path, size):
    rng = np.random.default_rng(1)
    shape = (19, 17, 13)
    seg = np.zeros(shape, np.uint8)
    # stripes of anatomy ids 1 and 8 side by side: any interpolation would create 2..7
    seg[:, :, 0:4] = TS["spleen"]  # anatomy 7
    seg[:, :, 4:8] = TS["lung"]  # anatomy 1
    seg[:, :, 8:13] = 3  # kidney_left -> anatomy 8
    seg[rng.random(shape) < 0.05] = TS["aorta"]
    ct = np.where(seg == TS["lung"], -1000, 40).astype(np.int16)  # air in the lung stripe
    root = write_layout(tmp_path, [FixtureVolume(ct=ct, seg=seg)])
    out = _item_ids(CTReportDataset(root, size=size)[0])
    allowed = set(TOTALSEG_TO_ANATOMY[np.unique(seg)].tolist())
    assert out <= allowed
    assert {ANATOMY_ID["spleen"], ANATOMY_ID["lung"], ANATOMY_ID["kidney"]} <= out


def test_placeholder_header_spacing_takes_the_csv_spacing(tmp_path):
    ct, seg = phantom(shape=(8, 8, 8))
    vol = FixtureVolume(ct=ct, seg=seg, affine=LPS, xy_spacing="[0.7, 0.7]", z_spacing=2.5)
    real = FixtureVolume(
        ct=ct, seg=seg, affine=np.diag([0.8, 0.8, 3.0, 1]), xy_spacing="[0.7, 0.7]"
    )
    root = write_layout(tmp_path, [vol, real])
    ds = CTReportDataset(root, size=8)
    head = build_pipeline(8).transforms[:4]  # load, channel first, check pair, spacing
    affines = []
    for rec in ds.records:
        d = {"image": str(rec.image), "anatomy": str(rec.label), "spacing": list(rec.spacing)}
        for t in head:
            d = t(d)
        affines.append(d["image"].affine.numpy())
    np.testing.assert_allclose(np.diag(affines[0])[:3], [-0.7, -0.7, 2.5])  # direction kept
    np.testing.assert_allclose(np.diag(affines[1])[:3], [0.8, 0.8, 3.0])  # real header wins


def test_min_anatomy_voxels_sets_presence(tmp_path):
    ct, seg = phantom(shape=(12, 12, 12))
    seg[:] = 0
    seg[0:3, 0, 0] = TS["aorta"]  # 3 voxels
    seg[5:10, 5:10, 5:10] = TS["liver"]
    root = write_layout(tmp_path, [FixtureVolume(ct=ct, seg=seg, report="The aorta is normal.")])
    present = CTReportDataset(root, size=12, min_anatomy_voxels=3)[0]["present"]
    assert present[ANATOMY_ID["aorta"] - 1] and present[ANATOMY_ID["liver"] - 1]
    item = CTReportDataset(root, size=12, min_anatomy_voxels=4)[0]
    assert not item["present"][ANATOMY_ID["aorta"] - 1]
    assert item["texts"][ANATOMY_ID["aorta"] - 1] == ""


# ----------------------------------------------------------------------------- layout variants
def test_fixed_folders_reconstructions_and_dataset_root(tmp_path):
    ct, seg = phantom()
    vols = [
        FixtureVolume(ct=ct, seg=seg, pid=7, recon="a_1"),
        FixtureVolume(ct=ct, seg=seg, pid=7, recon="a_2"),
        FixtureVolume(ct=ct, seg=seg, pid=8, recon="b_1"),
    ]
    root = write_layout(tmp_path, vols, "valid", fixed=True)
    assert dataset_file(root, "valid", "valid_7_a_2.nii.gz", fixed=True).is_file()
    for given in (root, root / "dataset"):
        ds = CTReportDataset(given, "valid", size=8)
        assert ds.ids == ["valid_7_a_1", "valid_7_a_2", "valid_8_b_1"]
    assert ds[2]["anatomy"].shape == (8, 8, 8)


def test_not_a_layout_names_the_expected_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset"):
        CTReportDataset(tmp_path / "nowhere")


def test_split_is_checked(tmp_path):
    with pytest.raises(ValueError, match="split"):
        CTReportDataset(tmp_path, split="test")


def test_ct_rate_labels_csv_loads_quietly_with_extras_zero(tmp_path):
    ct, seg = phantom()
    vol = FixtureVolume(ct=ct, seg=seg, labels={"Emphysema": 1})
    root = write_layout(tmp_path, [vol], label_columns=CT_RATE_LABELS)  # CT-RATE: no extras
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayoutWarning)
        ds = CTReportDataset(root, size=8)
    labels = ds[0]["labels"]
    assert labels[ALL_LABELS.index("Emphysema")] == 1 and labels.sum() == 1
    assert all(labels[ALL_LABELS.index(x)] == 0 for x in EXTRA_LABELS)


def test_missing_ct_rate_label_columns_become_zero_with_warning(tmp_path):
    ct, seg = phantom()
    vol = FixtureVolume(ct=ct, seg=seg, labels={"Emphysema": 1})
    kept = [c for c in CT_RATE_LABELS if c != "Lung nodule"]
    root = write_layout(tmp_path, [vol], label_columns=kept)
    path = str(tmp_path / "dataset" / csv_relpath("labels", "train"))
    with pytest.warns(LayoutWarning, match="Lung nodule") as record:
        ds = CTReportDataset(root, size=8)
    assert any(path in str(w.message) for w in record)
    labels = ds[0]["labels"]
    assert labels[ALL_LABELS.index("Emphysema")] == 1 and labels.sum() == 1
    assert labels[ALL_LABELS.index("Lung nodule")] == 0


# ----------------------------------------------------------------------------- bad input
def _one(tmp_path, **kwargs):
    ct, seg = phantom()
    return write_layout(tmp_path, [FixtureVolume(ct=ct, seg=kwargs.pop("seg", seg), **kwargs)])


@pytest.mark.parametrize("which", ["ct", "seg"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_file_is_named(tmp_path, which, damage):
    root = _one(tmp_path)
    path = dataset_file(root, "train", "train_1_a_1.nii.gz", seg=which == "seg")
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(gzip.compress(b"not a nifti file" * 10))
    ds = CTReportDataset(root, size=8)
    with pytest.raises(DataError, match="is not a readable NIfTI") as info:
        ds[0]
    assert str(path) in str(info.value)


def test_label_map_shape_mismatch_names_both_files(tmp_path):
    ct, _ = phantom()
    root = _one(tmp_path, seg=np.zeros((20, 18, 15), np.uint8))
    with pytest.raises(DataError, match=r"shape.*\(20, 18, 16\) vs \(20, 18, 15\)") as info:
        CTReportDataset(root, size=8)[0]
    for seg in (False, True):
        assert str(dataset_file(root, "train", "train_1_a_1.nii.gz", seg=seg)) in str(info.value)


def test_label_map_affine_mismatch_and_tolerance(tmp_path):
    affine = np.diag([0.75, 0.75, 1.5, 1.0])
    shifted = affine.copy()
    shifted[0, 3] = 1.0
    root = _one(tmp_path / "far", affine=affine, seg_affine=shifted)
    with pytest.raises(DataError, match="affine") as info:
        CTReportDataset(root, size=8)[0]
    assert "ts_seg" in str(info.value) and "1." in str(info.value)
    nudged = affine.copy()
    nudged[0, 3] = 1e-5  # float32 rounding level: accepted
    root = _one(tmp_path / "near", affine=affine, seg_affine=nudged)
    assert CTReportDataset(root, size=8)[0]["image"].shape == (1, 8, 8, 8)


@pytest.mark.parametrize("csv", ["reports", "labels", "metadata"])
def test_volume_missing_from_a_csv_is_skipped_with_warning(tmp_path, csv):
    ct, seg = phantom()
    vols = [FixtureVolume(ct=ct, seg=seg), FixtureVolume(ct=ct, seg=seg)]
    root = write_layout(tmp_path, vols, skip_csv_rows={csv: ["train_2_a_1.nii.gz"]})
    with pytest.warns(LayoutWarning, match=r"train_2_a_1\.nii\.gz has no row in") as record:
        ds = CTReportDataset(root, size=8)
    assert any(
        str(tmp_path / "dataset" / csv_relpath(csv, "train")) in str(w.message) for w in record
    )
    assert ds.ids == ["train_1_a_1"]


def test_csv_row_without_volume_is_skipped_with_warning(tmp_path):
    ct, seg = phantom()
    root = write_layout(
        tmp_path, [FixtureVolume(ct=ct, seg=seg)], extra_rows=["train_99_a_1.nii.gz"]
    )
    with pytest.warns(LayoutWarning, match=r"train_99_a_1\.nii\.gz"):
        ds = CTReportDataset(root, size=8)
    assert ds.ids == ["train_1_a_1"]


def test_missing_label_map_names_the_expected_path(tmp_path):
    ct, _ = phantom()
    root = write_layout(tmp_path, [FixtureVolume(ct=ct, seg=None)])
    expected = dataset_file(root, "train", "train_1_a_1.nii.gz", seg=True)
    with pytest.raises(FileNotFoundError, match="label map") as info:
        CTReportDataset(root)
    assert str(expected) in str(info.value)


def test_empty_report_uses_the_reports_fallback(tmp_path):
    root = _one(tmp_path, report="")
    ds = CTReportDataset(root, size=8)
    with pytest.warns(UserWarning, match="empty report"):
        item = ds[0]
    for name, text, present in zip(ANATOMY_NAMES, item["texts"], item["present"], strict=True):
        normal = ANATOMIES[ANATOMY_ID[name] - 1].normal_sentence
        assert text == (normal if present else "")
    assert not item["abnormal"].any()


def test_unknown_totalseg_ids_become_background_with_warning(tmp_path):
    ct, seg = phantom()
    seg[0:2, 0:2, 0:2] = 200
    seg[18:, 0:2, 0:2] = 118
    root = _one(tmp_path, seg=seg)
    with pytest.warns(LayoutWarning, match=r"ts_seg.*\[118, 200\]"):
        item = CTReportDataset(root, size=20)[0]
    assert _item_ids(item) <= set(range(NUM_ANATOMIES + 1))


def test_totalseg_ids_above_255_are_an_error(tmp_path):
    ct, seg = phantom()
    seg = seg.astype(np.uint16)
    seg[0, 0, 0] = 300
    root = _one(tmp_path, seg=seg)
    with pytest.raises(DataError, match=r"ts_seg.*0\.\.255.*300"):
        CTReportDataset(root, size=8)[0]


@pytest.mark.parametrize("csv", ["reports", "labels", "metadata"])
def test_missing_csv_names_the_expected_path(tmp_path, csv):
    root = _one(tmp_path)
    path = tmp_path / "dataset" / csv_relpath(csv, "train")
    path.unlink()
    with pytest.raises(FileNotFoundError, match="missing CSV") as info:
        CTReportDataset(root)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("bad", ["[0.75]", "0.75;0.75", "[a, b]", "[0.75, -1]", ""])
def test_malformed_xy_spacing_names_file_row_and_field(tmp_path, bad):
    ct, seg = phantom()
    vols = [FixtureVolume(ct=ct, seg=seg), FixtureVolume(ct=ct, seg=seg, xy_spacing=bad)]
    root = write_layout(tmp_path, vols)
    path = tmp_path / "dataset" / csv_relpath("metadata", "train")
    with pytest.raises(DataError, match="XYSpacing") as info:
        CTReportDataset(root)
    assert str(path) in str(info.value) and "row 3 (train_2_a_1.nii.gz)" in str(info.value)


def test_zero_rescale_slope_is_an_error(tmp_path):
    root = _one(tmp_path, slope=0.0)
    with pytest.raises(DataError, match="RescaleSlope"):
        CTReportDataset(root)


# ----------------------------------------------------------------------------- loading machinery
def test_collate_and_two_worker_dataloader(tmp_path):
    ct, seg = phantom()
    vols = [
        FixtureVolume(ct=ct, seg=seg, report=f"Report {i}. The heart is enlarged.")
        for i in range(4)
    ]
    root = write_layout(tmp_path, vols)
    ds = CTReportDataset(root, size=8)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 2
    b = batches[1]
    assert b["image"].shape == (2, 1, 8, 8, 8) and b["anatomy"].shape == (2, 8, 8, 8)
    assert b["present"].shape == (2, NUM_ANATOMIES) and b["present"].dtype == torch.bool
    assert b["abnormal"].shape == (2, NUM_ANATOMIES) and b["labels"].shape == (2, len(ALL_LABELS))
    assert b["id"] == ["train_3_a_1", "train_4_a_1"]
    assert len(b["texts"]) == 2 and all(len(t) == NUM_ANATOMIES for t in b["texts"])
    torch.testing.assert_close(b["image"][0], ds[2]["image"])


def test_collate_rejects_empty():
    with pytest.raises(ValueError, match="at least one"):
        collate([])


@pytest.mark.parametrize("cache", [True, "disk"])
def test_caches_return_the_same_items(tmp_path, cache):
    root = _one(tmp_path, report="The heart is enlarged.")
    plain = CTReportDataset(root, size=8)[0]
    ds = CTReportDataset(root, size=8, cache=cache)
    before = set(ds.cache_dir.glob("*.pt")) if cache == "disk" else set()
    first = ds[0]
    first["image"].zero_()  # a consumer writing into its item must not corrupt the cache
    second = ds[0]
    for key in ("image", "anatomy", "present", "abnormal", "labels"):
        torch.testing.assert_close(second[key], plain[key])
    assert second["texts"] == plain["texts"]
    if cache == "disk":
        assert len(set(ds.cache_dir.glob("*.pt")) - before) == 1  # one file for the volume
        assert "cagcl_home" in str(ds.cache_dir)  # under paths.home() (the test's home)


def test_user_transform_runs_on_the_item(tmp_path):
    root = _one(tmp_path)

    def flip(item):
        item["image"] = item["image"].flip(1)
        return item

    plain = CTReportDataset(root, size=8)[0]["image"]
    flipped = CTReportDataset(root, size=8, transform=flip)[0]["image"]
    torch.testing.assert_close(flipped, plain.flip(1))


# ----------------------------------------------------------------------------- real data
def _real_example():
    ct_img = nib.load(shared_path("totalseg_example", "example_ct_sm.nii.gz"))
    seg_img = nib.load(shared_path("totalseg_example", "example_seg.nii.gz"))
    return ct_img, seg_img


def _centroid(anatomy, name):
    return torch.nonzero(anatomy == ANATOMY_ID[name]).float().mean(0)


def test_real_totalsegmentator_example_loads_with_anatomy_and_orientation(tmp_path):
    ct_img, seg_img = _real_example()
    ct, seg = np.asarray(ct_img.dataobj), np.asarray(seg_img.dataobj)
    assert nib.aff2axcodes(ct_img.affine) == ("R", "A", "S")
    # Ground truth from the raw file: the liver lies at larger world x (RAS: the patient's right)
    # than the spleen, the lungs above the kidneys.
    world = {n: ct_img.affine[:3, :3] @ np.argwhere(seg == i).mean(0) for n, i in
             (("liver", 5), ("spleen", 1), ("lung", 11), ("kidney", 2))}  # fmt: skip
    assert world["liver"][0] > world["spleen"][0] + 100
    assert world["lung"][2] > world["kidney"][2]
    report = "The liver is of normal size. Splenomegaly is present."
    vols = [FixtureVolume(ct=ct, seg=seg, affine=ct_img.affine, report=report)]
    # the same scan stored in LPS order, as a DICOM converter might write it
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = ct.shape[0] - 1, ct.shape[1] - 1
    lps_affine = ct_img.affine @ flip
    vols.append(
        FixtureVolume(ct=ct[::-1, ::-1].copy(), seg=seg[::-1, ::-1].copy(), affine=lps_affine)
    )
    root = write_layout(tmp_path, vols, "valid")
    ds = CTReportDataset(root, "valid", size=48)
    item = ds[0]
    present = dict(zip(ANATOMY_NAMES, item["present"].tolist(), strict=True))
    for name in ("liver", "spleen", "kidney", "lung", "aorta"):
        assert present[name], name
    assert not present["heart"] and not present["trachea"]  # abdomen CT: heart outside the FOV
    anatomy = item["anatomy"]
    liver, spleen = _centroid(anatomy, "liver"), _centroid(anatomy, "spleen")
    assert liver[0] > spleen[0] + 10  # RAS axis 0: index grows towards the patient's right
    assert _centroid(anatomy, "lung")[2] > _centroid(anatomy, "kidney")[2]  # S up
    assert (
        item["abnormal"][ANATOMY_ID["spleen"] - 1] and not item["abnormal"][ANATOMY_ID["liver"] - 1]
    )
    # HU kept (slope 1, intercept 0): the liver's mean is soft tissue, well above water
    hu = item["image"][0] * 2000 - 1000
    assert 20 < hu[anatomy == ANATOMY_ID["liver"]].mean() < 150
    # the LPS copy comes out identical after reorientation to RAS
    other = ds[1]
    torch.testing.assert_close(other["anatomy"], anatomy)
    torch.testing.assert_close(other["image"], item["image"])


def test_non_numeric_label_value_names_file_row_and_column(tmp_path):
    root = _one(tmp_path)
    path = tmp_path / "dataset" / csv_relpath("labels", "train")
    path.write_text(path.read_text().replace("train_1_a_1.nii.gz,0", "train_1_a_1.nii.gz,yes", 1))
    with pytest.raises(
        DataError, match=r"row 2 \(train_1_a_1\.nii\.gz\), column 'Medical material'"
    ) as info:
        CTReportDataset(root)
    assert str(path) in str(info.value)


def test_embedded_phantom_dataset_loads_consistently(tmp_path):
    from cagcl_mini.anatomy import ABNORMALITY_BY_NAME
    from cagcl_mini.phantom.build import make_dataset

    root = make_dataset(tmp_path, n_train=3, n_valid=2, size=32, seed=0, workers=1, progress=False)
    for split, n in (("train", 3), ("valid", 2)):
        ds = CTReportDataset(root, split, size=32)
        assert len(ds) == n and ds.ids[0] == f"{split}_1_a_1"
        batch = collate([ds[i] for i in range(n)])
        assert batch["image"].shape == (n, 1, 32, 32, 32) and batch["present"].all()
        hu = batch["image"][:, 0] * 2000 - 1000
        lung, liver = (hu[batch["anatomy"] == ANATOMY_ID[a]].mean() for a in ("lung", "liver"))
        assert lung < -400 and liver > 0  # the HU survive the int16 + intercept storage
        # a positive label of an anatomy <=> the report text of that anatomy reads abnormal
        for labels, abnormal in zip(batch["labels"], batch["abnormal"], strict=True):
            expected = torch.zeros(NUM_ANATOMIES, dtype=torch.bool)
            for j in torch.nonzero(labels).flatten().tolist():
                expected[ANATOMY_ID[ABNORMALITY_BY_NAME[ALL_LABELS[j]].anatomy] - 1] = True
            assert torch.equal(abnormal, expected)


def test_float_label_maps_must_hold_integers(tmp_path):
    ct, seg = phantom()
    expected = CTReportDataset(_one(tmp_path / "u8", seg=seg), size=8)[0]["anatomy"]
    as_float = CTReportDataset(_one(tmp_path / "f32", seg=seg.astype(np.float32)), size=8)[0]
    torch.testing.assert_close(as_float["anatomy"], expected)
    broken = seg.astype(np.float32)
    broken[0, 0, 0] = 1.5
    with pytest.raises(DataError, match="non-integer"):
        CTReportDataset(_one(tmp_path / "bad", seg=broken), size=8)[0]


def test_label_table_matches_items_without_loading_volumes(tmp_path):
    from cagcl_mini.anatomy import ALL_LABELS
    from cagcl_mini.data.dataset import CTReportDataset
    from cagcl_mini.phantom.build import make_dataset

    root = make_dataset(tmp_path / "ds", n_train=6, n_valid=2, size=32, seed=3, progress=False)
    ds = CTReportDataset(root, split="train", size=32)
    table = ds.label_table()
    assert list(table.columns) == list(ALL_LABELS) and list(table.index) == ds.ids
    for i in (0, 5):
        assert table.iloc[i].to_numpy().tolist() == ds[i]["labels"].tolist()
