"""Planning a phantom volume: which findings, the patient, its report, labels and metadata rows.

A plan is everything about a volume except its voxels. It is cheap (no rendering), so the dataset
builder plans every volume in the main process, writes the CSVs from the plans, and hands the plans
to worker processes that render and write the NIfTI files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields, replace
from typing import Any, cast

import numpy as np

from cagcl_mini import layout
from cagcl_mini.anatomy import ALL_LABELS, ANATOMIES
from cagcl_mini.phantom.finding_masks import FINDING_MASK_LABELS
from cagcl_mini.phantom.findings import DIFFICULTIES, TUTORIAL, FindingSpec
from cagcl_mini.phantom.io import fmt_float
from cagcl_mini.phantom.render import (
    STREAM_NEGATIVES,
    STREAM_PLAN,
    RenderedVolume,
    affine_for,
    body_for,
    child,
    render_volume,
    spec_for,
)
from cagcl_mini.phantom.reports import (
    clinical_text,
    findings_text,
    impression_text,
    labels_only_report,
    technique_text,
)
from cagcl_mini.phantom.sites import SITES, TRANSFER_TRAIN
from cagcl_mini.phantom.sites import site as get_site

PHANTOM_VERSION = 4  # bump whenever the bytes a seed produces change
STREAM_CITATIONS = 7  # which findings the report cites by slice (render.py's streams are 0-6)
P_CITE = 0.4  # a masked finding's sentence cites its slice, "(series 2, image N)"
CITED_SERIES = 2  # the series number the citations name (CT-RATE's axial series)
METADATA_COLUMNS = (
    "VolumeName", "Manufacturer", "ManufacturerModelName", "PatientSex", "PatientAge", "Rows",
    "Columns", "NumberofSlices", "XYSpacing", "ZSpacing", "RescaleSlope", "RescaleIntercept",
    "ImagePositionPatient", "ImageOrientationPatient",
)  # fmt: skip
INTERCEPTS = SITES["A"].intercepts

# Prevalence: a volume is fully normal with P_HEALTHY; otherwise an anatomy stays normal with
# P_ORGAN_NORMAL (so normal lungs and hearts are common), and each finding of an abnormal-able
# anatomy appears independently, tuned so each finding's overall prevalence is PREVALENCE.
P_HEALTHY = 0.15
P_ORGAN_NORMAL = {"lung": 0.4, "heart": 0.4, "liver": 0.25}
PREVALENCE = {
    "Medical material": 0.15, "Arterial wall calcification": 0.3, "Cardiomegaly": 0.2,
    "Pericardial effusion": 0.15, "Coronary artery wall calcification": 0.28,
    "Hiatal hernia": 0.18, "Lymphadenopathy": 0.25, "Emphysema": 0.25, "Atelectasis": 0.25,
    "Lung nodule": 0.3, "Lung opacity": 0.25, "Pulmonary fibrotic sequela": 0.25,
    "Pleural effusion": 0.2, "Mosaic attenuation pattern": 0.15, "Peribronchial thickening": 0.18,
    "Consolidation": 0.2, "Bronchiectasis": 0.15, "Interlobular septal thickening": 0.15,
    "Hepatic steatosis": 0.25, "Liver lesion": 0.2, "Splenomegaly": 0.18, "Renal cyst": 0.25,
}  # fmt: skip
assert set(PREVALENCE) == set(ALL_LABELS)


_SPEC_MINIMUM = {"n_train": 1, "n_valid": 1, "size": 32, "seed": 0}


@dataclass(frozen=True)
class PhantomSpec:
    """What the embedded dataset builder makes; the defaults are the tutorial's dataset.

    Recorded in the dataset's manifest, so a folder built with other values is rebuilt.
    """

    n_train: int = 240  # training volumes
    n_valid: int = 300  # validation volumes (enough positives per finding for intervals)
    size: int = 64  # edge of the cubic volumes, in voxels
    seed: int = 0  # same seed, byte-identical files
    difficulty: str = "tutorial"  # how visible the findings are: "tutorial" or "realistic"
    site: str = "A"  # which hospital scans, stores and reports: a key of sites.SITES

    def __post_init__(self) -> None:
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {self.difficulty!r}")
        get_site(self.site)  # ValueError naming the sites
        for name, minimum in _SPEC_MINIMUM.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
            object.__setattr__(self, name, int(value))

    def replace(self, **changes: Any) -> PhantomSpec:
        """A copy with some fields changed; an unknown name is an error listing the fields."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown phantom field(s) {unknown}; the fields are {sorted(known)}")
        return replace(self, **changes)

    def at_site(self, site: str) -> PhantomSpec:
        """The same patients' dataset as ``site`` writes it: site ``A`` keeps this spec, another
        site keeps its validation split and :data:`~cagcl_mini.phantom.sites.TRANSFER_TRAIN`
        training volumes (it is scored, not trained on)."""
        return self.replace(site=site, n_train=self.n_train if site == "A" else TRANSFER_TRAIN)

    def variant(self) -> str:
        """What sets this spec apart from the tutorial's dataset at its site, as a folder-name
        tag: ``""`` for the default, else e.g. ``realistic`` or ``realistic-size48-seed3``."""
        default = PhantomSpec().at_site(self.site)
        parts = [self.difficulty] if self.difficulty != default.difficulty else []
        for name in ("n_train", "n_valid", "size", "seed"):
            value = getattr(self, name)
            if value != getattr(default, name):
                parts.append(f"{name.replace('_', '')}{value}")
        return "-".join(parts)

    def params(self) -> dict[str, Any]:
        """The manifest's record of this spec: its fields, the phantom's version and fingerprints
        of the tables it draws from: the tutorial difficulty's visibility table and another
        site's dials (so recalibrating either rebuilds)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)} | {"version": PHANTOM_VERSION}
        if self.difficulty == "tutorial":
            out["visibility"] = _fingerprint(
                {k: dataclasses.astuple(v) for k, v in TUTORIAL.items()}
            )
        if self.site != "A":
            out["site_dials"] = _fingerprint(dataclasses.astuple(get_site(self.site)))
        return out


def _fingerprint(table: Any) -> str:
    """12 hex digits of the SHA-256 of ``table`` as JSON."""
    return hashlib.sha256(json.dumps(table).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CasePlan:
    """Everything about one volume except its voxels: cheap to compute, decides the files."""

    split: str
    pid: int
    seed: int
    size: int
    difficulty: str
    site: str
    intercept: int
    findings: tuple[FindingSpec, ...]
    report: dict[str, str]
    metadata: dict[str, str]
    # finding name -> the 1-based stored slice ("image N") its report sentence cites
    citations: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return layout.volume_name(self.split, self.pid)

    @property
    def volume_file(self) -> str:
        """The CT's path below the dataset root."""
        return f"{layout.DATASET_FOLDER}/{layout.volume_relpath(self.name)}"

    @property
    def label_file(self) -> str:
        """The TotalSegmentator map's path below the dataset root."""
        return f"{layout.DATASET_FOLDER}/{layout.mask_relpath(self.name)}"

    def seed_sequence(self) -> np.random.SeedSequence:
        return case_seed(self.seed, self.split, self.pid, self.site)

    def label_columns(self) -> tuple[str, ...]:
        """The labels CSV's columns after VolumeName (the site's, or all of ALL_LABELS)."""
        return get_site(self.site).label_columns or ALL_LABELS

    def label_row(self) -> list[str]:
        names = {f.name for f in self.findings}
        return [self.name] + [str(int(label in names)) for label in self.label_columns()]


def case_seed(seed: int, split: str, pid: int, site: str = "A") -> np.random.SeedSequence:
    """The SeedSequence of one volume, independent of dataset size and worker count; another
    site's volume ``pid`` is another patient."""
    entropy = [int(seed), layout.SPLITS.index(split), int(pid)]
    return np.random.SeedSequence(entropy + ([get_site(site).index] if site != "A" else []))


def choose_findings(rng: np.random.Generator) -> list[str]:
    """Which abnormalities a volume has (catalog order); the draw count never depends on them."""
    healthy = rng.random() < P_HEALTHY
    chosen = []
    for anatomy in ANATOMIES:
        gate = P_ORGAN_NORMAL.get(anatomy.name, 0.0)
        organ_abnormal = rng.random() >= gate
        for ab in anatomy.abnormalities:
            p = min(PREVALENCE[ab.name] / ((1 - P_HEALTHY) * (1 - gate)), 0.9)
            if rng.random() < p and organ_abnormal and not healthy:
                chosen.append(ab.name)
    return [name for name in ALL_LABELS if name in chosen]


def choose_citations(specs: list[FindingSpec], rng: np.random.Generator) -> list[str]:
    """Which findings of a volume the report cites by slice: each masked finding (the kinds
    :data:`~cagcl_mini.phantom.finding_masks.FINDING_MASK_LABELS` outlines) with ``P_CITE``.
    One draw per masked kind, present or not, so the choice never shifts with the findings."""
    present = {s.name for s in specs}
    return [name for name in FINDING_MASK_LABELS if rng.random() < P_CITE and name in present]


def cited_slices(vol: RenderedVolume, names: list[str]) -> dict[str, int]:
    """Finding name -> the slice its citation names: ``N`` = 1 + the index along the stored
    volume's axis 2 (RAS+: image 1 is the most inferior slice, as the metadata's
    ``ImagePositionPatient`` is) of the finding's centre, the median slice of its mask's voxels
    (a slice the finding is in), read from the volume the builder writes; a finding with no voxel
    in the stored mask (painted over) is not cited.
    """
    out = {}
    for name in names:
        z = np.sort(np.nonzero(vol.finding_map == FINDING_MASK_LABELS[name])[2])
        if z.size:
            out[name] = int(z[(z.size - 1) // 2]) + 1
    return out


def plan_case(
    seed: int,
    split: str,
    pid: int,
    size: int,
    difficulty: str = "tutorial",
    site: str = "A",
) -> CasePlan:
    """Plan one volume: patient, findings, rescale intercept, report and metadata rows.

    Some findings' sentences cite their slice (:func:`choose_citations`, its own random stream,
    so the rest of the report and the voxels are what they were without citations); only then is
    the volume rendered here, to find the slice (:func:`cited_slices`).
    """
    return _plan(seed, split, pid, size, difficulty, site, render=False)[0]


def plan_and_render(
    seed: int,
    split: str,
    pid: int,
    size: int,
    difficulty: str = "tutorial",
    site: str = "A",
) -> tuple[CasePlan, RenderedVolume]:
    """:func:`plan_case` and the volume's voxels and masks, rendered once for both (the builder's
    workers: a cited finding's slice is read from the volume they write)."""
    plan, vol = _plan(seed, split, pid, size, difficulty, site, render=True)
    return plan, cast(RenderedVolume, vol)


def _plan(
    seed: int, split: str, pid: int, size: int, difficulty: str, site: str, render: bool
) -> tuple[CasePlan, RenderedVolume | None]:
    where = get_site(site)
    ss = case_seed(seed, split, pid, site)
    rng = child(ss, STREAM_PLAN)
    body = body_for(ss, size, site)
    specs = [spec_for(ss, name, body, difficulty) for name in choose_findings(rng)]
    intercept = where.intercepts[int(rng.integers(len(where.intercepts)))]
    name = layout.volume_name(split, pid)
    sx, sy, sz = body.spacing
    sz *= where.slice_factor
    cited = choose_citations(specs, child(ss, STREAM_CITATIONS))
    if cited and where.labels_only_reports:
        cited = []
    vol = None
    if render or cited:  # the volume the builder writes (same seed, findings and site)
        vol = render_volume(ss, size, specs, site=site, finding_masks=True)
    citations = cited_slices(vol, cited) if cited else {}
    report = {
        "VolumeName": name,
        "ClinicalInformation_EN": clinical_text(rng),
        "Technique_EN": technique_text(body.contrast, sz),
        "Findings_EN": findings_text(
            specs, rng, child(ss, STREAM_NEGATIVES), citations, CITED_SERIES
        ),
        "Impressions_EN": impression_text(specs),
    }
    if where.labels_only_reports:
        report.update(labels_only_report(specs, where.label_columns))
    aff = affine_for(body)
    ox, oy, oz = aff[:3, 3]
    metadata = {
        "VolumeName": name,
        "Manufacturer": where.manufacturer,
        "ManufacturerModelName": f"phantom v{PHANTOM_VERSION}",
        "PatientSex": "F" if rng.random() < 0.5 else "M",
        "PatientAge": f"{int(rng.integers(30, 86)):03d}Y",
        "Rows": str(size),
        "Columns": str(size),
        "NumberofSlices": str(len(range(0, size, where.slice_factor))),
        "XYSpacing": f"[{fmt_float(sx)}, {fmt_float(sy)}]",
        "ZSpacing": fmt_float(sz),
        "RescaleSlope": "1",
        "RescaleIntercept": str(intercept),
        # DICOM is LPS: x and y flip sign relative to the NIfTI's RAS+.
        "ImagePositionPatient": f"[{fmt_float(-ox)}, {fmt_float(-oy)}, {fmt_float(oz)}]",
        "ImageOrientationPatient": "[-1, 0, 0, 0, -1, 0]",
    }
    plan = CasePlan(
        split, pid, int(seed), size, difficulty, site, intercept, tuple(specs), report, metadata,
        citations,
    )  # fmt: skip
    return plan, vol
