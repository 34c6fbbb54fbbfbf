"""Fuzz the loader: broken NIfTI headers, shapes, dtypes, values and metadata CSV fields.

Each hypothesis example writes one CT-RATE-layout volume (nibabel for the NIfTI files, with the
header fields patched after nibabel's own checks; pandas for the CSVs) into a fresh temporary
folder and loads it. The loader must either raise a one-line :class:`DataError` naming a file under
that folder, or return a valid item: a finite float image in [0, 1] and an integer anatomy map of
catalog ids. Any other exception, or a NaN, is a bug in the loader.
"""

from __future__ import annotations

import gzip
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from layout_fixtures import FixtureVolume, dataset_file, write_layout

from cagcl_mini.anatomy import NUM_ANATOMIES
from cagcl_mini.data.dataset import CTReportDataset
from cagcl_mini.errors import DataError
from cagcl_mini.layout import csv_relpath

EDGE = 12
NAME = "train_1_a_1.nii.gz"
SHAPES = [
    (EDGE, EDGE, EDGE),
    (EDGE, EDGE + 2, EDGE - 2),
    (EDGE, EDGE),
    (0, EDGE, EDGE),
    (EDGE, EDGE, EDGE, 1),
    (EDGE, EDGE, EDGE, 2),
    (EDGE, EDGE, 1),
    (EDGE, 5, EDGE),
]
CT_DTYPES = ["int16", "uint16", "int8", "uint8", "float32", "float64", "bool", "complex64"]
SEG_DTYPES = ["uint8", "int16", "uint16", "float32", "float64", "bool"]
VALUES = ["ct", "ct_raw", "nan", "inf", "huge", "constant", "random"]
SEG_VALUES = ["organs", "zeros", "nan", "unknown_ids", "negative", "non_integer", "huge"]
HEADERS = [
    "plain",
    "pixdim_0",
    "pixdim_negative",
    "pixdim_nan",
    "pixdim_inf",
    "pixdim_tiny",
    "pixdim_huge",
    "qform_garbage",
    "sform_nan",
    "sform_zero",
    "scl_nan",
    "scl_zero",
    "scl_huge",
]
SLOPES = [1.0, 1, "abc", "", 0, float("nan"), 2.0, 1e300, -1.0]
INTERCEPTS = [0.0, -1024.0, -8192, "x", "", float("inf"), 1e300]
XY = ["[0.75, 0.75]", "[1, x]", "", "[0, 1]", "[0.75]", "[1e400, 1]", "(0.5 0.5)"]
Z = [1.5, "nan", -1, 0, "2.0", "abc"]
COLUMNS = [None, "XYSpacing", "ZSpacing", "RescaleSlope", "RescaleIntercept"]


def _ct(shape, dtype, values, rng):
    """The stored CT array: HU-like or raw-like values, or broken ones, cast to ``dtype``."""
    n = int(np.prod(shape))
    if values in ("ct", "ct_raw"):
        hu = np.full(n, -1000.0)
        hu[n // 3 :] = 40.0 + rng.normal(0, 10, n - n // 3)
        arr = hu + (1024.0 if values == "ct_raw" else 0.0)
    elif values == "constant":
        arr = np.full(n, 7.0)
    elif values == "random":
        arr = rng.uniform(-3000, 3000, n)
    else:
        arr = rng.uniform(-1000, 1000, n)
        if values == "huge":
            arr[::2] = 1e300
        elif n:
            arr[:: max(1, n // 5)] = np.nan if values == "nan" else np.inf
    arr = arr.reshape(shape)
    if dtype == "bool":
        return arr > 0
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        arr = np.nan_to_num(arr, nan=0, posinf=info.max, neginf=info.min)
        return np.clip(arr, info.min, info.max).astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(dtype)


def _seg(shape, dtype, values, rng):
    """The stored TotalSegmentator map, maybe broken."""
    arr = np.zeros(shape, dtype=np.float64)
    flat = arr.reshape(-1)
    if values != "zeros" and flat.size:
        flat[flat.size // 4 : flat.size // 2] = 5  # liver
        flat[flat.size // 2 : flat.size // 2 + flat.size // 8] = 10  # lung
        if values == "nan":
            flat[0] = np.nan
        elif values == "unknown_ids":
            flat[1:4] = [118, 200, 255]
        elif values == "negative":
            flat[0] = -3
        elif values == "non_integer":
            flat[0] = 1.5
        elif values == "huge":
            flat[0] = 1e30
    if dtype == "bool":
        return arr > 0
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.nan_to_num(arr), info.min, info.max).astype(dtype)
    return arr.astype(dtype)


def _write_nifti(path: Path, array: np.ndarray, header_case: str, rng) -> None:
    """Write ``array`` with nibabel, then patch the header fields nibabel would not let through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = array.astype(np.uint8) if array.dtype == np.bool_ else array  # nibabel refuses bool
    image = nib.Nifti1Image(data, np.diag([0.75, 0.75, 1.5, 1.0]))
    image.set_data_dtype(data.dtype)
    image.update_header()
    header = image.header.copy()
    kind, _, how = header_case.partition("_")
    if kind == "pixdim":
        value = {"0": 0.0, "negative": -2.0, "nan": np.nan, "inf": np.inf}.get(how)
        value = {"tiny": 1e-30, "huge": 1e38}.get(how, value)
        header.set_qform(None, code=0)
        header.set_sform(None, code=0)
        header["pixdim"][1:4] = value
    elif header_case == "qform_garbage":
        header.set_sform(None, code=0)
        header["qform_code"] = 1
        for field in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x"):
            header[field] = rng.choice([np.nan, 5.0, -7.0, 1e30])
    elif kind == "sform":
        header.set_qform(None, code=0)
        header["sform_code"] = 2
        header["srow_x"] = [np.nan, 0, 0, 0] if how == "nan" else [0, 0, 0, 0]
    elif kind == "scl":
        header["scl_slope"] = {"nan": np.nan, "zero": 0.0, "huge": 1e38}[how]
        header["scl_inter"] = -1024.0
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4 + np.asarray(data).tobytes(order="F")
    path.write_bytes(gzip.compress(raw, mtime=0))


def _mostly(good, options):
    """``good`` in about 60% of the examples, otherwise any of ``options``."""
    return st.one_of(st.just(good), st.just(good), st.sampled_from(options))


GOOD_CSV = {"xy": "[0.75, 0.75]", "z": 1.5, "slope": 1.0, "intercept": 0.0}
BAD_CSV = {"xy": XY, "z": Z, "slope": SLOPES, "intercept": INTERCEPTS}
# about one example in four breaks one metadata field (or drops a column); the others test the NIfTI
csv_edits = st.one_of(
    st.just({}),
    st.just({}),
    st.just({}),
    st.sampled_from(sorted(BAD_CSV)).flatmap(
        lambda key: st.sampled_from(BAD_CSV[key]).map(lambda value: {key: value})
    ),
    st.sampled_from(COLUMNS[1:]).map(lambda column: {"drop_column": column}),
)
cases = st.fixed_dictionaries(
    {
        "shape": _mostly(SHAPES[0], SHAPES),
        "seg_shape_same": _mostly(True, [False]),
        "ct_dtype": _mostly("int16", CT_DTYPES),
        "seg_dtype": _mostly("uint8", SEG_DTYPES),
        "values": _mostly("ct", VALUES),
        "seg_values": _mostly("organs", SEG_VALUES),
        "header": _mostly("plain", HEADERS),
        "seg_header": _mostly("plain", HEADERS),
        "csv": csv_edits,
        "hu_check": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


def _kind(message: str, folder: Path) -> str:
    """A short label of a DataError message for hypothesis' statistics."""
    text = message.replace(str(folder), "")
    return " ".join(w for w in text.split()[:6] if not w.startswith("/"))[:50]


def _check_one(case: dict, folder: Path) -> str:
    """Write and load one case; return "item" or "DataError: <kind>" (asserting what each must
    satisfy)."""
    rng = np.random.default_rng(case["seed"])
    shape = case["shape"]
    seg_shape = shape if case["seg_shape_same"] else (EDGE, EDGE, EDGE)
    ct = _ct(shape, case["ct_dtype"], case["values"], rng)
    seg = _seg(seg_shape, case["seg_dtype"], case["seg_values"], rng)
    # write_layout lays out the folders and CSVs; the NIfTI files are then rewritten broken
    root = write_layout(folder, [FixtureVolume(ct=np.zeros((2, 2, 2), np.int16), seg=None)])
    _write_nifti(dataset_file(root, "train", NAME), ct, case["header"], rng)
    _write_nifti(dataset_file(root, "train", NAME, seg=True), seg, case["seg_header"], rng)
    meta_path = root / "dataset" / csv_relpath("metadata", "train")
    meta = pd.read_csv(meta_path, dtype=str)
    fields = {**GOOD_CSV, **case["csv"]}
    meta.loc[0, ["XYSpacing", "ZSpacing", "RescaleSlope", "RescaleIntercept"]] = [
        str(fields[k]) for k in ("xy", "z", "slope", "intercept")
    ]
    if fields.get("drop_column"):
        meta = meta.drop(columns=[fields["drop_column"]])
    meta.to_csv(meta_path, index=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LayoutWarnings are allowed; errors are the point
            ds = CTReportDataset(root, size=8, hu_check=case["hu_check"])
            item = ds[0]
    except DataError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        assert str(folder) in message, message  # names the file (CSV or volume) at fault
        return f"DataError: {_kind(message, folder)}"
    image, anatomy = item["image"], item["anatomy"]
    assert image.dtype == torch.float32 and image.shape == (1, 8, 8, 8)
    assert torch.isfinite(image).all() and 0.0 <= image.min() and image.max() <= 1.0
    assert anatomy.dtype == torch.long and anatomy.shape == (8, 8, 8)
    assert 0 <= anatomy.min() and anatomy.max() <= NUM_ANATOMIES
    assert item["present"].dtype == torch.bool and torch.isfinite(item["labels"]).all()
    return "item"


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases)
def test_loader_gives_a_valid_item_or_a_one_line_data_error(case):
    with tempfile.TemporaryDirectory() as folder:
        event(_check_one(case, Path(folder)))


def test_fuzz_generator_reaches_both_outcomes():
    """The fuzzer is not vacuous: a clean case loads and a broken one is refused."""
    clean = {
        "shape": (EDGE, EDGE, EDGE),
        "seg_shape_same": True,
        "ct_dtype": "int16",
        "seg_dtype": "uint8",
        "values": "ct",
        "seg_values": "organs",
        "header": "plain",
        "seg_header": "plain",
        "csv": {},
        "hu_check": True,
        "seed": 0,
    }
    with tempfile.TemporaryDirectory() as folder:
        assert _check_one(clean, Path(folder)) == "item"
    with tempfile.TemporaryDirectory() as folder:
        outcome = _check_one({**clean, "values": "nan", "ct_dtype": "float32"}, Path(folder))
    assert outcome == "DataError: 6 of 1728 voxels are"  # every 345th voxel NaN
