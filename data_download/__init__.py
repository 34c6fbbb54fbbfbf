"""Real-data fetchers that write the CT-RATE layout ``cagcl_mini.data.dataset`` reads.

Sources (``python -m data_download SOURCE --help``):
- ``totalseg-example``: the TotalSegmentator example CT + v2 label map (public, ~1 MB);
- ``ct-rate``: the gated Hugging Face dataset ibrahimhamamci/CT-RATE (token, terms);
- ``rad-chestct``: the RAD-ChestCT Zenodo record (access on request, token);
- ``totalseg-masks``: run TotalSegmentator (optional dependency) on volumes lacking masks.

Every download is resumable, verified (size, sha256 or md5 where known), written under a
temporary name and renamed into place; tokens are never printed or logged, and never sent over
plain http except to this machine (localhost, 127.0.0.0/8, ::1).
"""

from __future__ import annotations

from data_download.ct_rate import download_ct_rate
from data_download.errors import (
    AccessDeniedError,
    ChecksumError,
    DestinationError,
    DownloadError,
    InsecureTransportError,
    MissingDependencyError,
    RemoteNotFoundError,
)
from data_download.rad_chestct import download_rad_chestct
from data_download.summary import DownloadReport
from data_download.totalseg_example import download_totalseg_example
from data_download.totalseg_masks import make_totalseg_masks

__all__ = [
    "AccessDeniedError",
    "ChecksumError",
    "DestinationError",
    "DownloadError",
    "DownloadReport",
    "InsecureTransportError",
    "MissingDependencyError",
    "RemoteNotFoundError",
    "download_ct_rate",
    "download_rad_chestct",
    "download_totalseg_example",
    "make_totalseg_masks",
]
