"""The anatomy catalog: the single source of truth for anatomies, label ids, findings and prompts.

Anatomy ids are 1..K in the order of ``ANATOMIES`` (0 is background). TotalSegmentator v2 ``total``
label ids map to anatomy ids through ``TOTALSEG_TO_ANATOMY`` (a 256-entry lookup table), built here
from the catalog so no other module hard-codes an id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The 18 CT-RATE abnormality columns, in the order of `*_predicted_labels.csv`.
CT_RATE_LABELS: tuple[str, ...] = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)


@dataclass(frozen=True)
class Abnormality:
    """One finding: its label name, the anatomy it belongs to and how reports phrase it."""

    name: str  # CT-RATE column name, or our own name for the abdominal extras
    anatomy: str
    term: str  # lower-case noun phrase used in prompts: "{term}." / "Not {term}."
    phrasings: tuple[str, ...]  # abnormal report sentences (the abnormality dictionary)
    paraphrase: tuple[str, str]  # free-wording (negative, positive) prompt pair
    ct_rate: bool = True


@dataclass(frozen=True)
class Anatomy:
    """One anatomy: its TotalSegmentator v2 ids, findings, and normal report sentences."""

    name: str
    totalseg_ids: tuple[int, ...]
    abnormalities: tuple[Abnormality, ...]
    normal_phrasings: tuple[str, ...]

    @property
    def normal_sentence(self) -> str:
        """The canonical sentence for an anatomy a report does not mention."""
        return self.normal_phrasings[0]

    @property
    def prompt(self) -> str:
        """CT-GLIP anatomy prompt, used by the anatomy contrastive loss and recognition."""
        return f"This is the {self.name} in the CT scan."


def _abn(name, anatomy, term, phrasings, paraphrase, ct_rate=True) -> Abnormality:
    return Abnormality(name, anatomy, term, tuple(phrasings), tuple(paraphrase), ct_rate)


LUNG = Anatomy(
    name="lung",
    totalseg_ids=(10, 11, 12, 13, 14),
    normal_phrasings=(
        "The lungs are clear.",
        "No focal consolidation, nodule or mass is seen in either lung.",
        "Both lungs are normally aerated.",
        "The lung parenchyma is unremarkable.",
        "No pleural effusion or pneumothorax is detected.",
        "The pulmonary parenchyma shows normal density.",
    ),
    abnormalities=(
        _abn(
            "Emphysema",
            "lung",
            "emphysema",
            [
                "Centrilobular emphysematous changes are present in both lungs.",
                "There is emphysema in the upper lobes.",
                "Paraseptal emphysema is observed.",
            ],
            ["The lungs show no emphysema.", "The lungs show emphysematous destruction."],
        ),
        _abn(
            "Atelectasis",
            "lung",
            "atelectasis",
            [
                "Subsegmental atelectasis is seen in the lower lobe.",
                "There are atelectatic changes at the lung bases.",
                "Linear atelectasis is noted.",
            ],
            ["There is no collapse of lung tissue.", "There is collapse of lung tissue."],
        ),
        _abn(
            "Lung nodule",
            "lung",
            "lung nodule",
            [
                "A {size} mm nodule is seen in the {side} lung.",
                "There is a {size} mm solid pulmonary nodule in the {side} lower lobe.",
                "A nonspecific nodule of {size} mm is observed in the {side} lung.",
            ],
            ["There is no nodule in the lungs.", "There is a nodule in the lungs."],
        ),
        _abn(
            "Lung opacity",
            "lung",
            "lung opacity",
            [
                "Ground-glass opacities are present in the {side} lung.",
                "There are patchy ground glass densities in both lungs.",
                "An area of increased opacity is seen in the {side} lower lobe.",
            ],
            ["The lungs show no opacity.", "The lungs show an area of increased opacity."],
        ),
        _abn(
            "Pulmonary fibrotic sequela",
            "lung",
            "pulmonary fibrotic sequela",
            [
                "Fibrotic sequelae are seen in the {side} lung.",
                "There are fibrotic bands in the lower lobes.",
                "Sequelae fibrotic changes are noted in the {side} upper lobe.",
            ],
            ["There is no fibrosis in the lungs.", "There are fibrotic scars in the lungs."],
        ),
        _abn(
            "Pleural effusion",
            "lung",
            "pleural effusion",
            [
                "There is a {side} pleural effusion.",
                "Pleural effusion is observed at the {side} lung base, reaching {size} mm.",
                "Fluid is seen in the {side} pleural space.",
            ],
            ["There is no fluid in the pleural space.", "There is fluid in the pleural space."],
        ),
        _abn(
            "Mosaic attenuation pattern",
            "lung",
            "mosaic attenuation pattern",
            [
                "A mosaic attenuation pattern is present in both lungs.",
                "There is mosaic perfusion of the lung parenchyma.",
                "Heterogeneous mosaic attenuation is noted.",
            ],
            [
                "The lung density is homogeneous.",
                "The lung density is patchy with mosaic attenuation.",
            ],
        ),
        _abn(
            "Peribronchial thickening",
            "lung",
            "peribronchial thickening",
            [
                "Peribronchial thickening is present.",
                "There is bronchial wall thickening in the lower lobes.",
                "Peribronchial wall thickening is observed in both lungs.",
            ],
            [
                "The bronchial walls are not thickened.",
                "The bronchial walls are thickened.",
            ],
        ),
        _abn(
            "Consolidation",
            "lung",
            "consolidation",
            [
                "There is consolidation in the {side} lower lobe.",
                "A consolidated area with air bronchograms is seen in the {side} lung.",
                "Consolidation is observed in the {side} lung.",
            ],
            [
                "There is no consolidated lung tissue.",
                "There is consolidated lung tissue.",
            ],
        ),
        _abn(
            "Bronchiectasis",
            "lung",
            "bronchiectasis",
            [
                "Cylindrical bronchiectasis is present in the lower lobes.",
                "There are bronchiectatic changes in the {side} lung.",
                "Bronchiectasis is observed.",
            ],
            ["The bronchi are not dilated.", "The bronchi are dilated."],
        ),
        _abn(
            "Interlobular septal thickening",
            "lung",
            "interlobular septal thickening",
            [
                "Interlobular septal thickening is present.",
                "There is smooth interlobular septal thickening in both lungs.",
                "Thickened interlobular septa are seen.",
            ],
            [
                "The interlobular septa are not thickened.",
                "The interlobular septa are thickened.",
            ],
        ),
    ),
)

HEART = Anatomy(
    name="heart",
    totalseg_ids=(51, 61),
    normal_phrasings=(
        "The heart size is normal.",
        "Heart contour and size are within normal limits.",
        "No pericardial effusion is seen.",
        "The heart is of normal size without pericardial thickening.",
        "Cardiac dimensions are normal.",
    ),
    abnormalities=(
        _abn(
            "Medical material",
            "heart",
            "medical material",
            [
                "A pacemaker lead is seen in the right heart.",
                "A central venous catheter is noted with its tip in the right atrium.",
                "Metallic medical material is present in the heart.",
            ],
            [
                "There is no device in the heart.",
                "There is a metallic device in the heart.",
            ],
        ),
        _abn(
            "Cardiomegaly",
            "heart",
            "cardiomegaly",
            [
                "The heart is enlarged.",
                "Cardiomegaly is present.",
                "The cardiac silhouette is increased in size.",
            ],
            ["The heart is of normal size.", "The heart is enlarged."],
        ),
        _abn(
            "Pericardial effusion",
            "heart",
            "pericardial effusion",
            [
                "There is a pericardial effusion measuring {size} mm.",
                "Pericardial fluid is observed.",
                "A small pericardial effusion is present.",
            ],
            [
                "There is no fluid around the heart.",
                "There is fluid around the heart.",
            ],
        ),
        _abn(
            "Coronary artery wall calcification",
            "heart",
            "coronary artery wall calcification",
            [
                "Calcific plaques are present in the coronary arteries.",
                "There is coronary artery calcification.",
                "Coronary artery wall calcifications are observed.",
            ],
            [
                "The coronary arteries are not calcified.",
                "The coronary arteries are calcified.",
            ],
        ),
    ),
)

AORTA = Anatomy(
    name="aorta",
    totalseg_ids=(52,),
    normal_phrasings=(
        "The thoracic aorta is of normal calibre.",
        "The aorta is normal in diameter.",
        "No aneurysm or dissection of the aorta is seen.",
        "The aorta and its main branches are unremarkable.",
    ),
    abnormalities=(
        _abn(
            "Arterial wall calcification",
            "aorta",
            "arterial wall calcification",
            [
                "Calcific atheroma plaques are present in the aortic arch.",
                "There are atherosclerotic calcifications of the aortic wall.",
                "Aortic wall calcification is observed.",
            ],
            ["The aortic wall is not calcified.", "The aortic wall is calcified."],
        ),
    ),
)

ESOPHAGUS = Anatomy(
    name="esophagus",
    totalseg_ids=(15,),
    normal_phrasings=(
        "The esophagus is of normal calibre.",
        "No wall thickening of the esophagus is seen.",
        "The thoracic esophagus is unremarkable.",
        "Esophageal calibration is normal.",
    ),
    abnormalities=(
        _abn(
            "Hiatal hernia",
            "esophagus",
            "hiatal hernia",
            [
                "A hiatal hernia is present.",
                "There is a sliding hiatal hernia.",
                "The esophagus is dilated with a hiatal hernia at the gastroesophageal junction.",
            ],
            [
                "The stomach stays below the diaphragm.",
                "Part of the stomach herniates through the esophageal hiatus.",
            ],
        ),
    ),
)

TRACHEA = Anatomy(
    name="trachea",
    totalseg_ids=(16,),
    normal_phrasings=(
        "The trachea and main bronchi are patent.",
        "The trachea is midline and of normal calibre.",
        "No lymph node enlargement is seen in the mediastinum.",
        "The airways are patent.",
    ),
    abnormalities=(
        _abn(
            "Lymphadenopathy",
            "trachea",
            "lymphadenopathy",
            [
                "Enlarged paratracheal lymph nodes are seen, the largest {size} mm.",
                "There is mediastinal lymphadenopathy.",
                "Pathologically enlarged lymph nodes are present next to the trachea.",
            ],
            [
                "The lymph nodes next to the trachea are of normal size.",
                "The lymph nodes next to the trachea are enlarged.",
            ],
        ),
    ),
)

LIVER = Anatomy(
    name="liver",
    totalseg_ids=(5,),
    normal_phrasings=(
        "The liver is of normal size and density.",
        "No focal lesion is seen in the liver.",
        "The liver parenchyma is homogeneous.",
        "The visualised liver is unremarkable.",
    ),
    abnormalities=(
        _abn(
            "Hepatic steatosis",
            "liver",
            "hepatic steatosis",
            [
                "The liver density is decreased, consistent with hepatic steatosis.",
                "There is diffuse fatty infiltration of the liver.",
                "Hepatic steatosis is present.",
            ],
            ["The liver density is normal.", "The liver density is decreased by fat."],
            ct_rate=False,
        ),
        _abn(
            "Liver lesion",
            "liver",
            "liver lesion",
            [
                "A {size} mm hypodense lesion is seen in the liver.",
                "There is a hypodense focal lesion in the right lobe of the liver.",
                "A focal liver lesion of {size} mm is observed.",
            ],
            ["The liver has no focal lesion.", "The liver has a focal hypodense lesion."],
            ct_rate=False,
        ),
    ),
)

SPLEEN = Anatomy(
    name="spleen",
    totalseg_ids=(1,),
    normal_phrasings=(
        "The spleen is of normal size.",
        "The spleen is unremarkable.",
        "Spleen dimensions are normal.",
    ),
    abnormalities=(
        _abn(
            "Splenomegaly",
            "spleen",
            "splenomegaly",
            [
                "The spleen is enlarged.",
                "Splenomegaly is present.",
                "The spleen measures {size} cm, consistent with splenomegaly.",
            ],
            ["The spleen is of normal size.", "The spleen is enlarged."],
            ct_rate=False,
        ),
    ),
)

KIDNEY = Anatomy(
    name="kidney",
    totalseg_ids=(2, 3),
    normal_phrasings=(
        "The visualised kidneys are unremarkable.",
        "Both kidneys are normal in size.",
        "No renal lesion is seen.",
    ),
    abnormalities=(
        _abn(
            "Renal cyst",
            "kidney",
            "renal cyst",
            [
                "A {size} mm simple cyst is seen in the {side} kidney.",
                "There is a cortical cyst in the {side} kidney.",
                "A renal cyst is present.",
            ],
            ["The kidneys have no cyst.", "There is a fluid-filled cyst in the kidney."],
            ct_rate=False,
        ),
    ),
)

ANATOMIES: tuple[Anatomy, ...] = (LUNG, HEART, AORTA, ESOPHAGUS, TRACHEA, LIVER, SPLEEN, KIDNEY)
ANATOMY_NAMES: tuple[str, ...] = tuple(a.name for a in ANATOMIES)
NUM_ANATOMIES: int = len(ANATOMIES)
ANATOMY_ID: dict[str, int] = {a.name: i + 1 for i, a in enumerate(ANATOMIES)}

ABNORMALITIES: tuple[Abnormality, ...] = tuple(ab for a in ANATOMIES for ab in a.abnormalities)
ABNORMALITY_BY_NAME: dict[str, Abnormality] = {ab.name: ab for ab in ABNORMALITIES}
EXTRA_LABELS: tuple[str, ...] = tuple(ab.name for ab in ABNORMALITIES if not ab.ct_rate)
ALL_LABELS: tuple[str, ...] = CT_RATE_LABELS + EXTRA_LABELS


def _build_totalseg_lut() -> np.ndarray:
    lut = np.zeros(256, dtype=np.int64)
    for anatomy_id, anatomy in enumerate(ANATOMIES, start=1):
        for ts_id in anatomy.totalseg_ids:
            lut[ts_id] = anatomy_id
    return lut


# TotalSegmentator v2 `total` id -> anatomy id (0 for classes outside the catalog).
TOTALSEG_TO_ANATOMY: np.ndarray = _build_totalseg_lut()
TOTALSEG_MAX_ID: int = 117  # highest id of the v2 `total` task


def anatomy(name: str) -> Anatomy:
    """Look an anatomy up by name, with an error that lists the valid names."""
    for a in ANATOMIES:
        if a.name == name:
            return a
    raise KeyError(f"unknown anatomy {name!r}; the catalog has {', '.join(ANATOMY_NAMES)}")


def totalseg_to_anatomy(label_map: np.ndarray) -> np.ndarray:
    """Map a TotalSegmentator v2 `total` label map to anatomy ids (0..K), same shape.

    Ids outside 0..255 raise a ValueError; ids the catalog does not use map to background.
    """
    arr = np.asarray(label_map)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"TotalSegmentator ids must lie in 0..255, got {arr.min()}..{arr.max()}")
    return TOTALSEG_TO_ANATOMY[arr.astype(np.int64)]


# Zero-shot prompt families: name -> (negative template, positive template).
# Templates see {x} (the abnormality term), {X} (capitalised term) and {anatomy}.
PROMPT_FAMILIES: dict[str, tuple[str, str]] = {
    "fvlm": ("Not {x}.", "{X}."),
    "ctclip": ("{X} is not present.", "{X} is present."),
    "hlip": ("The {anatomy} shows: not {x}.", "The {anatomy} shows: {x}."),
    "colipri": ("No {x}", "{X}"),
}
PARAPHRASE_FAMILY = "paraphrase"


def prompt_pair(abnormality: Abnormality, family: str) -> tuple[str, str]:
    """The (negative, positive) prompt of one abnormality in one prompt family."""
    if family == PARAPHRASE_FAMILY:
        return abnormality.paraphrase
    try:
        neg, pos = PROMPT_FAMILIES[family]
    except KeyError:
        names = ", ".join([*PROMPT_FAMILIES, PARAPHRASE_FAMILY])
        raise KeyError(f"unknown prompt family {family!r}; choose one of {names}") from None
    fields = {
        "x": abnormality.term,
        "X": abnormality.term[:1].upper() + abnormality.term[1:],
        "anatomy": abnormality.anatomy,
    }
    return neg.format(**fields), pos.format(**fields)


def prompt_family_names() -> tuple[str, ...]:
    """All prompt families, the fixed templates first and the free paraphrases last."""
    return (*PROMPT_FAMILIES, PARAPHRASE_FAMILY)
