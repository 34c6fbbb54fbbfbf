"""Report text -> one description per catalog anatomy.

A CT report is free text; the losses need one description per catalog anatomy. The pipeline is
rule based (no model, no network) and never rewrites text:

1. :func:`split_sentences` cuts the text into sentences, verbatim (only stripped). It splits after
   ``.``/``!``/``?`` followed by a space, a capital or a digit (CT-RATE glues impression and
   findings as ``"...lungs.There are..."``) and keeps decimals (``1.5 cm``) and abbreviations
   (``e.g.``, ``approx.``) intact. A text with no sentence punctuation at all is split into
   *phrases* at newlines, semicolons and commas instead (see :func:`split_report` for how phrases
   of the same anatomy are glued back).
2. :func:`route_sentence` scores each sentence against per-anatomy vocabularies (weighted
   regular expressions of general radiology words). The best score wins; ties go to the more
   specific organ (``ROUTING_PRIORITY``, lung last because its vocabulary is the broadest), so
   "No pleural or pericardial effusion" is a heart sentence and "atheroma plaques in the aortic
   arch and coronary arteries" an aorta sentence, as CT-RATE's per-anatomy split files them.
   Sentences about organs outside the catalog (bones, thyroid, ...) route to ``None``.
3. :func:`split_report` collects the sentences per anatomy. A sentence with no anatomical cue at
   all ("It is wider than normal.") continues the anatomy of the sentence before it; one with a
   non-catalog cue, or a cue-less first sentence, is dropped. Anatomies the report does not
   mention get the catalog's :attr:`~cagcl_mini.anatomy.Anatomy.normal_sentence`.

Abnormal flags and the abnormality dictionary are :mod:`cagcl_mini.text.findings`.
"""

from __future__ import annotations

import re
import warnings

from cagcl_mini.anatomy import ANATOMIES, ANATOMY_NAMES

_I = re.IGNORECASE

# ----------------------------------------------------------------------------- sentences
# Abbreviations whose period never ends a sentence ("No." only before a number).
_ABBREVIATIONS = frozenset("e.g i.e vs approx cf dr mr mrs ms fig figs incl resp no".split())
_TERMINAL = re.compile(r"[.!?]+[)\"'\]]*")
_LINE_START = re.compile(r"\n(?=[ \t]*[A-Z0-9\u2022*-])|\n[ \t]*\n")
_PHRASE_SEP = re.compile(r"[\n;,]")


def _is_boundary(text: str, start: int, end: int) -> bool:
    """Whether the punctuation run text[start:end] ends a sentence."""
    if end >= len(text):
        return True
    nxt, prev = text[end], text[start - 1] if start else ""
    word = re.search(r"[A-Za-z.]*$", text[:start]).group().strip(".").lower()
    if nxt.isspace():
        if text[start] == "." and word in _ABBREVIATIONS:
            return word == "no" and not re.match(r"\s*\d", text[end:])
        return True
    if not nxt.isalnum():  # "disease?, small airway"
        return False
    if text[start] != ".":  # "disease?Next"
        return True
    if prev.isdigit():  # "1.5 cm" stays whole, "image 216.Heart" splits
        return nxt.isupper()
    if prev.isalpha():  # "lungs.There", "lungs.2 nodules", "abnormalities.mediastinal"; not "e.g."
        return (
            len(re.search(r"[A-Za-z]*$", text[:start]).group()) >= 2 and word not in _ABBREVIATIONS
        )
    return nxt.isupper()


# In unpunctuated text a new statement often starts at an organ word ("lungs clear heart normal").
_HEAD = re.compile(
    r"\b(?:lungs?|pleural|heart|cardiac|pericardial|aort(?:a|ic)|o?esophag\w*|hiatal|trachea"
    r"|mediastin\w*|liver|spleen|kidneys?)\b",
    _I,
)
_DETERMINER = re.compile(r"\b(?:the|a|an|no|both|either|bilateral|thoracic)\s+$", _I)
_BINDS_BACK = re.compile(
    r"\b(?:in|of|at|on|to|into|from|near|along|next|around|within|between|with|without|and|or"
    r"|nor)\s+$",
    _I,
)


def _head_cuts(text: str) -> list[int]:
    """Starts of statements that open with an organ word, in unpunctuated text.

    An organ word (with its determiners: "the heart", "no pleural") starts a new phrase unless a
    preposition or conjunction ties it to what precedes ("plaques in the aorta", "pleural or
    pericardial"). Neighbouring phrases of one anatomy are glued back by :func:`split_report`.
    """
    cuts = []
    for m in _HEAD.finditer(text):
        start = m.start()
        while det := _DETERMINER.search(text, 0, start):
            start = det.start()
        if start > 0 and not _BINDS_BACK.search(text, 0, start):
            cuts.append(start)
    return cuts


def _phrase_mode(text: str) -> bool:
    """True when no punctuation of the text ends a sentence: then phrases are the unit."""
    return not any(_is_boundary(text, m.start(), m.end()) for m in _TERMINAL.finditer(text))


def sentence_spans(text: str, phrases: bool = True) -> list[tuple[int, int]]:
    """(start, end) of each stripped sentence (or phrase, for unpunctuated text)."""
    cuts = [m.end() for m in _TERMINAL.finditer(text) if _is_boundary(text, m.start(), m.end())]
    cuts += [m.start() for m in _LINE_START.finditer(text)]
    strip = " \t\r\n"
    if phrases and _phrase_mode(text):
        cuts += [m.end() for m in _PHRASE_SEP.finditer(text)] + _head_cuts(text)
        strip += ";,"
    spans: list[tuple[int, int]] = []
    start = 0
    for cut in sorted(set(cuts)) + [len(text)]:
        piece = text[start:cut]
        body = piece.lstrip(strip).rstrip(strip)
        if body:
            s = start + len(piece) - len(piece.lstrip(strip))
            if spans and not re.search(r"[A-Za-z]{2}", text[spans[-1][0] : spans[-1][1]]):
                s = spans.pop()[0]  # a list marker such as "1." belongs to the next sentence
            spans.append((s, s + len(text[s:cut].rstrip(strip))))
        start = cut
    return spans


def split_sentences(text: str) -> list[str]:
    """Sentences of a report, verbatim and stripped; [] for empty or whitespace-only text.

    Without any ``.``/``!``/``?`` boundary the text is cut into phrases at newlines, semicolons and
    commas, so an unpunctuated lower-case report still separates its statements.
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be a str, got {type(text).__name__}")
    return [text[s:e] for s, e in sentence_spans(text)]


# ----------------------------------------------------------------------------- routing
def _cues(*pairs: tuple[str, int]) -> tuple[tuple[re.Pattern, int], ...]:
    return tuple((re.compile(p, _I), w) for p, w in pairs)


# Weighted vocabularies; each pattern counts once per sentence.
ROUTING_CUES: dict[str, tuple[tuple[re.Pattern, int], ...]] = {
    "lung": _cues(
        (r"\blungs?\b|\b(?:intra)?pulmonary\b(?!\s+(?:arter|trunk|conus|vein))", 3),
        (r"\bpleura\w*|\bsubpleural|\bpneumothora\w*", 3),
        (r"\blob(?:e|es|ar|ectomy)\b|\bmultilobar|\blingul\w*|\bfissures?\b", 2),
        (r"\b(?:peri)?bronch\w*|\bnodul\w*|ground[- ]?glass|frosted[- ]glass", 2),
        (r"\bconsolidat\w*|\batelecta\w*|\bemphysem\w*|\bpneumoni\w*|\bmosaic\b", 2),
        (r"\bfibro(?:tic|sis)\b|\bsequela\w*|\bopacit\w*|\bsepta[l]?\b|\binterlobular", 2),
        (r"\bparaseptal|\bcentr\w*(?:lobular|acinar)\b|tree[- ](?:in|with)[- ]buds?", 2),
        (r"\bbudding[- ]trees?|\baerat\w*|\bventilation\b", 2),
        (r"\bparenchym\w*|\binfiltrat\w*|\bcovid\w*|\bviral\b|\binfect\w*|\bhalo\b", 1),
        (r"\b(?:sub)?segment(?:s|al)?\b|\bapex\b|\bapical\b|\bbas(?:al|es)\b|\bdensit\w*", 1),
    ),
    "heart": _cues(
        (r"\bheart\b|\bcardi(?:ac|o\w*)|\bpericardi\w*|\b(?:myo|endo)cardi\w*", 3),
        (r"\bcoronar\w*|\batri(?:a|al|um)\b|\bventric\w*|\bpacemaker|\bLAD\b", 3),
        (r"\bmitral\b|\btricuspid\b|\bcircumflex\b", 3),
    ),
    "aorta": _cues(
        (r"\baort\w*", 3),
        (r"\batherom\w*|\batheroscl\w*|\baneurysm\w*|\bdissection\b", 2),
        (r"\bpulmonary\s+(?:arter\w*|trunk|conus)|\b(?:brachiocephalic|subclavian)\b", 2),
        (r"\bplaques?\b|\barter(?:y|ies|ial)\b|\barch\b|\b(?:a|de)scending\b", 1),
        (r"\bvascular structures?\b|\bgreat vessels\b", 1),
    ),
    "esophagus": _cues((r"o?esophag\w*|\bhiat(?:al|us)\b", 3)),
    "trachea": _cues(
        (r"trache\w*|\blymph\w*|\bcarina\b|\bmain ?(?:stem )?bronch\w*", 3),
        (r"\bairways?\b", 2),
    ),
    "liver": _cues((r"\bliver\b|\bhepat\w*", 3), (r"\bsteatosis\b", 2)),
    "spleen": _cues((r"\bspleen\b|\bsplen\w*", 3)),
    "kidney": _cues((r"\bkidneys?\b|\brenal\b|\bnephr\w*", 3)),
}
# Organs and topics outside the catalog: a sentence scoring higher here is dropped.
OTHER_CUES = _cues(
    (
        r"\b(?:bones?|bony|osseous|skelet\w*|vertebra\w*|spin(?:e|al)|ribs?|stern(?:um|al)"
        r"|clavicles?|scapula\w*|osteophyt\w*|thyroid|breasts?|axilla\w*|adrenal\w*|pancrea\w*"
        r"|gall ?bladder|bowel|colon|intestin\w*|stomach|subcutaneous|muscles?)\b",
        3,
    ),
    (r"\b(?:technique|protocol|slice thickness|reconstruct\w*|contrast|abdom\w*)\b", 1),
)
# Tie-break: the more specific organ first, lung (broadest vocabulary) last.
ROUTING_PRIORITY: tuple[str, ...] = (
    "esophagus", "trachea", "aorta", "heart", "liver", "spleen", "kidney", "lung"
)  # fmt: skip
assert set(ROUTING_PRIORITY) == set(ANATOMY_NAMES), "routing must cover the catalog"


def _score(cues: tuple[tuple[re.Pattern, int], ...], sentence: str) -> int:
    return sum(w for p, w in cues if p.search(sentence))


def _route(sentence: str) -> tuple[str | None, bool]:
    """(anatomy or None, whether the sentence had any cue at all)."""
    scores = {name: _score(ROUTING_CUES[name], sentence) for name in ROUTING_PRIORITY}
    best = max(ROUTING_PRIORITY, key=lambda n: (scores[n], -ROUTING_PRIORITY.index(n)))
    other = _score(OTHER_CUES, sentence)
    if scores[best] == 0 or other > scores[best]:
        return None, bool(other or scores[best])
    return best, True


def route_sentence(sentence: str) -> str | None:
    """The catalog anatomy a sentence is about, or None (other organs, technique, no cue)."""
    return _route(sentence)[0]


def split_report(text: str) -> dict[str, str]:
    """Anatomy name -> its sentences joined by " " in report order, for every catalog anatomy.

    Cue-less sentences continue the previous sentence's anatomy; non-catalog sentences are
    dropped; unmentioned anatomies get their catalog normal sentence. In an unpunctuated report,
    consecutive phrases of one anatomy are kept as the one verbatim stretch they form. An empty
    report gives every anatomy its normal sentence and a warning.
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be a str, got {type(text).__name__}")
    spans = sentence_spans(text)
    if not spans:
        warnings.warn("empty report: every anatomy gets its catalog normal sentence", stacklevel=2)
    phrase_mode = _phrase_mode(text)
    parts: dict[str, list[tuple[int, int]]] = {name: [] for name in ANATOMY_NAMES}
    previous = None
    for s, e in spans:
        name, has_cue = _route(text[s:e])
        if name is None and not has_cue:
            name = previous
        if name is not None:
            bucket = parts[name]
            if phrase_mode and bucket and previous == name:
                bucket[-1] = (bucket[-1][0], e)
            else:
                bucket.append((s, e))
        previous = name
    return {
        a.name: " ".join(text[s:e] for s, e in parts[a.name]) or a.normal_sentence
        for a in ANATOMIES
    }
