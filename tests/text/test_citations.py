"""Slice citations: the miner on phantom and real CT-RATE text, the rejections, stripping."""

from __future__ import annotations

import json
import re

import pytest
from conftest import shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from cagcl_mini.anatomy import ABNORMALITIES, ABNORMALITY_BY_NAME
from cagcl_mini.phantom import plan as plan_module
from cagcl_mini.phantom.plan import CITED_SERIES, plan_case
from cagcl_mini.text.citations import (
    Citation,
    SnippetCitation,
    find_citations,
    mine_citations,
    strip_citations,
)
from cagcl_mini.text.reports import split_report

REAL = ("ct_rate_reports", "per_anatomy_findings.json")
LEFT_OVER = re.compile(r"\bseries\s*\d|\bimages?\s*\d", re.IGNORECASE)
REAL_CITED = "train_10017_a"
REAL_SNIPPETS = [
    "Non-specific nodules measuring 7 mm in both lungs, the largest in the lower lobe on the "
    "right.",
    "There is a non-specific nodule measuring 7 mm in both lungs, the largest in the lower lobe "
    "on the right.",
]


@pytest.mark.parametrize(
    ("text", "stripped", "pairs"),
    [
        ("A nodule in the left lung (series 2, image 37).", "A nodule in the left lung.",
         [("A nodule in the left lung.", 2, 37, None)]),
        ("Nodules measuring 7 mm in series 2 image 216 in both lungs.",
         "Nodules measuring 7 mm in both lungs.",
         [("Nodules measuring 7 mm in both lungs.", 2, 216, None)]),
        ("A mass, series 5, images 100-110, in the right lung.", "A mass in the right lung.",
         [("A mass in the right lung.", 5, 100, 110)]),
        ("A cyst is seen on image 37 of series 2.", "A cyst is seen.",
         [("A cyst is seen.", 2, 37, None)]),
        ("A nodule [Series 3, Image 4]. The heart is normal.", "A nodule. The heart is normal.",
         [("A nodule.", 3, 4, None)]),
        ("The lungs are clear. Series 2 image 4 shows a nodule.",
         "The lungs are clear. Shows a nodule.", [("Shows a nodule.", 2, 4, None)]),
    ],
)  # fmt: skip
def test_citations_are_mined_and_stripped(text, stripped, pairs):
    assert strip_citations(text) == stripped
    assert [(p.snippet, p.series, p.image, p.image_end) for p in mine_citations(text)] == pairs


@pytest.mark.parametrize(
    "text",
    [
        "No pathological wall thickness increase was observed in the esophagus within the sections.",
        "In the axial sections of the apex, a soft tissue density appearance is observed.",
        "A series of nodules in both lungs.",
        "Image quality is limited by motion.",
        "Series 2 shows no nodule.",
        "Nodule in image 37.",
        "Evaluated in sections 3 to 5 of the series.",
    ],
)
def test_sentences_without_a_series_and_image_number_are_rejected(text):
    assert find_citations(text) == [] and mine_citations(text) == []
    assert strip_citations(text) is text  # untouched, the very same string


def test_citation_spans_and_ranges():
    (c,) = find_citations("Nodule (series 2, images 30 to 34) seen.")
    assert c == Citation(7, 34, 2, 30, 34) and c.centre == 32
    assert SnippetCitation("x", 2, 5).centre == 5
    (same,) = find_citations("series 2 image 5-5")
    assert same.image_end is None  # a "range" of one image is that image
    with pytest.raises(TypeError, match="report text must be a str, got NoneType"):
        find_citations(None)


def _uncited_plan(monkeypatch, *args):
    """The plan the same case would have without citations (the choice patched away)."""
    with monkeypatch.context() as m:
        m.setattr(plan_module, "choose_citations", lambda specs, rng: [])
        return plan_case(*args)


def test_phantom_citations_mine_back_exactly(monkeypatch):
    cited = 0
    for pid in range(1, 41):
        plan = plan_case(0, "train", pid, 32)
        text = plan.report["Findings_EN"]
        pairs = mine_citations(text)
        assert sorted(p.image for p in pairs) == sorted(plan.citations.values()), text
        for name, image in plan.citations.items():
            (pair,) = [p for p in pairs if p.image == image and _is_sentence_of(name, p.snippet)]
            assert pair.series == CITED_SERIES and pair.image_end is None
        plain = _uncited_plan(monkeypatch, 0, "train", pid, 32)
        assert strip_citations(text) == plain.report["Findings_EN"]
        assert split_report(text) == split_report(plain.report["Findings_EN"])
        assert not LEFT_OVER.search(strip_citations(text))
        cited += len(plan.citations)
    assert cited >= 8, "some phantom findings cite their slice"


def _is_sentence_of(name: str, snippet: str) -> bool:
    ab = ABNORMALITY_BY_NAME[name]
    pattern = "|".join(
        re.escape(p).replace(r"\{size\}", r"[\d.]+").replace(r"\{side\}", "(?:left|right)")
        for p in ab.phrasings
    )
    return re.fullmatch(pattern, snippet) is not None


def test_real_ct_rate_citations_and_rejections():
    path = shared_path(*REAL)
    cases = json.loads(path.read_text())
    mined = {
        (case, name): mine_citations(text)
        for case, texts in cases.items()
        for name, text in texts.items()
    }
    found = {key: pairs for key, pairs in mined.items() if pairs}
    assert list(found) == [(REAL_CITED, "lung")]
    assert [(p.snippet, p.series, p.image) for p in found[REAL_CITED, "lung"]] == [
        (s, 2, 216) for s in REAL_SNIPPETS
    ]
    sections = [
        s
        for texts in cases.values()
        for text in texts.values()
        for s in re.split(r"(?<=\.)", text)
        if re.search(r"\bsections?\b|\bseries\b", s, re.IGNORECASE) and "image" not in s
    ]
    assert len(sections) >= 8 and any("axial sections of the apex" in s for s in sections)
    assert all(find_citations(s) == [] for s in sections), sections
    for texts in cases.values():
        report = " ".join(texts.values())
        stripped = strip_citations(report)
        assert not LEFT_OVER.search(stripped)
        plain = report.replace(" in series 2 image 216", "")
        assert stripped == plain
        assert split_report(report) == split_report(plain)


_FORMS = (
    " (series {s}, image {i})",
    " in series {s} image {i}",
    " on image {i} of series {s}",
    " (Series {s}, Image {i})",
)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([p for ab in ABNORMALITIES for p in ab.phrasings]),
            st.none() | st.tuples(st.sampled_from(_FORMS), st.integers(1, 5), st.integers(1, 999)),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_stripping_inverts_citing(parts):
    plain, cited, expected = [], [], []
    for phrasing, citation in parts:
        sentence = phrasing.format(size="7", side="left")
        plain.append(sentence)
        if citation is None:
            cited.append(sentence)
            continue
        form, series, image = citation
        cited.append(sentence[:-1] + form.format(s=series, i=image) + ".")
        expected.append((series, image))
    text = " ".join(cited)
    assert strip_citations(text) == " ".join(plain)
    assert [(p.series, p.image) for p in mine_citations(text)] == expected
