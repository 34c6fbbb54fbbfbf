"""Slice citations in report text, as patterns: find them, strip them.

The pattern layer of :mod:`cagcl_mini.text.citations` (which adds the miner of (snippet, slice)
pairs on top of the sentence splitter): :mod:`cagcl_mini.text.reports` strips citations with
:func:`strip_citations` before it splits a report, so this module imports nothing of the text
package. See :mod:`cagcl_mini.text.citations` for what is accepted and what is rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = r"\d{1,5}"
_NO = r"(?:\s*(?:no\.?|nos\.?|number|num\.?|#|:))?\s*"


def _series(s: str) -> str:
    return rf"\bseries{_NO}(?P<{s}>{_NUMBER})\b"


def _image(i: str, j: str) -> str:
    return (
        rf"\b(?:images?|ims?\.?|img\.?){_NO}(?P<{i}>{_NUMBER})"
        rf"(?:\s*(?:-|\u2013|to|through)\s*(?P<{j}>{_NUMBER}))?\b"
    )


_SERIES_IMAGE = _series("s1") + r"\s*[,/;:]?\s*(?:and\s+)?" + _image("i1", "j1")
_IMAGE_SERIES = _image("i2", "j2") + r"\s*(?:,|of|in|on|from)?\s*" + _series("s2")
_BODY = rf"(?:{_SERIES_IMAGE}|{_IMAGE_SERIES})"
CITATION = re.compile(
    rf"(?:(?P<paren>[(\[])\s*(?:see\s+)?|\b(?:in|on|at|see)\s+(?:the\s+)?)?{_BODY}"
    r"(?(paren)\s*[)\]])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Citation:
    """One slice citation: where it is in the text, its series and its image (range)."""

    start: int
    end: int
    series: int
    image: int
    image_end: int | None = None  # last image of a range ("images 100-110"), else None

    @property
    def centre(self) -> float:
        """The cited image number, or the middle of a cited range."""
        return self.image if self.image_end is None else (self.image + self.image_end) / 2


@dataclass(frozen=True)
class SnippetCitation:
    """A (snippet, slice) pair: the cited sentence without its citation(s), and the slice."""

    snippet: str
    series: int
    image: int
    image_end: int | None = None

    @property
    def centre(self) -> float:
        """The cited image number, or the middle of a cited range."""
        return self.image if self.image_end is None else (self.image + self.image_end) / 2


def find_citations(text: str) -> list[Citation]:
    """The slice citations of ``text``, in order, each with its span (parentheses or a leading
    preposition included, so removing the span removes the whole citation)."""
    if not isinstance(text, str):
        raise TypeError(f"report text must be a str, got {type(text).__name__}")
    out = []
    for m in CITATION.finditer(text):
        g = m.groupdict()
        key = "1" if g["s1"] is not None else "2"
        image, last = int(g["i" + key]), g["j" + key]
        out.append(
            Citation(
                m.start(),
                m.end(),
                int(g["s" + key]),
                image,
                int(last) if last is not None and int(last) != image else None,
            )
        )
    return out


def _join(left: str, right: str, capital: bool = False) -> str:
    """The text on both sides of a removed citation, joined without a double space, a comma
    before punctuation or a pair of commas that only framed the citation; a sentence that began
    with a ``capital`` citation ("Series 2, image 4 shows ...") begins with a capital again."""
    left, right = left.rstrip(" \t"), right.lstrip(" \t")
    if left.endswith(",") and right[:1] in (",", ".", ";", ":", "!", "?", ")", ""):
        left = left[:-1].rstrip(" \t")
        if right.startswith(","):
            right = right[1:].lstrip(" \t")
    elif left.endswith("(") and right.startswith(")"):
        left, right = left[:-1].rstrip(" \t"), right[1:].lstrip(" \t")
    if capital and (not left.strip() or left.rstrip()[-1] in ".!?"):
        right = right[:1].upper() + right[1:]
    if not left or left[-1] in "\n\r" or not right or right[0] in ".,;:!?)\n\r":
        return left + right
    return f"{left} {right}"


def strip_citations(text: str) -> str:
    """``text`` without its slice citations; text without one comes back unchanged (the same
    string), and nothing outside the citations changes."""
    found = find_citations(text)
    if not found:
        return text
    out = text[: found[0].start]
    for k, c in enumerate(found):
        following = text[c.end : found[k + 1].start if k + 1 < len(found) else len(text)]
        capital = next((ch.isupper() for ch in text[c.start : c.end] if ch.isalpha()), False)
        out = _join(out, following, capital)
    return out
