"""Phantom report text: Findings_EN, Impressions_EN and the other CT-RATE report columns.

Findings are written only from the catalog's phrasings (so the report splitter in
:mod:`cagcl_mini.text.reports` can route them): every abnormal finding gets one of its abnormal
phrasings (never omitted), an anatomy with findings may add a normal sentence that does not
contradict them, a normal anatomy gets one or two normal sentences or is left out (implicitly
normal). Anatomies come in a radiologist's order that is sometimes perturbed and sometimes fully
shuffled; sentences within an anatomy are shuffled. Some findings' sentences end by citing the
slice the finding is in, as radiologists do: "... in the left lung (series 2, image 37)."
(:func:`cite`); the citation draws nothing, so the rest of the report is the same with or without.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cagcl_mini.anatomy import ABNORMALITY_BY_NAME, ANATOMIES, Anatomy
from cagcl_mini.phantom.findings import FindingSpec

READING_ORDER = ("trachea", "heart", "aorta", "esophagus", "lung", "liver", "spleen", "kidney")
NORMAL_IMPRESSION = "No acute cardiopulmonary or upper abdominal abnormality."
P_OMIT_NORMAL = 0.2  # a normal anatomy is not mentioned at all
P_TWO_NORMAL = 0.4  # a mentioned normal anatomy gets two normal sentences
P_NORMAL_WITH_FINDINGS = 0.4  # an abnormal anatomy also gets a compatible normal sentence
P_PERTINENT_NEGATIVE = 0.5  # a mentioned anatomy also says one of its absent findings is absent
PERTINENT_NEGATIVES = ("No {x} is seen.", "There is no {x}.", "No evidence of {x}.")
NEGATIVE_TERMS = {"Medical material": "cardiac device"}  # where the catalog term names no organ

# Normal phrasings that deny only some of their anatomy's abnormalities, so they may accompany
# the others. Any normal phrasing not listed here is taken to deny every abnormality of its anatomy
# (the safe default: "The lungs are clear." never appears next to a nodule).
NORMAL_DENIES: dict[str, frozenset[str]] = {
    "No focal consolidation, nodule or mass is seen in either lung.": frozenset(
        {"Consolidation", "Lung nodule"}
    ),
    "No pleural effusion or pneumothorax is detected.": frozenset({"Pleural effusion"}),
    "No pericardial effusion is seen.": frozenset({"Pericardial effusion"}),
    "The heart size is normal.": frozenset({"Cardiomegaly"}),
    "Cardiac dimensions are normal.": frozenset({"Cardiomegaly"}),
    "No focal lesion is seen in the liver.": frozenset({"Liver lesion"}),
    "The liver is of normal size and density.": frozenset({"Hepatic steatosis"}),
}


def compatible_normals(anatomy: Anatomy, present: set[str]) -> list[str]:
    """The anatomy's normal phrasings that contradict none of the ``present`` abnormalities."""
    all_names = frozenset(ab.name for ab in anatomy.abnormalities)
    return [p for p in anatomy.normal_phrasings if not (NORMAL_DENIES.get(p, all_names) & present)]


def _choice(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def anatomy_order(rng: np.random.Generator) -> list[str]:
    """Reading order: usually the radiologist's with a swap or two, sometimes fully shuffled."""
    order = list(READING_ORDER)
    if rng.random() < 0.3:
        return [order[i] for i in rng.permutation(len(order))]
    for _ in range(int(rng.integers(0, 3))):
        i = int(rng.integers(len(order) - 1))
        order[i], order[i + 1] = order[i + 1], order[i]
    return order


def citation_text(image: int, series: int = 2) -> str:
    """A slice citation as radiologists write it: ``"(series 2, image 37)"``."""
    return f"(series {int(series)}, image {int(image)})"


def cite(sentence: str, image: int, series: int = 2) -> str:
    """``sentence`` with its slice citation before the final period (or at its end)."""
    ref = citation_text(image, series)
    return f"{sentence[:-1]} {ref}." if sentence.endswith(".") else f"{sentence} {ref}"


def anatomy_sentences(
    anatomy: Anatomy,
    specs: list[FindingSpec],
    rng: np.random.Generator,
    citations: Mapping[str, int] | None = None,
    series: int = 2,
) -> list[str]:
    """Sentences about one anatomy: one per finding, plus or instead normal ones; a finding in
    ``citations`` (name -> image number) cites its slice (:func:`cite`)."""
    present = {s.name for s in specs}
    cited = citations or {}
    sentences = [s.fill(_choice(rng, ABNORMALITY_BY_NAME[s.name].phrasings)) for s in specs]
    sentences = [
        cite(text, cited[s.name], series) if s.name in cited else text
        for s, text in zip(specs, sentences, strict=True)
    ]
    normals = compatible_normals(anatomy, present)
    if specs:
        if normals and rng.random() < P_NORMAL_WITH_FINDINGS:
            sentences.append(_choice(rng, normals))
    elif rng.random() >= P_OMIT_NORMAL:
        k = 2 if (rng.random() < P_TWO_NORMAL and len(normals) > 1) else 1
        sentences += [normals[i] for i in rng.choice(len(normals), size=k, replace=False)]
    return [sentences[i] for i in rng.permutation(len(sentences))]


def pertinent_negative(anatomy: Anatomy, present: set[str], rng: np.random.Generator) -> str | None:
    """A sentence saying one absent finding of the anatomy is absent ("No hiatal hernia is
    seen."), as reports list pertinent negatives, or None (drawn with P_PERTINENT_NEGATIVE)."""
    absent = [ab for ab in anatomy.abnormalities if ab.name not in present]
    if not absent or rng.random() >= P_PERTINENT_NEGATIVE:
        return None
    ab = _choice(rng, absent)
    text = _choice(rng, PERTINENT_NEGATIVES).format(x=NEGATIVE_TERMS.get(ab.name, ab.term))
    return text[:1].upper() + text[1:]


def findings_text(
    specs: list[FindingSpec],
    rng: np.random.Generator,
    negatives: np.random.Generator | None = None,
    citations: Mapping[str, int] | None = None,
    series: int = 2,
) -> str:
    """Findings_EN: catalog sentences of all anatomies, joined by single spaces.

    ``negatives`` (its own random stream, so the other draws stay put) adds pertinent negatives
    to the anatomies the report mentions (:func:`pertinent_negative`). ``citations`` (finding
    name -> image number in ``series``) makes those findings' sentences cite their slice.
    """
    by_anatomy = {a.name: a for a in ANATOMIES}
    sentences: list[str] = []
    for name in anatomy_order(rng):
        mine = [s for s in specs if ABNORMALITY_BY_NAME[s.name].anatomy == name]
        said = anatomy_sentences(by_anatomy[name], mine, rng, citations, series)
        negative = None
        if said and negatives is not None:
            negative = pertinent_negative(by_anatomy[name], {s.name for s in mine}, negatives)
        if negative is not None and negative not in said:  # never the same sentence twice
            said.insert(int(negatives.integers(len(said) + 1)), negative)
        sentences += said
    if not sentences:  # every anatomy omitted: say one thing
        sentences = [ANATOMIES[0].normal_sentence]
    return " ".join(sentences)


def impression_text(specs: list[FindingSpec]) -> str:
    """Impressions_EN: the findings' terms as one sentence, or the normal impression."""
    if not specs:
        return NORMAL_IMPRESSION
    terms = [ABNORMALITY_BY_NAME[s.name].term for s in specs]
    text = terms[0] if len(terms) == 1 else ", ".join(terms[:-1]) + " and " + terms[-1]
    return text[:1].upper() + text[1:] + "."


CLINICAL = ("Cough.", "Shortness of breath.", "Chest pain.", "Fever.", "Follow-up.", "Not given.")


def clinical_text(rng: np.random.Generator) -> str:
    """ClinicalInformation_EN: a short indication."""
    return _choice(rng, CLINICAL)


def technique_text(contrast: bool, slice_mm: float) -> str:
    """Technique_EN: contrast phase and slice thickness of the synthetic acquisition."""
    kind = "Contrast-enhanced" if contrast else "Non-contrast"
    return f"{kind} axial CT of the thorax and upper abdomen, {slice_mm:.1f} mm slices."


LABELS_ONLY_NONE = "None of the CT-RATE findings is labelled in this scan."
LABELS_ONLY_NOTE = "Generated from the labels; no radiology report is available."


def labels_only_report(specs: list[FindingSpec], columns: tuple[str, ...]) -> dict[str, str]:
    """Findings and impression of a site that reports labels only, in the words the
    Rad-ChestCT download uses: one "<Label> is present." sentence per labelled finding."""
    positives = [s.name for s in specs if s.name in columns]
    findings = " ".join(f"{label} is present." for label in positives)
    return {"Findings_EN": findings or LABELS_ONLY_NONE, "Impressions_EN": LABELS_ONLY_NOTE}
