"""Reproducible bytes for the phantom dataset: NIfTI.gz and CSV files.

Reproducible means the same arrays give the same bytes on every run (with the same zlib): the gzip
header carries no file name and mtime 0, CSVs are written with fixed number formatting and ``\\n``
line ends. Writing them to disk atomically is :mod:`cagcl_mini.fileio`'s job.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Sequence

import nibabel as nib
import numpy as np

GZIP_LEVEL = 1
# Run-length deflate: label maps compress to ~4% and CT to ~62% of their size, in a third less time
# than level-1 default deflate (noisy int16 has few long matches to find anyway).
GZIP_STRATEGY = zlib.Z_RLE


def gzip_bytes(raw: bytes, level: int = GZIP_LEVEL, strategy: int = GZIP_STRATEGY) -> bytes:
    """A gzip member of ``raw`` with mtime 0 and no file name (so identical input, identical bytes)."""
    c = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, strategy)
    return c.compress(raw) + c.flush()


def nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """An uncompressed single-file NIfTI-1 (.nii) of ``data`` with an RAS+ ``affine``.

    sform and qform carry the affine (code 1, scanner). The header's ``scl_slope``/``scl_inter``
    stay unset (NaN), as in CT-RATE: the stored integers are not HU until the metadata CSV's
    RescaleSlope/RescaleIntercept are applied. Equivalent to nibabel's ``to_bytes`` without its
    slice-by-slice copy (and with explicit NaN scaling where nibabel writes 1/0).
    """
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_data_dtype(data.dtype)
    hdr.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    hdr.set_slope_inter(np.nan, np.nan)
    hdr["vox_offset"] = 352  # 348-byte header + 4-byte "no extensions" flag
    return hdr.binaryblock + b"\0\0\0\0" + np.asarray(data).tobytes(order="F")


def nifti_gz_bytes(data: np.ndarray, affine: np.ndarray, level: int = GZIP_LEVEL) -> bytes:
    """A reproducible .nii.gz file's bytes (see :func:`nifti_bytes` and :func:`gzip_bytes`)."""
    return gzip_bytes(nifti_bytes(data, affine), level)


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    """CSV (RFC 4180 quoting, ``\\n`` line ends, UTF-8) of already formatted string cells."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def fmt_float(x: float) -> str:
    """Shortest round-trip text of a float, never ``-0.0``."""
    return repr(float(x) + 0.0)
