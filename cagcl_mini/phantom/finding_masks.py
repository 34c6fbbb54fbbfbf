"""Finding masks: which voxels of a phantom volume show a lesion, a nodule, a cyst or an effusion.

The phantom knows where it painted each finding, so it can write a segmentation target beside the
TotalSegmentator-style anatomy map, as a real dataset would with a radiologist's outlines. One
``uint8`` NIfTI per volume (the CT's shape and affine)::

    dataset/ts_seg/findings/<split>/<split>_<pid>/<split>_<pid>_a/<split>_<pid>_a_1.nii.gz
    dataset/ts_seg/findings/labels.json            the label table: {"0": "background", "1": ...}

Voxel values follow :data:`FINDING_MASK_LABELS` (0 background, 1.. one per finding kind). A voxel
belongs to a finding when that finding's painter changed its HU, before the scanner's noise and
blur (the outline, not the blurred edge). When two masked findings overlap, the one painted later
(catalog order) keeps the voxel; other findings never clear a label.

Only these four kinds are masked: they are localised objects with an outline. The diffuse findings
(emphysema, mosaic attenuation, steatosis) and the ones drawn as changes of an organ's shape
(cardiomegaly, pericardial effusion, splenomegaly) have no natural mask in this phantom.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cagcl_mini import layout
from cagcl_mini.fileio import atomic_write_bytes, sha256

# Label ids of the masked findings, in catalog order (ALL_LABELS), 0 is background.
FINDING_MASK_LABELS: dict[str, int] = {
    "Lung nodule": 1,
    "Pleural effusion": 2,
    "Liver lesion": 3,
    "Renal cyst": 4,
}
# The short kind of each masked finding (what the segmentation task calls it).
FINDING_MASK_KINDS: dict[str, str] = {
    "nodule": "Lung nodule",
    "effusion": "Pleural effusion",
    "lesion": "Liver lesion",
    "cyst": "Renal cyst",
}


def label_table() -> dict[int, str]:
    """The mask's label table: 0 ``background``, then each masked finding's catalog name."""
    return {0: "background", **{v: k for k, v in FINDING_MASK_LABELS.items()}}


def finding_label(finding: str) -> int:
    """The mask label of a masked finding, by catalog name or short kind (``"lesion"``)."""
    name = FINDING_MASK_KINDS.get(finding, finding)
    if name not in FINDING_MASK_LABELS:
        kinds = ", ".join(f"{k!r} ({v})" for k, v in FINDING_MASK_KINDS.items())
        raise ValueError(f"finding {finding!r} has no mask; masked findings are {kinds}")
    return FINDING_MASK_LABELS[name]


def finding_mask_file(name: str) -> str:
    """The finding mask of volume ``name`` below the dataset root (what the manifest lists)."""
    return f"{layout.DATASET_FOLDER}/{layout.finding_mask_relpath(name)}"


# ----------------------------------------------------------------------------- writing
def label_table_bytes() -> bytes:
    """The reproducible bytes of ``labels.json``."""
    table = {"format": "cagcl-mini finding masks (uint8)", "labels": label_table()}
    return (json.dumps(table, indent=1, sort_keys=True) + "\n").encode()


def write_label_table(root: Path, tmp_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Write ``labels.json`` under a dataset root (the folder holding ``dataset/``) atomically;
    returns its manifest record ``{relative path: {bytes, sha256}}``."""
    path = layout.finding_labels_path(root)
    data = label_table_bytes()
    atomic_write_bytes(path, data, tmp_dir)
    return {path.relative_to(root).as_posix(): {"bytes": len(data), "sha256": sha256(data)}}
