"""Report splitting, routing, negation-aware abnormal flags and the abnormality dictionary."""

from __future__ import annotations

import json
import re
import warnings

import pytest
from conftest import shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from cagcl_mini.anatomy import ANATOMIES, ANATOMY_NAMES, anatomy
from cagcl_mini.bench.reports import benchmark
from cagcl_mini.evaluation.splitting import (
    evaluate_splitting,
    evaluate_unpunctuated,
    load_cases,
    unpunctuate,
)
from cagcl_mini.text.citations import strip_citations
from cagcl_mini.text.findings import (
    DictionaryEntry,
    abnormality_dictionary,
    dictionary_entries,
    exclusion_mask,
    fill_placeholders,
    findings,
    is_abnormal,
    matches_findings,
)
from cagcl_mini.text.reports import route_sentence, split_report, split_sentences

NORMAL = [(a.name, s) for a in ANATOMIES for s in a.normal_phrasings]
ABNORMAL = [
    (a.name, fill_placeholders(s))
    for a in ANATOMIES
    for ab in a.abnormalities
    for s in ab.phrasings
]
REAL = ("ct_rate_reports", "per_anatomy_findings.json")


def _sentences_of(out: dict[str, str]) -> dict[str, list[str]]:
    return {name: split_sentences(text) for name, text in out.items()}


# ----------------------------------------------------------------------------- splitting
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # CT-RATE glues impression and findings without a space
            "Millimetric nodules in both lungs.There are millimetric nonspecific nodules.",
            ["Millimetric nodules in both lungs.", "There are millimetric nonspecific nodules."],
        ),
        (
            "Sequelae changes in both lungs.2 nodules, the largest 3 mm, were observed.",
            ["Sequelae changes in both lungs.", "2 nodules, the largest 3 mm, were observed."],
        ),
        (
            "heart shows no significant abnormalities.mediastinal structures are normal.",
            ["heart shows no significant abnormalities.", "mediastinal structures are normal."],
        ),
        (
            "The effusion reaches 1.5 cm on the right and 3.2 mm on the left. Heart is normal.",
            [
                "The effusion reaches 1.5 cm on the right and 3.2 mm on the left.",
                "Heart is normal.",
            ],
        ),
        (
            "A nodule of approx. 4 mm is seen, e.g. in the apex. See image no. 12 of series 2.",
            [
                "A nodule of approx. 4 mm is seen, e.g. in the apex.",
                "See image no. 12 of series 2.",
            ],
        ),
        (
            "A mosaic pattern, small airway disease?, is seen. There is effusion!No mass.",
            ["A mosaic pattern, small airway disease?, is seen.", "There is effusion!", "No mass."],
        ),
        (
            "FINDINGS:\n1. The lungs are clear.\n2. The heart is normal.",
            ["FINDINGS:", "1. The lungs are clear.", "2. The heart is normal."],
        ),
        ("", []),
        ("   \n\t ", []),
        ("  The lungs are clear.  ", ["The lungs are clear."]),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_unpunctuated_lower_case_text_is_split_into_phrases():
    text = "lungs clear, no pleural effusion\nheart normal in size; no pericardial effusion"
    assert split_sentences(text) == [
        "lungs clear",
        "no pleural effusion",
        "heart normal in size",
        "no pericardial effusion",
    ]
    # a single unpunctuated line still separates statements that open with an organ word
    assert split_sentences("the lungs are clear the heart is normal") == [
        "the lungs are clear",
        "the heart is normal",
    ]
    # ... but not an organ word tied to what precedes it
    assert split_sentences("calcified plaques in the aorta") == ["calcified plaques in the aorta"]


def test_split_sentences_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        split_sentences(None)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab Z9.,;?!\n", max_size=60))
def test_sentences_are_stripped_ordered_substrings(text):
    position = 0
    for sentence in split_sentences(text):
        assert sentence and sentence == sentence.strip()
        found = text.find(sentence, position)
        assert found >= 0, (text, sentence)
        position = found + len(sentence)


# ----------------------------------------------------------------------------- routing
@pytest.mark.parametrize(("name", "sentence"), NORMAL)
def test_catalog_normal_phrasings_route_home_and_are_normal(name, sentence):
    assert route_sentence(sentence) == name
    assert not is_abnormal(name, sentence)


@pytest.mark.parametrize(("name", "sentence"), ABNORMAL)
def test_catalog_abnormal_phrasings_route_home_and_are_abnormal(name, sentence):
    assert route_sentence(sentence) == name
    assert is_abnormal(name, sentence)


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("No pleural or pericardial effusion was detected.", "heart"),
        ("Minimal effusion in the pericardial and pleural space.", "heart"),
        ("There is a pleural effusion at the base of the left lung.", "lung"),
        (
            "Calcific atheroma plaques are present in the aortic arch and coronary arteries.",
            "aorta",
        ),
        ("Coronary artery calcification is noted.", "heart"),
        ("The main pulmonary artery is dilated.", "aorta"),
        ("Mediastinal vascular structures and heart contour are normal.", "heart"),
        ("The trachea and main bronchi are patent.", "trachea"),
        ("Bronchial wall thickening is seen in the lower lobes.", "lung"),
        ("A sliding hiatal hernia is present.", "esophagus"),
        ("There is a hypodense lesion in the right lobe of the liver.", "liver"),
        ("Degenerative osteophytes are seen in the thoracic vertebrae.", None),
        ("The thyroid gland is unremarkable.", None),
        ("It is wider than normal.", None),  # no cue: split_report uses the context
    ],
)
def test_route_sentence_conventions(sentence, expected):
    assert route_sentence(sentence) == expected


# ----------------------------------------------------------------------------- negation
@pytest.mark.parametrize(
    "sentence",
    [
        "No pleural effusion was detected.",
        "No mass or infiltrative lesion was observed.",
        "Heart contour and size are normal.",
        "Pericardial effusion-thickening was not observed.",
        "Pericardial effusion and thickening were not detected.",
        "Thoracic esophagus calibration was normal and no significant pathological wall "
        "thickening was detected.",
        "No pathological increase in wall thickness was observed in the esophagus.",
        "The heart is of normal size without pericardial thickening.",
        "The heart size is not increased.",
        "No focal consolidation, nodule, or mass is seen in either lung.",
        "The liver is within normal limits.",
        "The aorta is unremarkable.",
        "The airways are patent.",
        "heart shows no significant abnormalities.",
    ],
)
def test_negated_or_normal_sentences_are_not_abnormal(sentence):
    assert not is_abnormal("heart", sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        "Minimal pericardial effusion is observed.",
        "Heart sizes have increased.",
        "It is wider than normal.",
        "No pleural effusion, mild atelectasis at the bases.",  # the comma ends the negation
        "A nodule is seen, effusion is not present.",  # "not" negates effusion only
        "No mass was detected and nodules are present.",
        "Calcified nodules are seen that are not enlarging.",
    ],
)
def test_asserted_findings_are_abnormal(sentence):
    assert is_abnormal("lung", sentence)


def test_is_abnormal_rejects_unknown_anatomy():
    with pytest.raises(KeyError, match="lung, heart"):
        is_abnormal("pancreas", "Normal.")


# ----------------------------------------------------------------------------- split_report
def test_split_report_groups_sentences_and_fills_unmentioned_anatomies():
    report = (
        "Emphysematous changes in both lungs.No pleural or pericardial effusion was detected. "
        "Aortic arch calibration is 34 mm. It is wider than normal. Degenerative changes are "
        "seen in the thoracic vertebrae. Sliding type hiatal hernia is observed."
    )
    out = split_report(report)
    assert list(out) == list(ANATOMY_NAMES)
    assert out["lung"] == "Emphysematous changes in both lungs."
    assert out["heart"] == "No pleural or pericardial effusion was detected."
    assert out["aorta"] == "Aortic arch calibration is 34 mm. It is wider than normal."
    assert out["esophagus"] == "Sliding type hiatal hernia is observed."
    for name in ("trachea", "liver", "spleen", "kidney"):
        assert out[name] == anatomy(name).normal_sentence
    assert "vertebrae" not in " ".join(out.values())  # non-catalog sentences are dropped
    flags = {name: is_abnormal(name, text) for name, text in out.items()}
    assert flags == {
        "lung": True, "heart": False, "aorta": True, "esophagus": True,
        "trachea": False, "liver": False, "spleen": False, "kidney": False,
    }  # fmt: skip


@pytest.mark.parametrize("text", ["", "  \n "])
def test_empty_report_warns_and_gives_normal_sentences(text):
    with pytest.warns(UserWarning, match="empty report"):
        out = split_report(text)
    assert out == {a.name: a.normal_sentence for a in ANATOMIES}


def test_split_report_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        split_report(["The lungs are clear."])


@pytest.mark.parametrize(
    "report",
    [
        "lungs clear no pleural effusion\nheart normal size\ncalcified plaques in the aorta",
        "lungs clear, no pleural effusion, heart normal size, calcified plaques in the aorta",
        # one line: statements are separated where an organ word opens one ("the heart ...")
        "lungs clear no pleural effusion the heart is normal size the aorta calcified plaques",
    ],
)
def test_lower_case_report_without_punctuation_routes_its_phrases(report):
    with pytest.warns(UserWarning, match="no sentence punctuation") as caught:
        out = split_report(report)
    assert len(caught) == 1
    assert "lungs clear" in out["lung"] and "pleural effusion" in out["lung"]
    assert out["heart"].startswith(("heart normal", "the heart"))
    assert out["aorta"] in ("calcified plaques in the aorta", "the aorta calcified plaques")
    assert out["esophagus"] == anatomy("esophagus").normal_sentence
    assert not is_abnormal("lung", out["lung"]) and not is_abnormal("heart", out["heart"])
    assert is_abnormal("aorta", out["aorta"])


# Unpunctuated lower-case reports in general radiology wording (none of them from CT-RATE):
# report -> {anatomy: (words its text must contain, abnormal flag)}; other anatomies stay normal.
UNPUNCTUATED = [
    (
        "the lungs are clear there is no pleural effusion or pneumothorax the heart is normal in "
        "size there is no pericardial effusion the thoracic aorta is normal in caliber the "
        "esophagus is unremarkable",
        {
            "lung": ("the lungs are clear there is no pleural effusion or pneumothorax", False),
            "heart": ("the heart is normal in size there is no pericardial effusion", False),
            "aorta": ("the thoracic aorta is normal in caliber", False),
            "esophagus": ("the esophagus is unremarkable", False),
        },
    ),
    (
        "bilateral lower lobe consolidation with air bronchograms small bilateral pleural "
        "effusions mild cardiomegaly coronary artery calcifications ascending aorta measures 45 mm "
        "no hiatal hernia",
        {
            "lung": ("consolidation with air bronchograms small bilateral pleural effusions", True),
            "heart": ("mild cardiomegaly coronary artery calcifications", True),
            "aorta": ("ascending aorta measures 45 mm", False),
            "esophagus": ("no hiatal hernia", False),
        },
    ),
    (
        "no focal consolidation nodule or mass heart size normal no pericardial effusion mild "
        "atherosclerotic calcification of the aortic arch small hiatal hernia",
        {
            "lung": ("no focal consolidation nodule or mass", False),
            "heart": ("heart size normal no pericardial effusion", False),
            "aorta": ("mild atherosclerotic calcification of the aortic arch", True),
            "esophagus": ("small hiatal hernia", True),
        },
    ),
    (
        "lungs clear heart normal aorta calcified esophagus normal",
        {
            "lung": ("lungs clear", False),
            "heart": ("heart normal", False),
            "aorta": ("aorta calcified", True),
            "esophagus": ("esophagus normal", False),
        },
    ),
    (
        "moderate centrilobular emphysema no pulmonary nodules no pleural effusion mild bibasilar "
        "atelectasis heart size within normal limits no coronary artery calcification the "
        "esophagus is distended with fluid",
        {
            "lung": ("emphysema no pulmonary nodules no pleural effusion mild bibasilar", True),
            "heart": ("heart size within normal limits no coronary artery calcification", False),
            "esophagus": ("the esophagus is distended with fluid", True),
        },
    ),
    (
        "a 6 mm nodule in the right middle lobe no mediastinal or hilar lymphadenopathy the liver "
        "is unremarkable the spleen is enlarged degenerative changes of the thoracic spine",
        {
            "lung": ("a 6 mm nodule in the right middle lobe", True),
            "trachea": ("no mediastinal or hilar lymphadenopathy", False),
            "liver": ("the liver is unremarkable", False),
            "spleen": ("the spleen is enlarged", True),
        },
    ),
]


@pytest.mark.parametrize(("report", "expected"), UNPUNCTUATED)
def test_unpunctuated_report_is_split_into_clauses_routed_home(report, expected):
    with pytest.warns(UserWarning, match="no sentence punctuation"):
        out = split_report(report)
    for name, text in out.items():
        if name in expected:
            words, abnormal = expected[name]
            assert words in text, (name, text)
            assert is_abnormal(name, text) == abnormal, (name, text)
        else:
            assert text == anatomy(name).normal_sentence, (name, text)
    assert "spine" not in " ".join(out.values())  # a non-catalog clause is dropped
    _assert_verbatim(report, out)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # an organ word tied to what precedes by a preposition, "or", or an organ adjective
            "there is a sliding type hiatal hernia at the lower end of the esophagus",
            ["there is a sliding type hiatal hernia at the lower end of the esophagus"],
        ),
        ("no pleural or pericardial effusion", ["no pleural or pericardial effusion"]),
        (
            "the heart is enlarged but there is no pericardial effusion",
            ["the heart is enlarged", "but there is no pericardial effusion"],
        ),
        (  # "and" before a new subject ends the statement
            "the lungs are clear and the heart is normal in size",
            ["the lungs are clear and", "the heart is normal in size"],
        ),
        (  # two organs in one clause are cut where they separate best
            "mild cardiomegaly with increase of the cardiothoracic ratio consolidation in the "
            "lower lobe of the left lung",
            [
                "mild cardiomegaly with increase of the cardiothoracic ratio",
                "consolidation in the lower lobe of the left lung",
            ],
        ),
    ],
)
def test_unpunctuated_clause_boundaries(text, expected):
    assert split_sentences(text) == expected


def test_negation_stops_at_a_clause_start_in_unpunctuated_text():
    assert is_abnormal("lung", "no pleural effusion mild bibasilar atelectasis")
    assert is_abnormal("heart", "pericardial effusion was not detected the heart is enlarged")
    assert not is_abnormal("lung", "no focal consolidation, nodule, or mass")  # commas: one list
    assert not is_abnormal("lung", "no focal consolidation nodule or mass in the lungs")


def test_punctuated_or_empty_report_gives_no_heuristic_split_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_report("The lungs are clear. The heart is normal")  # one boundary is enough
    with pytest.warns(UserWarning, match="empty report") as caught:
        split_report(" ")
    assert len(caught) == 1


def _assert_verbatim(report: str, out: dict[str, str]) -> None:
    for name, sentences in _sentences_of(out).items():
        for sentence in sentences:
            assert sentence in report or sentence in anatomy(name).normal_phrasings, sentence


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(NORMAL + ABNORMAL), min_size=1, max_size=10),
    st.lists(st.sampled_from([" ", "", "\n", "  "]), min_size=10, max_size=10),
)
def test_catalog_sentences_in_any_order_route_back_home(pairs, seps):
    report = "".join(s + sep for (_, s), sep in zip(pairs, seps, strict=False))
    assert split_sentences(report) == [s for _, s in pairs]
    out = split_report(report)
    found = _sentences_of(out)
    for name, sentence in pairs:
        assert sentence in found[name]
    _assert_verbatim(report, out)
    for name, text in out.items():
        truth = any(n == name and (n, s) in ABNORMAL for n, s in pairs)
        assert is_abnormal(name, text) == truth


# ----------------------------------------------------------------------------- dictionary
@pytest.mark.parametrize("name", ANATOMY_NAMES)
def test_abnormality_dictionary_is_filled_routed_and_abnormal(name):
    sentences = abnormality_dictionary(name)
    expected = sum(len(ab.phrasings) for ab in anatomy(name).abnormalities)
    assert len(sentences) == expected > 0
    for sentence in sentences:
        assert not re.search(r"[{}]", sentence)
        assert route_sentence(sentence) == name and is_abnormal(name, sentence)
    for entry in dictionary_entries(name):  # each sentence asserts its own finding
        assert findings(name, entry.sentence) >= {entry.abnormality}


def test_fill_placeholders_uses_plausible_units():
    assert fill_placeholders("A {size} mm nodule in the {side} lung.") == (
        "A 12 mm nodule in the right lung."
    )
    assert fill_placeholders("The spleen measures {size} cm.") == "The spleen measures 15 cm."


def test_matches_findings_recognises_own_findings_only():
    lung = "There are millimetric nonspecific nodules in both lungs. No pleural effusion."
    nodule = next(e for e in dictionary_entries("lung") if e.abnormality == "Lung nodule")
    effusion = next(e for e in dictionary_entries("lung") if e.abnormality == "Pleural effusion")
    assert matches_findings(nodule, lung)
    assert not matches_findings(effusion, lung)  # negated in the sample
    assert matches_findings("A 3 mm nodule is seen in the left lung.", lung)
    assert not matches_findings("There is a left pleural effusion.", lung)
    assert matches_findings(effusion, f"{lung} {effusion.sentence}")  # verbatim


def test_exclusion_mask_marks_matching_entries_of_the_same_anatomy():
    entries = dictionary_entries()
    normal = [a.normal_sentence for a in ANATOMIES]
    sick = list(normal)
    sick[ANATOMY_NAMES.index("heart")] = "Cardiomegaly. Calcific plaques in the coronary arteries."
    sick[ANATOMY_NAMES.index("liver")] = ""  # absent anatomy never matches
    mask = exclusion_mask([normal, sick], entries)
    assert mask.shape == (2, len(ANATOMY_NAMES), len(entries)) and mask.dtype == bool
    assert not mask[0].any()
    marked = {
        (ANATOMY_NAMES[k], entries[m].abnormality) for k, m in zip(*mask[1].nonzero(), strict=True)
    }
    assert marked == {("heart", "Cardiomegaly"), ("heart", "Coronary artery wall calcification")}
    with pytest.raises(ValueError, match="K=8"):
        exclusion_mask([normal[:3]], entries)
    assert isinstance(entries[0], DictionaryEntry)


# ----------------------------------------------------------------------------- real data
def test_real_ct_rate_reports_meet_the_acceptance_numbers():
    cases = load_cases(shared_path(*REAL))
    for seed in (None, 0, 1):
        result = evaluate_splitting(cases, shuffle_seed=seed)
        assert result["n_pairs"] == 4 * len(cases) == 200
        assert result["n_sentences"] > 300
        assert result["routing_accuracy"] >= 0.95, result["misrouted"]
        assert result["abnormal_accuracy"] >= 0.90, result["flag_disagreements"]
        assert result["abnormal_recall"] >= 0.95


def test_real_reports_unpunctuated_keep_their_flags():
    """Lower-cased without punctuation, the 50 real reports keep (almost) all 200 flags."""
    cases = load_cases(shared_path(*REAL))
    for seed in (None, 0, 1):
        result = evaluate_unpunctuated(cases, shuffle_seed=seed)
        assert result["n_pairs"] == 200
        assert result["flag_flips"] <= 3, result["flips"]
        assert result["abnormal_accuracy"] >= 0.88
        assert result["word_routing_accuracy"] >= 0.95, result["misrouted"]
        assert result["routing_accuracy"] >= 0.9, result["misrouted"]


def test_real_reports_are_never_altered():
    cases = load_cases(shared_path(*REAL))
    for texts in cases.values():
        report = " ".join(texts.values())
        _assert_verbatim(strip_citations(report), split_report(report))  # only citations go


def test_benchmark_names_a_missing_file(tmp_path):
    missing = tmp_path / "nowhere.json"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        benchmark(missing)


def test_load_cases_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"case": {"pancreas": "Normal."}}))
    with pytest.raises(ValueError, match=r"bad\.json.*pancreas"):
        load_cases(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="non-empty JSON object"):
        load_cases(bad)


def test_benchmark_on_a_small_file(tmp_path):
    path = tmp_path / "cases.json"
    path.write_text(
        json.dumps(
            {
                "c1": {
                    "lung": "Nodules in both lungs.There are nodules in both lungs.",
                    "heart": "heart shows no significant abnormalities.Heart size is normal.",
                },
                "c2": {
                    "lung": "lung shows no significant abnormalities.The lungs are clear.",
                    "heart": "Cardiomegaly.The heart is enlarged.",
                },
            }
        )
    )
    result = benchmark(path, shuffle_seeds=2, repeats=1)
    assert result["n_sentences"] == 6 and result["n_pairs"] == 4
    assert result["routing_accuracy"] == 1.0 and result["abnormal_accuracy"] == 1.0
    assert result["abnormal_precision"] == 1.0 and result["abnormal_recall"] == 1.0
    assert result["unpunctuated_flag_flips"] == 0 and result["unpunctuated_flips"] == []
    assert result["unpunctuated_flag_flips_shuffled_max"] == 0
    assert result["unpunctuated_routing_accuracy"] == 1.0
    assert result["unpunctuated_word_routing_accuracy"] == 1.0
    assert result["unpunctuated_abnormal_accuracy"] == 1.0
    assert result["ms_per_unpunctuated_report"] > 0


def test_evaluate_unpunctuated_counts_flips_against_the_punctuated_flags():
    cases = {
        "c1": {
            "lung": "There is a nodule in the left lung. No pleural effusion.",
            "heart": "heart shows no significant abnormalities.The heart is normal.",
        }
    }
    result = evaluate_unpunctuated(cases)
    assert result["flag_flips"] == 0 and result["n_pairs"] == 2
    assert result["n_sentences"] == 3 and result["routing_accuracy"] == 1.0
    assert result["n_words"] == 15 and result["word_routing_accuracy"] == 1.0
    assert unpunctuate("No effusion.Heart, normal!") == "no effusion heart  normal "
