"""cagcl_mini.layout: CT-RATE names and paths, written once for the phantom, loader and fetchers."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from cagcl_mini import layout


def test_volume_names_are_checked():
    assert layout.volume_relpath("train_3_b_2.nii.gz", "train_fixed") == PurePosixPath(
        "train_fixed/train_3/train_3_b/train_3_b_2.nii.gz"
    )
    assert layout.parse_volume_name("valid_12_a_3") == ("valid", 12, "a", 3)
    for bad in ("test_1_a_1.nii.gz", "train_x_a_1.nii.gz", "train_1.nii.gz"):
        with pytest.raises(ValueError, match="not of the form"):
            layout.parse_volume_name(bad)


def test_ct_rates_inconsistent_file_names():
    assert layout.csv_relpath("reports", "valid") == PurePosixPath(
        "radiology_text_reports/validation_reports.csv"
    )
    assert layout.csv_relpath("labels", "valid") == PurePosixPath(
        "multi_abnormality_labels/valid_predicted_labels.csv"
    )
    assert layout.csv_relpath("metadata", "train") == PurePosixPath("metadata/train_metadata.csv")
    with pytest.raises(ValueError, match="unknown CSV kind 'notes'"):
        layout.csv_relpath("notes", "train")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        layout.csv_relpath("reports", "test")


def test_paths_under_a_root():
    root = Path("/data/ct")
    name = layout.volume_name("valid", 7)
    assert name == "valid_7_a_1.nii.gz" and layout.volume_id(name) == "valid_7_a_1"
    assert layout.ct_path(root, name) == root / "dataset/valid/valid_7/valid_7_a/valid_7_a_1.nii.gz"
    assert layout.mask_path(root, name) == (
        root / "dataset/ts_seg/ts_total/valid/valid_7/valid_7_a/valid_7_a_1.nii.gz"
    )
    assert layout.ct_path(root, name, "valid_fixed").parts[-4] == "valid_fixed"
    assert layout.split_folders("train") == ("train_fixed", "train")


def test_natural_order():
    names = ["valid_10_a_1", "valid_2_a_1", "valid_1_b_1", "valid_1_a_2"]
    assert sorted(names, key=layout.natural_key) == [
        "valid_1_a_2", "valid_1_b_1", "valid_2_a_1", "valid_10_a_1"
    ]  # fmt: skip
    # mixed shapes compare without a TypeError (numbers and words never meet)
    assert sorted(["a1", "1a", "b"], key=layout.natural_key) == ["1a", "a1", "b"]


def test_resolve_dataset_dir(tmp_path):
    (tmp_path / "dataset" / "metadata").mkdir(parents=True)
    assert layout.resolve_dataset_dir(tmp_path) == tmp_path / "dataset"
    assert layout.resolve_dataset_dir(tmp_path / "dataset") == tmp_path / "dataset"
    with pytest.raises(FileNotFoundError, match="no CT-RATE layout"):
        layout.resolve_dataset_dir(tmp_path / "elsewhere")


def test_spacing_columns():
    assert layout.spacing_columns((0.75, 0.75, 1.5)) == {
        "XYSpacing": "[0.75, 0.75]",
        "ZSpacing": 1.5,
    }
