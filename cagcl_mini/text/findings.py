"""Abnormal flags and the abnormality dictionary of per-anatomy descriptions.

- :func:`is_abnormal` looks for abnormality words that are not negated in their clause (NegEx
  style: "no", "without", "not ...", "... was not detected").
- :func:`findings` names the catalog abnormalities a description asserts.
- The abnormality dictionary (:func:`abnormality_dictionary`, :func:`dictionary_entries`) lists
  the catalog's abnormal phrasings with placeholders filled; :func:`matches_findings` and
  :func:`exclusion_mask` tell which of them describe a sample's own findings, so the diagnosis loss
  never uses those as negatives.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from cagcl_mini.anatomy import ANATOMIES, ANATOMY_NAMES, Abnormality, anatomy
from cagcl_mini.text.reports import clause_spans, route_sentence

_I = re.IGNORECASE


# ----------------------------------------------------------------------------- negation
ABNORMAL_CUES = re.compile(
    r"\b(?:nodul\w*|effusions?|calcif\w*|plaques?|atherom\w*|atheroscl\w*|atelecta\w*"
    r"|consolidat\w*|opacit\w*|ground[- ]?glass|frosted[- ]glass|emphysem\w*|bronchiecta\w*"
    r"|thicken\w*|enlarg\w*|dilat\w*|ectasi\w*|herni\w*|lesions?|cysts?|cystic|mass(?:es)?"
    r"|lymphadenopath\w*|steatosis|fatty|sequela\w*|fibro(?:tic|sis)|pneumoni\w*|infiltrat\w*"
    r"|mosaic|aneurysm\w*|dissection|stenos\w*|narrow\w*|occlu\w*|embol\w*|thromb\w*"
    r"|tumou?r\w*|malignan\w*|metasta\w*|neoplas\w*|pneumothora\w*|\w+megaly|pacemaker"
    r"|catheter|stents?|prosthe\w*|metallic|medical material|devices?|increas\w*|decreas\w*"
    r"|(?:wider|larger|greater|bigger) than normal|prominen\w*|o?edema\w*|fluid|collaps\w*"
    r"|bronchograms?|tree[- ](?:in|with)[- ]buds?|budding[- ]trees?|halo sign|infect\w*"
    r"|covid\w*|viral|secretions?|distortion|loss|lost|defects?|lobectomy|resect\w*|operated"
    r"|postoperative|hypodens\w*|hyperdens\w*|abnormal\w*)\b",
    _I,
)
_PRE_NEG = re.compile(
    r"\b(?:no|not|without|absence of|negative for|free of|neither|nor|never|rule[sd]? out)\b", _I
)
_POST_NEG = re.compile(r"\bnot\b|n't\b|\babsent\b|\bruled out\b|\bexcluded\b", _I)
_CLAUSE_END = re.compile(
    r"[;:\n]|\b(?:but|however|although|though|whereas|while|except|apart from|aside from|besides"
    r"|which|there (?:is|are|was|were))\b",
    _I,
)
_VERB = re.compile(
    r"\b(?:is|are|was|were|has|have|had|shows?|showed|seen|observed|detected|noted|present"
    r"|measur\w*|reach\w*)\b",
    _I,
)
_LIST_CONJ = re.compile(r"\b(?:or|nor)\b", _I)
_AUX_TAIL = re.compile(
    r"\b(?:is|are|was|were|be|been|being|has|have|had|do|does|did|can|could|will|would|should"
    r"|may|might)\s*$",
    _I,
)


def _clauses(sentence: str) -> list[str]:
    bounds = [0, *(m.start() for m in _CLAUSE_END.finditer(sentence)), len(sentence)]
    return [sentence[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if sentence[a:b]]


def _negated(clause: str, start: int, end: int) -> bool:
    """Whether the cue clause[start:end] lies in the scope of a negation of its clause.

    Forward ("no X", "without X", "not X", "no A, B or X"): no verb between trigger and cue, and
    a comma only inside an or/nor list. Backward ("X was not detected", "A, X were not seen"): no
    verb between cue and trigger other than the trigger's auxiliary, and no comma after a cue
    whose own phrase already has a verb ("a nodule is seen, effusion is not").
    """
    for m in _PRE_NEG.finditer(clause, 0, start):
        between = clause[m.end() : start]
        if not _VERB.search(between) and (
            "," not in between or _LIST_CONJ.search(clause[m.end() :])
        ):
            return True
    for m in _POST_NEG.finditer(clause, end):
        between = _AUX_TAIL.sub("", clause[end : m.start()])
        if _VERB.search(between):
            continue
        if "," in between and _VERB.search(clause[:start].rsplit(",", 1)[-1]):
            continue
        return True
    return False


def _asserted(pattern: re.Pattern, text: str) -> bool:
    """Whether ``pattern`` occurs somewhere in ``text`` outside any negation scope.

    A negation never reaches past its sentence (in unpunctuated text: its clause,
    :func:`~cagcl_mini.text.reports.clause_spans`) nor past a clause end of :data:`_CLAUSE_END`.
    """
    for s, e in clause_spans(text):
        for clause in _clauses(text[s:e]):
            if any(not _negated(clause, *m.span()) for m in pattern.finditer(clause)):
                return True
    return False


def is_abnormal(anatomy_name: str, text: str) -> bool:
    """Whether an anatomy's description asserts an abnormality (a non-negated abnormal cue)."""
    anatomy(anatomy_name)  # KeyError listing the valid names
    if not isinstance(text, str):
        raise TypeError(f"description must be a str, got {type(text).__name__}")
    return _asserted(ABNORMAL_CUES, text)


# ----------------------------------------------------------------------------- dictionary
# Which words assert each catalog abnormality (used to recognise a sample's own findings).
FINDING_PATTERNS: dict[str, re.Pattern] = {
    name: re.compile(p, _I)
    for name, p in {
        "Emphysema": r"\bemphysem\w*",
        "Atelectasis": r"\batelecta\w*|\bcollaps\w*",
        "Lung nodule": r"\bnodul\w*",
        "Lung opacity": r"\bopacit\w*|(?:ground|frosted)[- ]?glass|increase\w* (?:in )?densit"
        r"|densit\w* increase",
        "Pulmonary fibrotic sequela": r"\bfibro(?:tic|sis)\b|\bsequela\w*|\bscar",
        "Pleural effusion": r"pleura\w*.{0,40}(?:effusion|fluid)|(?:effusion|fluid).{0,40}pleura",
        "Mosaic attenuation pattern": r"\bmosaic\b",
        "Peribronchial thickening": r"\bperibronch\w*|bronchial wall\w* thick\w*",
        "Consolidation": r"\bconsolidat\w*",
        "Bronchiectasis": r"\bbronchiecta\w*|bronchi are dilated",
        "Interlobular septal thickening": r"\bsept(?:a|al)\b.{0,30}thick|thick\w*.{0,30}\bsepta",
        "Medical material": r"\bpacemaker|\bcatheter|\bstents?\b|\bdevice|\bmetallic|material",
        "Cardiomegaly": r"\bcardiomegaly|\benlarg\w*|\bincreas\w* in size|size\w* .{0,20}increas",
        "Pericardial effusion": r"pericardi\w*.{0,40}(?:effusion|fluid)|(?:effusion|fluid).{0,40}"
        r"pericardi|fluid around the heart",
        "Coronary artery wall calcification": r"coronar\w*.{0,60}(?:calcif|plaque|atheroscl|"
        r"atherom)|(?:calcif|plaque|atheroscl|atherom)\w*.{0,60}coronar",
        "Arterial wall calcification": r"\bcalcif\w*|\bplaques?\b|\batherom\w*|\batheroscl\w*",
        "Hiatal hernia": r"\bhiat(?:al|us)\b|\bherni\w*",
        "Lymphadenopathy": r"\blymphadenopath\w*|lymph nodes?.{0,30}enlarg|enlarg\w*.{0,30}lymph",
        "Hepatic steatosis": r"\bsteatosis\b|\bfatty\b|\bfat\b|densit\w* is decreased",
        "Liver lesion": r"\blesions?\b|\bhypodens\w*|\bmass\b",
        "Splenomegaly": r"\bsplenomegaly\b|\benlarg\w*",
        "Renal cyst": r"\bcysts?\b|\bcystic\b",
    }.items()
}
PLACEHOLDER_VALUES = {"mm": "12", "cm": "15", "side": "right"}


class DictionaryEntry(NamedTuple):
    """One abnormal sentence of the dictionary, with the finding it describes."""

    anatomy: str
    abnormality: str
    sentence: str


def fill_placeholders(phrasing: str) -> str:
    """A catalog phrasing with ``{size}`` (12 mm, or 15 cm) and ``{side}`` (right) filled."""
    out = re.sub(r"\{size\}(?=\s*cm)", PLACEHOLDER_VALUES["cm"], phrasing)
    return out.replace("{size}", PLACEHOLDER_VALUES["mm"]).replace(
        "{side}", PLACEHOLDER_VALUES["side"]
    )


def dictionary_entries(anatomy_name: str | None = None) -> tuple[DictionaryEntry, ...]:
    """Dictionary entries of one anatomy, or of the whole catalog in catalog order."""
    chosen = ANATOMIES if anatomy_name is None else (anatomy(anatomy_name),)
    return tuple(
        DictionaryEntry(a.name, ab.name, fill_placeholders(p))
        for a in chosen
        for ab in a.abnormalities
        for p in ab.phrasings
    )


def abnormality_dictionary(anatomy_name: str) -> tuple[str, ...]:
    """The anatomy's abnormal sentences (catalog phrasings, placeholders filled): the diagnosis
    loss's extra negatives."""
    return tuple(e.sentence for e in dictionary_entries(anatomy_name))


def findings(anatomy_name: str, text: str) -> frozenset[str]:
    """Names of the anatomy's catalog abnormalities that ``text`` asserts (not negated)."""
    abnormalities: tuple[Abnormality, ...] = anatomy(anatomy_name).abnormalities
    return frozenset(ab.name for ab in abnormalities if _asserted(FINDING_PATTERNS[ab.name], text))


def matches_findings(
    sentence: str | DictionaryEntry, text: str, anatomy_name: str | None = None
) -> bool:
    """Whether a dictionary sentence describes the sample's own findings in ``text``.

    True when ``text`` contains the sentence verbatim or asserts the same catalog abnormality
    (for a plain string: any abnormality the sentence asserts, in ``anatomy_name`` or the anatomy
    the sentence routes to). Such a sentence is a positive in disguise, never a negative.
    """
    if isinstance(sentence, DictionaryEntry):
        name, claimed = sentence.anatomy, {sentence.abnormality}
        sentence = sentence.sentence
    else:
        name = anatomy_name or route_sentence(sentence)
        if name is None:
            return sentence in text
        claimed = findings(name, sentence)
    return sentence in text or bool(claimed & findings(name, text))


def exclusion_mask(
    texts: Sequence[Sequence[str]],
    entries: Sequence[DictionaryEntry],
    anatomy_names: Sequence[str] = ANATOMY_NAMES,
) -> np.ndarray:
    """(B, K, M) bool: dictionary entry m matches the findings of sample b's anatomy k.

    ``texts`` holds B lists of K descriptions, one per name of ``anatomy_names`` (default the
    whole catalog, in catalog order; "" where absent); only entries of anatomy k can match anatomy
    k (:func:`matches_findings`). This is the ``exclude`` argument of the diagnosis loss.
    """
    k = len(anatomy_names)
    if any(len(row) != k for row in texts):
        raise ValueError(
            f"texts: expected lists of K={k} descriptions, one per {list(anatomy_names)}"
        )
    mask = np.zeros((len(texts), k, len(entries)), dtype=bool)
    for b, row in enumerate(texts):
        for ki, (name, text) in enumerate(zip(anatomy_names, row, strict=True)):
            if not text:
                continue
            own = findings(name, text)
            for m, e in enumerate(entries):
                mask[b, ki, m] = e.anatomy == name and (e.abnormality in own or e.sentence in text)
    return mask
