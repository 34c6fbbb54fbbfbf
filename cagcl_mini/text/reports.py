"""Report text -> one description per catalog anatomy.

A CT report is free text; the losses need one description per catalog anatomy. The pipeline is
rule based (no model, no network) and never rewrites text, except that :func:`split_report`
first removes slice citations ("(series 2, image 37)", :func:`cagcl_mini.text.citations.strip_citations`):
they locate a finding in the scan, they do not describe it, so the contrastive losses never see them.

1. :func:`split_sentences` cuts the text into sentences, verbatim (only stripped). It splits after
   ``.``/``!``/``?`` followed by a space, a capital or a digit (CT-RATE glues impression and
   findings as ``"...lungs.There are..."``) and keeps decimals (``1.5 cm``) and abbreviations
   (``e.g.``, ``approx.``) intact. A text with no sentence punctuation at all (a lower-case
   report without ``.``) is split into *phrases* at newlines, semicolons and commas, and into
   *clauses* where a new statement starts: "there is", "no"/"the"/"mild" opening a noun phrase, a
   statement's last word ("... are normal"), an organ word with its adjectives ("the left lung"),
   unless a preposition, conjunction or verb ties it to what precedes (:func:`_clause_cuts`).
2. :func:`route_sentence` scores each sentence against per-anatomy vocabularies (weighted
   regular expressions of general radiology words). The best score wins; ties go to the more
   specific organ (``ROUTING_PRIORITY``, lung last because its vocabulary is the broadest), so
   "No pleural or pericardial effusion" is a heart sentence and "atheroma plaques in the aortic
   arch and coronary arteries" an aorta sentence, as CT-RATE's per-anatomy split files them.
   Sentences about organs outside the catalog (bones, thyroid, ...) route to ``None``.
3. :func:`split_report` collects the sentences per anatomy (:func:`route_spans`). A sentence
   with no anatomical cue at all ("It is wider than normal.") continues the anatomy of the sentence
   before it; one with a non-catalog cue, or a cue-less first sentence, is dropped. Anatomies the
   report does not mention get the catalog's :attr:`~cagcl_mini.anatomy.Anatomy.normal_sentence`.
   Neighbouring clauses of one anatomy in an unpunctuated report are kept as the one verbatim
   stretch they form, and such a report warns (:data:`UNPUNCTUATED_WARNING`) that it was split
   heuristically.

Abnormal flags and the abnormality dictionary are :mod:`cagcl_mini.text.findings`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable

from cagcl_mini.anatomy import ANATOMIES, ANATOMY_NAMES
from cagcl_mini.text.citation_patterns import strip_citations

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


# ----------------------------------------------------------------------------- clauses
# Text without sentence punctuation ("lungs clear no pleural effusion the heart is normal") is cut
# into clauses where a new statement starts. The word classes below are general radiology
# English; each is matched against one whole word, in any case.
def _words(pattern: str) -> re.Pattern:
    return re.compile(rf"(?:{pattern})", _I)


# A word that ties the next word to what precedes it: prepositions, conjunctions, verbs.
_BINDER = _words(
    r"in|of|at|on|to|into|onto|from|near|along|next|around|within|between|with|without|by|for"
    r"|than|as|via|over|under|above|below|behind|beneath|across|through|throughout|towards?|per"
    r"|and|or|nor|is|are|was|were|be|been|being|has|have|had|shows?|showed|shown|showing"
    r"|demonstrat\w*|reveal\w*|contain\w*|suggest\w*|includ\w*|involv\w*|accompan\w*|caus\w*"
    r"|measur\w*|extend\w*|surround\w*|reach\w*|exceed\w*|compress\w*|affect\w*|compatible"
    r"|consistent|that|which|whose|its|their|this|these|those|if"
)
# "and" before a new subject does not bind: "the lungs are clear and the heart is normal".
_NEW_SUBJECT = _words(r"the|there")
# Words that open a noun phrase (determiners, quantities, severities): a new statement starts at
# one unless it continues what precedes ("in the", "is a", "the mild").
_DETERMINER = _words(
    r"the|a|an|no|any|some|several|multiple|many|few|numerous|mild|minimal|moderate"
    r"|severe|marked|slight|subtle|focal|diffuse|widespread|extensive|scattered|patchy|dense"
)
# Adjectives inside a noun phrase ("the left lung", "calcified plaques"): one opens a new phrase
# only right after a noun ("... the lower end of the esophagus atherosclerotic changes"). Those
# that can also be said of the noun before them ("aorta calcified") are _PREDICATIVE.
_ATTRIBUTIVE = (
    r"both|either|bilateral|left|right|upper|lower|middle|anterior|posterior|lateral|medial"
    r"|superior|inferior|apical|basal|thoracic|abdominal|ascending|descending|main|major|minor"
    r"|proximal|distal|millimetric|millimeter|centimetric|nonspecific|non|specific|pathological"
    r"|sequelae?|atheroma|fusiform|saccular|aneurysm(?:al|atic)|small|large|tiny|significant"
    r"|linear|tubular|nodular|new|newly|old|chronic|acute"
)
_PREDICATIVE = _words(
    r"calcified|calcific|non-?calcified|atherosclerotic|atheromatous|emphysematous|fibrotic"
    r"|enlarged|dilated|ectatic|thickened|prominent"
)
_MODIFIER = re.compile(f"{_ATTRIBUTIVE}|{_PREDICATIVE.pattern}", _I)
# Organ words: a statement about another organ often starts at one ("lungs clear heart normal"),
# though not right after an organ adjective ("pericardial pleural effusion").
_ORGAN = _words(
    r"lungs?|pleura\w*|heart|cardiac|cardio\w*|pericardi\w*|coronary|aort\w*|o?esophag\w*"
    r"|hiat(?:al|us)|trache\w*|mediastin\w*|lymph|liver|hepatic|spleen|splenic|kidneys?|renal"
    r"|\w+megaly|thyroid|bones?|bony|osseous|vertebra\w*|ribs?|stern(?:um|al)|spine|spinal"
    r"|clavicles?|breasts?|axilla\w*|adrenals?|pancrea\w*|gallbladder|stomach|bowel|colon|abdomen"
)
_ORGAN_ADJECTIVE = _words(
    r"pleural|cardiac|cardio\w+|pericardial|coronary|aortic|o?esophageal|hiatal|tracheal"
    r"|mediastinal|hepatic|splenic|renal|bony|osseous|vertebral|spinal|sternal|adrenal"
)
# Nouns, roughly (common radiology nouns, noun suffixes, plurals): an adjective after one starts
# a new phrase.
_NOUN = _words(
    r"\w+(?:tion|sion|ment|ness|ity|ism|ysm|osis|asis|ema|ure|ia|um|ule|que|ect|ening|owing)"
    r"|\w*[^\Wsu]s|lungs?|heart|aorta|o?esophagus|trachea|bronchi|thorax|liver|spleen|kidney"
    r"|pleura|wall|lobe|level|mass|cyst|size|contour|arch|artery|valve|space|end|sheath|sign"
    r"|pattern|density|area|segment|appearance|change|finding|mm|cm"
)
# Words that end a statement ("... is observed", "... are normal"), and what may still follow one.
_PREDICATE_END = _words(
    r"observed|detected|seen|noted|identified|visuali[sz]ed|evident|present|absent|preserved"
    r"|patent|unremarkable|performed|resorbed|regressed|excluded|normal|natural|clear|limits"
)
_DIMENSION = (
    r"size|sized|calib\w*|caliber|width|dimensions?|appearance|thickness|contour|configuration"
    r"|position|diameter|course"
)
_CONTINUES = _words(rf"\w+ly|{_DIMENSION}|limits|range|variants?|either|both")
_NORMAL_DIMENSION = re.compile(rf"(?:normal|natural)\s+(?:{_DIMENSION})", _I)
_DIMENSION_CHANGED = re.compile(
    rf"(?:{_DIMENSION}|ratio|densit(?:y|ies)|volume)\s+(?:(?:in|de)creased|enlarged|reduced)", _I
)
_NP_INSIDE = re.compile(f"{_DETERMINER.pattern}|{_MODIFIER.pattern}", _I)
_CLAUSE_CONJ = _words(r"but|however|whereas|while|although|though|except")
_THERE_VERB = _words(r"is|are|was|were|has|have|appears?|exists?|seems?")
_STATEMENT_HEAD = _words(r"findings|impression")  # "... findings consistent with pneumonia"
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['\u2019-][A-Za-z0-9]+)*")


def _binds(previous: str, word: str) -> bool:
    """Whether ``previous`` ties ``word`` to what precedes it."""
    if previous.lower() == "and" and _NEW_SUBJECT.fullmatch(word):
        return False
    return bool(_BINDER.fullmatch(previous) or _CLAUSE_CONJ.fullmatch(previous))


def _clause_cuts(text: str, hard: Iterable[int] = ()) -> list[int]:
    """Starts of the clauses of unpunctuated text, given the cuts already made there (``hard``).

    A clause starts at "but"/"however"/..., after a statement's last word ("is observed", "are
    normal", "normal size") unless a preposition or size word continues it, at "there is/are" or
    "findings", at a word that opens a noun phrase ("the", "no", "mild", ...), at an adjective
    right after a noun ("... of the esophagus atherosclerotic changes", but "aorta calcified
    esophagus normal" keeps the adjective with the aorta), and at an organ word with its
    adjectives ("the left lung") -- unless a preposition, conjunction or verb ties it to what
    precedes ("plaques in the aorta", "pleural or pericardial", "there is no"). The last two
    (weaker) cues only cut when the clause so far already names an organ, so "there is a sliding
    type hiatal hernia" stays whole. A clause that still names two organs outright is then cut
    where it best separates them (:func:`_topic_cuts`).
    """
    words = [(m.start(), m.group()) for m in _TOKEN.finditer(text)]

    def after_noun(k: int, adjectives: re.Pattern) -> bool:  # an adjective right after a noun
        return bool(
            k > 0 and adjectives.fullmatch(words[k][1]) and _NOUN.fullmatch(words[k - 1][1])
        )

    def ends_statement(k: int) -> bool:  # "... is observed", "heart size increased", "normal size"
        pair = f"{words[k - 1][1]} {words[k][1]}" if k > 0 else ""
        return bool(
            _PREDICATE_END.fullmatch(words[k][1])
            or _NORMAL_DIMENSION.fullmatch(pair)
            or _DIMENSION_CHANGED.fullmatch(pair)
        )

    hard = sorted(hard)
    cuts: list[int] = []
    start = h = 0  # start of the current clause; next hard cut
    for i, (pos, word) in enumerate(words):
        while h < len(hard) and hard[h] <= pos:
            start, h = max(start, hard[h]), h + 1
        if i == 0:
            continue
        previous = words[i - 1][1]
        following = words[i + 1][1] if i + 1 < len(words) else ""
        cut, weak = None, False
        if _CLAUSE_CONJ.fullmatch(word):
            cut = pos
        elif ends_statement(i - 1) and not (_BINDER.fullmatch(word) or _CONTINUES.fullmatch(word)):
            cut = pos
        elif (
            _DETERMINER.fullmatch(word)
            or _STATEMENT_HEAD.fullmatch(word)
            or (word.lower() == "there" and _THERE_VERB.fullmatch(following))
        ):
            if not (_binds(previous, word) or _NP_INSIDE.fullmatch(previous)):
                cut = pos
        elif after_noun(i, _MODIFIER) and not (_binds(previous, word) or following == "to"):
            k = i
            while k < len(words) and _NP_INSIDE.fullmatch(words[k][1]):
                k += 1
            if k == len(words) or not _ORGAN.fullmatch(words[k][1]):
                cut, weak = pos, True
        if cut is None and _ORGAN.fullmatch(word):
            j = i  # walk back over the organ word's adjectives
            while (
                j > 0
                and words[j - 1][0] >= start
                and _NP_INSIDE.fullmatch(words[j - 1][1])
                and not after_noun(j - 1, _PREDICATIVE)
            ):
                j -= 1
            before = words[j - 1][1] if j > 0 else ""
            if j > 0 and not (_binds(before, words[j][1]) or _ORGAN_ADJECTIVE.fullmatch(before)):
                cut, weak = words[j][0], True
        if cut is None or cut <= start or not text[start:cut].strip(" \t\r\n;,"):
            continue
        if weak and not _has_cue(text[start:cut]):
            continue
        cuts.append(cut)
        start = cut
    bounds = sorted({0, *hard, *cuts, len(text)})
    for a, b in zip(bounds, bounds[1:], strict=False):
        cuts += _topic_cuts(text, [w for w in words if a <= w[0] < b], a, b)
    return cuts


def _topic(text: str) -> tuple[str, int] | None:
    """(anatomy or "other", score) of the text's best cues, when they score at least 3."""
    name, _ = _route(text)
    score = _score(ROUTING_CUES[name], text) if name else _score(OTHER_CUES, text)
    return (name or "other", score) if score >= 3 else None


def _topic_cuts(text: str, words: list[tuple[int, str]], a: int, b: int) -> list[int]:
    """Cuts of the clause text[a:b] that still names two organs outright ("... the heart
    consolidation areas in both lungs"): at the word boundary that best separates them.

    Only where a new phrase may start (not after a preposition, a conjunction, a verb, an
    adjective; not at "proximal to"), at the split with the highest sum of the two halves' scores
    (the latest of equals); each half is split again as needed.
    """
    whole = {**ROUTING_CUES, "other": OTHER_CUES}
    named = [n for n, c in whole.items() if any(w >= 3 and p.search(text, a, b) for p, w in c)]
    if len(named) < 2:
        return []
    best = None
    for k in range(1, len(words)):
        previous, word = words[k - 1][1], words[k][1]
        following = words[k + 1][1] if k + 1 < len(words) else ""
        if (
            _BINDER.fullmatch(word)
            or _CLAUSE_CONJ.fullmatch(word)
            or _binds(previous, word)
            or _NP_INSIDE.fullmatch(previous)
            or _ORGAN_ADJECTIVE.fullmatch(previous)
            or following == "to"
        ):
            continue
        cut = words[k][0]
        left, right = _topic(text[a:cut]), _topic(text[cut:b])
        if (
            left
            and right
            and left[0] != right[0]
            and (best is None or left[1] + right[1] >= best[0])
        ):
            best = (left[1] + right[1], k)
    if best is None:
        return []
    k = best[1]
    cut = words[k][0]
    return [*_topic_cuts(text, words[:k], a, cut), cut, *_topic_cuts(text, words[k:], cut, b)]


def _phrase_mode(text: str) -> bool:
    """True when no punctuation of the text ends a sentence: then phrases are the unit."""
    return not any(_is_boundary(text, m.start(), m.end()) for m in _TERMINAL.finditer(text))


def _spans(text: str, cuts: list[int], strip: str) -> list[tuple[int, int]]:
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


def _sentence_cuts(text: str) -> list[int]:
    cuts = [m.end() for m in _TERMINAL.finditer(text) if _is_boundary(text, m.start(), m.end())]
    return cuts + [m.start() for m in _LINE_START.finditer(text)]


def sentence_spans(text: str, phrases: bool = True) -> list[tuple[int, int]]:
    """(start, end) of each stripped sentence (or phrase, for unpunctuated text).

    With ``phrases`` (the default), text with no sentence punctuation is cut at newlines,
    semicolons, commas and clause starts (:func:`_clause_cuts`).
    """
    cuts = _sentence_cuts(text)
    if phrases and _phrase_mode(text):
        cuts += [m.end() for m in _PHRASE_SEP.finditer(text)]
        return _spans(text, cuts + _clause_cuts(text, cuts), " \t\r\n;,")
    return _spans(text, cuts, " \t\r\n")


def clause_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence; in text with no sentence punctuation, of each clause.

    Clauses are cut at clause starts only (not at commas, so "no A, B or C" stays one list):
    the units in which :mod:`cagcl_mini.text.findings` scopes a negation.
    """
    cuts = _sentence_cuts(text)
    if _phrase_mode(text):
        cuts += _clause_cuts(text, cuts)
    return _spans(text, cuts, " \t\r\n")


def split_sentences(text: str) -> list[str]:
    """Sentences of a report, verbatim and stripped; [] for empty or whitespace-only text.

    Without any ``.``/``!``/``?`` boundary the text is cut into phrases at newlines, semicolons and
    commas and into clauses where a new statement starts, so an unpunctuated lower-case report
    still separates its statements.
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


def _has_cue(text: str) -> bool:
    """Whether the text names a catalog anatomy or another organ or topic."""
    return any(p.search(text) for cues in (*ROUTING_CUES.values(), OTHER_CUES) for p, _ in cues)


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


UNPUNCTUATED_WARNING = (
    "report has no sentence punctuation (. ! ?): it was split into clauses heuristically (at "
    "newlines, semicolons, commas and clause starts such as 'there is', 'no', 'the <organ>'); "
    "check the per-anatomy texts"
)


def route_spans(text: str) -> dict[str, list[tuple[int, int]]]:
    """Anatomy name -> the (start, end) stretches of ``text`` it gets, in report order.

    What :func:`split_report` joins, without its checks and warnings: cue-less sentences continue
    the previous sentence's anatomy, non-catalog sentences are in no stretch, and in a report
    without sentence punctuation consecutive clauses of one anatomy form one stretch.
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be a str, got {type(text).__name__}")
    return _route_spans(text, sentence_spans(text))


def _route_spans(text: str, spans: list[tuple[int, int]]) -> dict[str, list[tuple[int, int]]]:
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
    return parts


def split_report(text: str) -> dict[str, str]:
    """Anatomy name -> its sentences joined by " " in report order, for every catalog anatomy.

    Cue-less sentences continue the previous sentence's anatomy; non-catalog sentences are
    dropped; unmentioned anatomies get their catalog normal sentence (:func:`route_spans`). A
    report with no sentence punctuation at all (say lower case without ``.``) is cut into clauses
    (:func:`sentence_spans`), consecutive clauses of one anatomy are kept as the one verbatim
    stretch they form, and a warning (:data:`UNPUNCTUATED_WARNING`) says it was split
    heuristically. An empty report gives every anatomy its normal sentence and a warning.
    Slice citations are stripped first (:func:`~cagcl_mini.text.citations.strip_citations`).
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be a str, got {type(text).__name__}")
    text = strip_citations(text)
    spans = sentence_spans(text)
    if not spans:
        warnings.warn("empty report: every anatomy gets its catalog normal sentence", stacklevel=2)
    elif _phrase_mode(text):
        warnings.warn(UNPUNCTUATED_WARNING, stacklevel=2)
    parts = _route_spans(text, spans)
    return {
        a.name: " ".join(text[s:e] for s, e in parts[a.name]) or a.normal_sentence
        for a in ANATOMIES
    }
