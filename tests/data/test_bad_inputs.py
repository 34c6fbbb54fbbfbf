"""Bad CT inputs get one line naming the file and what was expected (README's bad-input table).

Every case writes real NIfTI files with nibabel in the CT-RATE layout (tests/layout_fixtures.py)
and reads them back through :class:`CTReportDataset` (or one transform where the dataset cannot
reach the file, as for a plain ``.nii``).
"""

from __future__ import annotations

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import shared_path
from layout_fixtures import FixtureVolume, dataset_file, save_nifti, write_layout

from cagcl_mini.anatomy import NUM_ANATOMIES
from cagcl_mini.data.dataset import CTReportDataset
from cagcl_mini.data.transforms import SafeLoadImaged, hu_problem, hu_statistics
from cagcl_mini.errors import DataError, LayoutWarning
from cagcl_mini.layout import csv_relpath

NAME = "train_1_a_1.nii.gz"
TS_LIVER, TS_LUNG = 5, 10


def body(shape=(20, 18, 16), seed=0):
    """A CT in HU (air around a soft-tissue body with a lung) and its TotalSegmentator map."""
    rng = np.random.default_rng(seed)
    ct = np.full(shape, -1000, dtype=np.int16)
    ct[2:-2, 2:-2, 1:-1] = 40
    seg = np.zeros(shape, dtype=np.uint8)
    seg[3:9, 3:9, 3:-3] = TS_LUNG
    ct[3:9, 3:9, 3:-3] = -850
    seg[11:17, 4:10, 2:7] = TS_LIVER
    ct[11:17, 4:10, 2:7] = 60
    ct += rng.integers(-8, 9, size=shape).astype(np.int16)
    return ct, seg


def _write(tmp_path, split="train", fixed=False, **kwargs):
    ct, seg = body()
    vol = FixtureVolume(ct=kwargs.pop("ct", ct), seg=kwargs.pop("seg", seg), **kwargs)
    return write_layout(tmp_path, [vol], split, fixed=fixed)


def _error(root, split="train", **kwargs) -> str:
    """The one-line DataError message of loading item 0."""
    with pytest.raises(DataError) as info:
        CTReportDataset(root, split, size=8, **kwargs)[0]
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    return message


def _quiet_item(root, split="train", **kwargs):
    """Item 0, failing on any LayoutWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayoutWarning)
        return CTReportDataset(root, split, size=8, **kwargs)[0]


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "shape", [(20, 18), (20, 18, 1), (1, 18, 16), (20, 18, 5), (20, 18, 16, 2), (0, 18, 16)]
)
def test_not_a_3d_ct_volume_is_refused(tmp_path, shape):
    ct = np.full(shape, -1000, np.int16)
    root = _write(tmp_path, ct=ct, seg=np.zeros(shape, np.uint8))
    message = _error(root)
    path = dataset_file(root, "train", NAME)
    assert message.startswith(f"{path}: expected a 3-D CT volume, got shape {shape}")
    assert "at least 8 voxels" in message


def test_2d_label_map_is_named_as_the_label_map(tmp_path):
    root = _write(tmp_path, seg=np.zeros((20, 18), np.uint8))
    message = _error(root)
    seg_path = dataset_file(root, "train", NAME, seg=True)
    assert message.startswith(f"{seg_path}: expected a 3-D label map, got shape (20, 18)")


def test_trailing_singleton_axis_loads_as_the_3d_volume(tmp_path):
    ct, seg = body()
    plain = _quiet_item(_write(tmp_path / "3d"))
    as_4d = _quiet_item(_write(tmp_path / "4d", ct=ct[..., None], seg=seg[..., None]))
    torch.testing.assert_close(as_4d["image"], plain["image"])
    torch.testing.assert_close(as_4d["anatomy"], plain["anatomy"])


# ----------------------------------------------------------------------------- values
def test_non_finite_voxels_are_counted(tmp_path):
    ct, seg = body()
    ct = ct.astype(np.float32)
    ct[0, 0, :3] = np.nan
    ct[1, 1, :2] = [np.inf, -np.inf]
    message = _error(_write(tmp_path, ct=ct, seg=seg))
    path = dataset_file(tmp_path, "train", NAME)
    assert message.startswith(f"{path}: 5 of {ct.size} voxels are not finite (NaN or inf")


def test_nan_in_a_float_label_map_is_counted(tmp_path):
    ct, seg = body()
    seg = seg.astype(np.float32)
    seg[4, 4, 4] = np.nan
    message = _error(_write(tmp_path, ct=ct, seg=seg))
    seg_path = dataset_file(tmp_path, "train", NAME, seg=True)
    assert message.startswith(f"{seg_path}: 1 of {seg.size} voxels are not finite")


def test_complex_voxels_are_refused(tmp_path):
    ct, seg = body()
    message = _error(_write(tmp_path, ct=ct.astype(np.complex64), seg=seg))
    assert f"{dataset_file(tmp_path, 'train', NAME)}: voxel type complex64" in message


def test_absurd_csv_slope_gives_an_error_not_nan(tmp_path):
    ct, seg = body()
    root = _write(tmp_path, ct=ct, seg=seg, slope=1e300)
    message = _error(root, hu_check=False)
    assert "RescaleSlope 1e+300" in message and "non-finite HU" in message
    assert str(dataset_file(root, "train", NAME)) in message


# ----------------------------------------------------------------------------- label maps
def test_all_zero_label_map_warns_and_loads(tmp_path):
    ct, seg = body()
    root = _write(tmp_path, ct=ct, seg=np.zeros_like(seg))
    seg_path = dataset_file(root, "train", NAME, seg=True)
    with pytest.warns(LayoutWarning) as record:
        item = CTReportDataset(root, size=8)[0]
    messages = [str(w.message) for w in record if "no anatomy" in str(w.message)]
    assert messages == [
        f"{seg_path}: no anatomy labelled (every voxel is 0): every anatomy will be absent; "
        "is this the TotalSegmentator `total` map?"
    ]
    assert not item["present"].any() and item["texts"] == [""] * NUM_ANATOMIES
    assert item["image"].shape == (1, 8, 8, 8)


# ----------------------------------------------------------------------------- unreadable files
@pytest.mark.parametrize("which", ["ct", "seg"])
def test_random_bytes_nii_gz_is_not_a_readable_nifti(tmp_path, which):
    root = _write(tmp_path)
    path = dataset_file(root, "train", NAME, seg=which == "seg")
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    message = _error(root)
    assert message.startswith(f"{path} is not a readable NIfTI: ")
    assert "install" not in message  # not MONAI's "install the reader libraries" text


def test_random_bytes_plain_nii_is_not_a_readable_nifti(tmp_path):
    path = tmp_path / "random.nii"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(DataError) as info:
        SafeLoadImaged(("image",))({"image": str(path)})
    message = str(info.value)
    assert message.startswith(f"{path} is not a readable NIfTI: ") and "\n" not in message


def test_truncated_plain_nii_names_the_voxel_data(tmp_path):
    ct, _ = body()
    path = save_nifti(tmp_path / "ct.nii", ct, np.eye(4))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match="corrupt or truncated voxel data") as info:
        SafeLoadImaged(("image",))({"image": str(path)})
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_truncated_gzip_ct_is_not_a_readable_nifti(tmp_path):
    root = _write(tmp_path)
    path = dataset_file(root, "train", NAME)
    path.write_bytes(gzip.compress(path.read_bytes())[:300])  # a double-gzipped stub
    assert _error(root).startswith(f"{path} is not a readable NIfTI")


@pytest.mark.parametrize(
    "pixdim,why", [(np.inf, "non-finite entries"), (1e-30, "singular: a voxel size of 0")]
)
def test_unusable_header_affine_is_named(tmp_path, pixdim, why):
    # no qform/sform: the affine comes from pixdim (nibabel itself repairs pixdim 0 and negative)
    root = _write(tmp_path)
    for seg in (False, True):
        path = dataset_file(root, "train", NAME, seg=seg)
        img = nib.load(path)
        header = img.header.copy()
        header.set_qform(None, code=0)
        header.set_sform(None, code=0)
        header["pixdim"][1:4] = pixdim
        raw = header.binaryblock + b"\0" * 4 + np.asarray(img.dataobj).tobytes(order="F")
        path.write_bytes(gzip.compress(raw))
    message = _error(root)
    path = dataset_file(root, "train", NAME)
    assert message.startswith(f"{path}: the header's voxel-to-world affine is not usable ({why}")
    assert "expected finite voxel sizes > 0 (pixdim)" in message


def test_label_map_affine_mismatch_is_one_line(tmp_path):
    shifted = np.diag([0.75, 0.75, 1.5, 1.0])
    shifted[0, 3] = 5.0
    message = _error(_write(tmp_path, seg_affine=shifted))
    assert "differ in affine" in message and "vs" in message


# ----------------------------------------------------------------------------- HU sanity check
def test_correct_hu_volume_passes_quietly(tmp_path):
    item = _quiet_item(_write(tmp_path))
    assert item["image"].shape == (1, 8, 8, 8)


def test_raw_stored_values_without_rescale_are_refused(tmp_path):
    ct, seg = body()
    root = _write(tmp_path, ct=ct + 1024, seg=seg)  # raw int16 of intercept -1024, CSV says 0
    message = _error(root)
    path = dataset_file(root, "train", NAME)
    assert message.startswith(f"{path}: air (1st-percentile HU) reads ")
    assert "missing RescaleIntercept" in message and "hu_check=False" in message
    assert _quiet_item(root, hu_check=False)["image"].min() > 0.4  # air at +24 HU: mid-window


def test_double_rescale_is_refused(tmp_path):
    ct, seg = body()
    root = _write(tmp_path, ct=ct - 1024, seg=seg)  # HU given the intercept once more
    message = _error(root)
    assert message.startswith(f"{dataset_file(root, 'train', NAME)}: air (1st-percentile HU)")
    assert "rescale applied twice or a wrong intercept" in message and "`_fixed`" in message
    assert _quiet_item(root, hu_check=False)["image"].max() < 0.05  # everything below air


def test_double_rescale_with_constant_air_is_refused_by_the_body_percentile(tmp_path):
    ct, seg = body()
    ct[ct < -900] = -1000  # noiseless air: after the shift it sits at the minimum, like padding
    message = _error(_write(tmp_path, ct=ct - 1024, seg=seg))
    assert "99th percentile" in message and "rescale applied twice" in message


def test_csv_intercept_on_an_hu_volume_outside_fixed_folder_is_refused(tmp_path):
    ct, seg = body()
    root = _write(tmp_path, ct=ct, seg=seg, intercept=-1024.0)  # HU + CT-RATE's CSV intercept
    assert "rescale applied twice" in _error(root)


def test_scanner_padding_below_air_is_ignored(tmp_path):
    ct, seg = body()
    ct[:5, :5, :] = -3024  # out-of-field padding on 7% of the voxels
    ct[-5:, -5:, :] = -3024
    _quiet_item(_write(tmp_path, ct=ct, seg=seg))


def test_marginal_air_warns_and_loads(tmp_path):
    ct, seg = body()
    root = _write(tmp_path, ct=ct + 180, seg=seg)  # air at -820 HU: a calibration drift?
    path = dataset_file(root, "train", NAME)
    with pytest.warns(LayoutWarning, match="marginal") as record:
        item = CTReportDataset(root, size=8)[0]
    assert any(str(w.message).startswith(f"{path}: air (1st-percentile HU)") for w in record)
    assert item["image"].shape == (1, 8, 8, 8)


@pytest.mark.parametrize(
    "air,body_hu,expected",
    [
        (-1000.0, 300.0, None),
        (-1020.0, -450.0, None),
        (-2024.0, -600.0, "error"),
        (-9192.0, -8000.0, "error"),
        (24.0, 1100.0, "error"),
        (7192.0, 9000.0, "error"),
        (-1180.0, 200.0, "warning"),
        (-820.0, 200.0, "warning"),
        (-600.0, 200.0, "error"),
        (-1000.0, -900.0, "error"),
    ],
)
def test_hu_problem_classification(air, body_hu, expected):
    problem = hu_problem(air, body_hu)
    assert (problem[0] if problem else None) == expected


def test_hu_statistics_leave_out_padding_at_the_minimum():
    hu = np.concatenate([np.full(3000, -3024.0), np.linspace(-1000, 500, 7000)])
    air, body_hu = hu_statistics(hu)
    assert -1000 <= air < -950 and 400 < body_hu <= 500


def test_phantom_volumes_pass_the_hu_check(tmp_path):
    from cagcl_mini.phantom.build import PhantomSpec, make_dataset

    for site in ("A", "B"):
        root = make_dataset(
            tmp_path / site, PhantomSpec(2, 1, 32, 0, site=site), workers=1, progress=False
        )
        for split in ("train", "valid"):
            ds = CTReportDataset(root, split, size=16)
            with warnings.catch_warnings():
                warnings.simplefilter("error", LayoutWarning)
                for i in range(len(ds)):
                    assert torch.isfinite(ds[i]["image"]).all()


# ----------------------------------------------------------------------------- real CT, both flavours
def _real_ct():
    ct_img = nib.load(shared_path("totalseg_example", "example_ct_sm.nii.gz"))
    seg_img = nib.load(shared_path("totalseg_example", "example_seg.nii.gz"))
    return np.asarray(ct_img.dataobj), np.asarray(seg_img.dataobj), ct_img.affine


def test_real_ct_raw_and_fixed_flavours_load_the_same_hu(tmp_path):
    ct, seg, affine = _real_ct()
    assert ct.dtype == np.int16
    # original CT-RATE: raw int16 (HU + 1024), the intercept only in the metadata CSV
    raw = FixtureVolume(ct=(ct + 1024).astype(np.int16), seg=seg, affine=affine, intercept=-1024)
    # CT-RATE v2 `_fixed`: HU already, while the CSV still lists the intercept
    fixed = FixtureVolume(ct=ct, seg=seg, affine=affine, intercept=-1024)
    root_raw = write_layout(tmp_path / "raw", [raw], "valid")
    root_fixed = write_layout(tmp_path / "fixed", [fixed], "valid", fixed=True)
    a = _quiet_item(root_raw, "valid")
    b = _quiet_item(root_fixed, "valid")
    torch.testing.assert_close(a["image"], b["image"])
    torch.testing.assert_close(a["anatomy"], b["anatomy"])
    hu = a["image"] * 2000 - 1000
    assert float(torch.quantile(hu.flatten(), 0.01)) < -900  # air reads air


def test_real_ct_rescale_mistakes_are_named(tmp_path):
    ct, seg, affine = _real_ct()
    cases = {
        # a `_fixed` volume moved out of its folder: the CSV intercept is applied to HU
        "moved_fixed": (ct, -1024.0, "rescale applied twice"),
        "no_rescale": ((ct + 1024).astype(np.int16), 0.0, "missing RescaleIntercept"),
    }
    for name, (stored, intercept, cause) in cases.items():
        vol = FixtureVolume(ct=stored, seg=seg, affine=affine, intercept=intercept)
        root = write_layout(tmp_path / name, [vol], "valid")
        message = _error(root, "valid")
        assert (
            str(dataset_file(root, "valid", "valid_1_a_1.nii.gz")) in message and cause in message
        )
        assert CTReportDataset(root, "valid", size=8, hu_check=False)[0]["image"].isfinite().all()


def test_unparsable_csv_is_one_line(tmp_path):
    root = _write(tmp_path)
    path = root / "dataset" / csv_relpath("metadata", "train")
    path.write_text(path.read_text() + 'a,"b,c\n1,2,3,4,5,6,7\n')
    with pytest.raises(DataError) as info:
        CTReportDataset(root, size=8)
    message = str(info.value)
    assert message.startswith(f"cannot parse CSV {path}: ") and "\n" not in message
