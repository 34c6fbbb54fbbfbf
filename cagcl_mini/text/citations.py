"""Slice citations in report text: "(series 2, image 37)", and the (snippet, slice) pairs they give.

Radiologists point at the slice that shows a finding: "nodules measuring 7 mm in series 2 image
216", "(series 2, image 37)", "image 37 of series 2", "series 5, images 100-110". Each such
citation ties a sentence (the *snippet*) to an axial position in the scan, which is the
supervision intra-scan localisation trains on (arXiv 2603.02026 mines 262k such pairs).

- :data:`CITATION` is the one pattern: a series number and an image number (or range), in
  either order, optionally in parentheses or after a preposition ("in", "on", "at", "see").
  Both numbers are required, so "within the sections", "in the axial sections of the apex" or "a
  series of nodules" never match.
- :func:`find_citations` lists the citations of a text with their character spans;
  :func:`strip_citations` removes them cleanly (with their preposition or parentheses, no double
  space, no dangling comma or parenthesis) and is what the contrastive losses' text goes
  through (:func:`cagcl_mini.text.reports.split_report` calls it);
- :func:`mine_citations` gives one :class:`SnippetCitation` per cited sentence: the sentence
  without its citation, the series, and the image (range).

"image N" counts the slices of the series as stored, 1-based (CT-RATE's usage).
"""

from __future__ import annotations

from cagcl_mini.text.citation_patterns import (
    CITATION,
    Citation,
    SnippetCitation,
    find_citations,
    strip_citations,
)
from cagcl_mini.text.reports import sentence_spans

__all__ = [
    "CITATION",
    "Citation",
    "SnippetCitation",
    "find_citations",
    "mine_citations",
    "strip_citations",
]


def mine_citations(text: str) -> list[SnippetCitation]:
    """One (snippet, series, image) pair per citation: the snippet is the sentence holding the
    citation, with every citation stripped.

    Sentences are :func:`cagcl_mini.text.reports.sentence_spans` of the text with its citations
    blanked out (so the commas inside "series 2, image 37" never cut a phrase of an unpunctuated
    report); a citation belongs to the sentence it is in or follows, unless it opens a sentence
    (after a ``.``/``!``/``?``): then to the sentence after it.
    """
    found = find_citations(text)
    if not found:
        return []
    blanked = list(text)
    for c in found:
        blanked[c.start : c.end] = " " * (c.end - c.start)
    spans = sentence_spans("".join(blanked))
    pairs = []
    for c in found:
        before = [(s, e) for s, e in spans if s <= c.start]
        after = [(s, e) for s, e in spans if s >= c.end]
        if before and (
            before[-1][1] >= c.start or not after or text[before[-1][1] - 1] not in ".!?"
        ):
            s, e = before[-1]
        elif after:
            s, e = after[0]
        else:  # the text is only the citation
            s, e = c.start, c.end
        snippet = strip_citations(text[min(s, c.start) : max(e, c.end)]).strip()
        if snippet:  # a citation with no words around it locates nothing
            pairs.append(SnippetCitation(snippet, c.series, c.image, c.image_end))
    return pairs
