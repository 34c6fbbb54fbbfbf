"""DICOM import on the real TotalSegmentator DICOM example (../shared/data/totalseg_dicom).

The series is 20 axial 512x512 slices (JPEG 2000 lossless, one file per slice); its
TotalSegmentator v2 map is a LAS-oriented NIfTI. The import must put both in RAS on the same
voxels, in HU, readable by ``CTReportDataset``; broken folders must be refused in one line.
"""

from __future__ import annotations

import shutil
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import shared_path
from scipy import ndimage

from cagcl_mini import layout
from cagcl_mini.anatomy import ANATOMY_ID, CT_RATE_LABELS
from cagcl_mini.cli.main import main
from cagcl_mini.data.dataset import CTReportDataset
from cagcl_mini.data.dicom import (
    NO_REPORT_FINDINGS,
    REGISTRY,
    import_dicom,
    import_series,
    read_series,
)
from cagcl_mini.errors import DataError, LayoutWarning

TS = {"spleen": 1, "liver": 5, "aorta": 52}  # TotalSegmentator v2 `total` ids
NAME = layout.volume_name("valid", 1)


@pytest.fixture(scope="module")
def series():
    return shared_path("totalseg_dicom", "series")


@pytest.fixture(scope="module")
def seg_map():
    return shared_path("totalseg_dicom", "example_seg_dicom.nii.gz")


@pytest.fixture(scope="module")
def imported(series, seg_map, tmp_path_factory):
    """The series and its map imported once into a fresh root (tests below only read it)."""
    root = tmp_path_factory.mktemp("dicom_root")
    ct = import_dicom(series, root, seg=seg_map)
    return root, ct


def _copy(series, tmp_path):
    target = tmp_path / "series"
    shutil.copytree(series, target)
    for path in target.iterdir():
        path.chmod(0o644)  # the shared copy is read-only
    return target


def _edit(path, **fields):
    ds = pydicom.dcmread(path)
    for key, value in fields.items():
        setattr(ds, key, value)
    ds.save_as(path)


def _arrays(root):
    ct = nib.load(layout.ct_path(root, NAME))
    seg = nib.load(layout.mask_path(root, NAME))
    return ct, seg, np.asarray(ct.dataobj).astype(np.float64), np.asarray(seg.dataobj)


# ----------------------------------------------------------------------------- the written files
def test_ct_and_map_share_shape_and_ras_affine(imported, seg_map):
    root, ct_path = imported
    assert ct_path == layout.ct_path(root, NAME)
    ct, seg, _, labels = _arrays(root)
    assert ct.shape == seg.shape == (512, 512, 20)
    assert ct.get_data_dtype() == np.int16 and seg.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(ct.affine, seg.affine)
    assert nib.aff2axcodes(ct.affine) == ("R", "A", "S")
    np.testing.assert_allclose(ct.header.get_zooms(), (0.9765625, 0.9765625, 2.0), atol=1e-6)
    assert not np.isfinite(ct.header["scl_slope"]) or ct.header["scl_slope"] in (0, 1)
    assert {TS["liver"], TS["spleen"], TS["aorta"]} <= set(np.unique(labels).tolist())
    # the map is the source map, only reoriented: same label voxels at the same world points
    source = nib.as_closest_canonical(nib.load(seg_map))
    np.testing.assert_array_equal(labels, np.asarray(source.dataobj))
    np.testing.assert_allclose(source.affine, ct.affine, atol=1e-4)


def test_csv_rows_say_hu_spacing_and_unknown_labels(imported):
    root, _ = imported
    meta = pd.read_csv(layout.csv_path(root, "metadata", "valid")).set_index("VolumeName")
    assert meta.loc[NAME, "RescaleSlope"] == 1.0 and meta.loc[NAME, "RescaleIntercept"] == 0.0
    assert meta.loc[NAME, "XYSpacing"] == "[0.976562, 0.976562]"
    assert meta.loc[NAME, "ZSpacing"] == 2.0
    labels = pd.read_csv(layout.csv_path(root, "labels", "valid")).set_index("VolumeName")
    assert list(labels.columns) == list(CT_RATE_LABELS) and (labels.loc[NAME] == 0).all()
    reports = pd.read_csv(layout.csv_path(root, "reports", "valid")).set_index("VolumeName")
    assert reports.loc[NAME, "Findings_EN"] == NO_REPORT_FINDINGS
    registry = pd.read_csv(root / REGISTRY)
    assert registry["VolumeName"].tolist() == [NAME]


def test_hu_values_and_voxel_alignment(imported):
    root, _ = imported
    ct, _, hu, labels = _arrays(root)
    liver, aorta, spleen = (labels == TS[k] for k in ("liver", "aorta", "spleen"))
    liver_hu, aorta_hu, air_hu = hu[liver].mean(), hu[aorta].mean(), hu[0, 0, 0]
    print(f"measured: liver {liver_hu:.1f} HU, aorta {aorta_hu:.1f} HU, air corner {air_hu:.0f} HU")
    assert 80 < liver_hu < 100  # enhanced liver parenchyma
    assert 160 < aorta_hu < 195  # contrast-filled aorta
    assert air_hu < -1000  # air outside the body (the scanner's -1024 floor)

    # Voxel for voxel: the organ is brighter than the voxels just outside it, and moving the map
    # by 3 voxels (about 3 mm) in either in-plane direction makes the aorta's mean HU drop.
    ring = np.zeros((3, 3, 3), bool)
    ring[:, :, 1] = True
    for name, mask, margin in (("liver", liver, 50), ("aorta", aorta, 100)):
        shell = ndimage.binary_dilation(mask, ring, iterations=3) & ~mask
        print(f"{name}: inside {hu[mask].mean():.1f} HU, 3-voxel shell {hu[shell].mean():.1f} HU")
        assert hu[mask].mean() - hu[shell].mean() > margin
    shifted = [hu[np.roll(aorta, k, axis)].mean() for axis in (0, 1) for k in (-3, 3)]
    print(f"aorta mean with the map shifted by 3 voxels: {np.round(shifted, 1).tolist()}")
    assert aorta_hu - max(shifted) > 5

    # RAS in world coordinates: the liver lies to the patient's right of the spleen.
    def world_x(mask):
        return (ct.affine @ np.r_[np.argwhere(mask).mean(axis=0), 1.0])[0]

    assert world_x(liver) - world_x(spleen) > 100


def test_loader_reads_the_import(imported):
    root, _ = imported
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayoutWarning)
        ds = CTReportDataset(root, "valid", size=64)
    assert ds.volume_names == [NAME]
    item = ds[0]
    assert item["image"].shape == (1, 64, 64, 64)
    for name in ("liver", "spleen", "aorta"):
        assert bool(item["present"][ANATOMY_ID[name] - 1]), name
    assert item["report"] == NO_REPORT_FINDINGS and not item["labels"].any()
    # in the HU window (-1000, 1000) -> [0, 1]: liver about 0.54, the air corner 0
    liver = item["anatomy"] == ANATOMY_ID["liver"]
    print(
        f"loader: liver {item['image'][0][liver].mean():.3f}, corner {item['image'][0, 0, 0, 0]:.3f}"
    )
    assert 0.5 < item["image"][0][liver].mean() < 0.56 and item["image"][0, 0, 0, 0] < 0.01


def test_read_series_sorts_by_position_not_file_name(series):
    hu, affine = read_series(series)
    assert hu.dtype == np.int16 and hu.shape == (512, 512, 20)
    # slice k of the RAS array lies at z = origin + 2 k mm; the lowest slice position is -804.5
    assert affine[2, 3] == pytest.approx(-804.5) and affine[2, 2] == pytest.approx(2.0)
    first = pydicom.dcmread(sorted(series.iterdir())[0])  # the highest slice, by file name
    raw = first.pixel_array.astype(np.float64) * float(first.RescaleSlope)
    expected = (raw + float(first.RescaleIntercept)).T[::-1, ::-1]  # LPS rows/columns -> RAS
    np.testing.assert_array_equal(hu[:, :, -1], expected)


# ----------------------------------------------------------------------------- re-running
def test_identical_reimport_is_a_noop(imported, series, seg_map):
    root, ct_path = imported
    stamp = ct_path.stat().st_mtime_ns
    result = import_series(series, root, seg=seg_map)
    assert result.name == NAME and result.written == ()
    assert ct_path.stat().st_mtime_ns == stamp
    # the dataset/ folder itself names the same root
    assert import_series(series, root / "dataset", seg=seg_map).written == ()


def test_reimport_with_other_content_is_refused_naming_the_volume(imported, series):
    root, ct_path = imported
    before = ct_path.read_bytes()
    reports = layout.csv_path(root, "reports", "valid").read_bytes()
    with pytest.raises(FileExistsError, match=rf"{NAME} already exists.*reports row.*overwrite"):
        import_series(series, root, report="The liver is enlarged.")
    assert ct_path.read_bytes() == before
    assert layout.csv_path(root, "reports", "valid").read_bytes() == reports


def test_import_without_a_map_says_one_is_needed(series, tmp_path):
    with pytest.warns(LayoutWarning, match=r"no TotalSegmentator map at .*totalseg-masks --dest"):
        ct = import_dicom(series, tmp_path, pid=3, report="No acute findings.")
    assert ct == layout.ct_path(tmp_path, layout.volume_name("valid", 3))
    assert ct.is_file() and not layout.mask_path(tmp_path, ct.name).exists()
    with pytest.raises(FileNotFoundError, match="TotalSegmentator"):  # the loader needs the map
        CTReportDataset(tmp_path, "valid", size=8)


# ----------------------------------------------------------------------------- refused folders
def test_mixed_series_is_refused(series, tmp_path):
    folder = _copy(series, tmp_path)
    odd = sorted(folder.iterdir())[7]
    _edit(odd, SeriesInstanceUID=pydicom.uid.generate_uid())
    with pytest.raises(DataError, match=r"mixed series in .*: found 2 series") as info:
        read_series(folder)
    assert "\n" not in str(info.value)


def test_missing_slice_is_refused_naming_the_gap(series, tmp_path):
    folder = _copy(series, tmp_path)
    files = sorted(folder.iterdir())
    files[10].unlink()
    with pytest.raises(DataError, match=r"missing slice \(1 absent\)") as info:
        read_series(folder)
    message = str(info.value)
    assert "gap of 4 mm" in message and "expected the spacing 2 mm" in message
    assert files[9].name in message and files[11].name in message


def test_non_ct_modality_is_refused(series, tmp_path):
    folder = _copy(series, tmp_path)
    for path in folder.iterdir():
        _edit(path, Modality="MR")
    with pytest.raises(DataError, match=r"Modality is 'MR', expected 'CT'"):
        read_series(folder)


def test_folder_without_dicom_files_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no DICOM files in .*empty"):
        read_series(empty)
    (empty / "README.txt").write_text("not a DICOM file")
    with pytest.raises(DataError, match=r"no DICOM files .*1 other file\(s\) skipped"):
        read_series(empty)


def test_a_map_of_another_geometry_is_refused_naming_both_files(series, seg_map, tmp_path):
    src = nib.load(seg_map)
    cropped = nib.Nifti1Image(np.asarray(src.dataobj)[:, :, 1:], src.affine, src.header)
    bad = tmp_path / "other_seg.nii.gz"
    nib.save(cropped, bad)
    with pytest.raises(DataError, match=r"do not line up in RAS: shape") as info:
        import_series(series, tmp_path / "root", seg=bad)
    assert str(bad) in str(info.value) and str(series) in str(info.value)
    assert not (tmp_path / "root" / "dataset").exists()


# ----------------------------------------------------------------------------- the command
def test_cli_imports_refuses_a_different_volume_and_overwrites(series, tmp_path, capsys):
    root = tmp_path / "root"
    assert main(["import-dicom", str(series), "--out", str(root), "--report", "Liver normal."]) == 0
    captured = capsys.readouterr()
    assert f"as {NAME}" in captured.out
    assert "totalseg-masks --dest" in captured.err and "note:" in captured.err
    reports = pd.read_csv(layout.csv_path(root, "reports", "valid")).set_index("VolumeName")
    assert reports.loc[NAME, "Findings_EN"] == "Liver normal."
    assert not layout.mask_path(root, NAME).exists()

    other = _copy(series, tmp_path)  # the same slices, 10 HU brighter: a different volume
    for path in other.iterdir():
        ds = pydicom.dcmread(path)
        _edit(path, RescaleIntercept=float(ds.RescaleIntercept) + 10)
    assert main(["import-dicom", str(other), "--out", str(root)]) == 0  # next free id
    assert "valid_2_a_1.nii.gz" in capsys.readouterr().out

    assert main(["import-dicom", str(other), "--out", str(root), "--pid", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cagcl-mini import-dicom: error: {NAME} already exists")
    assert err.count("\n") == 1 and "--overwrite" in err

    first = np.asarray(nib.load(layout.ct_path(root, NAME)).dataobj)
    args = ["import-dicom", str(other), "--out", str(root), "--pid", "1", "--overwrite"]
    assert main(args) == 0
    capsys.readouterr()
    second = np.asarray(nib.load(layout.ct_path(root, NAME)).dataobj)
    np.testing.assert_array_equal(second.astype(np.int32), first.astype(np.int32) + 10)

    assert main(["import-dicom", str(tmp_path / "nowhere"), "--out", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cagcl-mini import-dicom: error: DICOM series folder")
    assert err.count("\n") == 1
