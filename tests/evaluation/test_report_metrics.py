"""Report metrics: ROUGE-L and BERTScore on hand-made pairs, clinical efficacy on hand counts, and
all of them on the true, a random and the most-common-normal report of a real phantom split."""

from __future__ import annotations

import numpy as np
import pytest

from cagcl_mini.anatomy import ALL_LABELS, ANATOMY_NAMES, NUM_ANATOMIES
from cagcl_mini.evaluation import report_metrics as rm
from cagcl_mini.phantom.build import make_dataset

NODULE = "A 7 mm nodule is seen in the right lung."
EFFUSION = "Pleural effusion is observed at the left lung base, reaching 40 mm."


def test_rouge_l_counts_the_longest_common_word_subsequence():
    out = rm.rouge_l(
        ["The heart is normal.", "Lungs are clear.", "the heart is enlarged"],
        ["The heart is normal.", "No renal cyst.", "the heart is normal"],
    )
    assert out.shape == (3,)
    assert out[0] == 1.0 and out[1] == 0.0
    assert out[2] == pytest.approx(0.75)  # 3 of 4 words in order, both ways


def test_bertscore_runs_offline_on_the_bundled_minilm(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    same = "The heart is normal in size. No pericardial effusion."
    f1 = rm.bertscore_f1(
        [
            same,
            "The heart is of normal size; there is no pericardial effusion.",
            "Lungs are clear.",
        ],
        [same, same, same],
    )
    assert f1.shape == (3,) and f1[0] == pytest.approx(1.0, abs=1e-5) and f1.max() <= 1.0
    assert f1[0] > f1[1] > f1[2] > 0.0  # a paraphrase lies between the same and another organ


def test_bertscore_names_a_folder_that_is_no_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is not a local model folder \(no config.json\)"):
        rm.bertscore_f1(["a."], ["b."], model=tmp_path)


def test_report_labels_read_asserted_findings_in_their_own_anatomy():
    labels = rm.report_labels(f"{NODULE} There is no pleural effusion. The heart is normal.")
    assert {ALL_LABELS[i] for i in np.flatnonzero(labels)} == {"Lung nodule"}
    labels = rm.report_labels(f"{EFFUSION} {NODULE}")
    assert {ALL_LABELS[i] for i in np.flatnonzero(labels)} == {"Lung nodule", "Pleural effusion"}
    assert rm.report_labels("  ").sum() == 0
    assert rm.reports_labels([NODULE, ""]).shape == (2, len(ALL_LABELS))
    with pytest.raises(TypeError, match="report must be a str, got int"):
        rm.report_labels(3)


def test_anatomy_differences_name_the_anatomies_whose_findings_differ():
    lung = ANATOMY_NAMES.index("lung")
    true = [""] * NUM_ANATOMIES
    generated = [""] * NUM_ANATOMIES
    true[lung], generated[lung] = NODULE, "The lungs are clear."
    assert rm.anatomy_differences(generated, true) == {"lung": (frozenset(), {"Lung nodule"})}
    assert rm.anatomy_differences(true, true) == {}
    with pytest.raises(ValueError, match=f"generated: expected K={NUM_ANATOMIES} per-anatomy"):
        rm.anatomy_differences(["x"], true)


def test_clinical_efficacy_micro_counts_and_macro_over_seen_labels():
    predicted = np.array([[1, 0, 0], [1, 1, 0]])
    true = np.array([[1, 1, 0], [0, 1, 0]])
    out = rm.clinical_efficacy(predicted, true, labels=("a", "b", "c"))
    # tp 2 (a0, b1), fp 1 (a1), fn 1 (b0)
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    # a: P 1/2 R 1 F 2/3; b: P 1 R 1/2 F 2/3; c has no positive and is left out of the macro
    assert out["macro_f1"] == pytest.approx(2 / 3)
    assert out["per_abnormality"]["c"]["support"] == 0 and out["n"] == 2
    with pytest.raises(ValueError, match=r"true labels must be 0/1, got 0.5 at row 1, column 2"):
        rm.clinical_efficacy(predicted, np.array([[1, 1, 0], [0, 1, 0.5]]), labels="abc")


def test_pairs_that_cannot_be_scored_are_named():
    with pytest.raises(ValueError, match="differ in length: 2 vs 1"):
        rm.rouge_l(["a.", "b."], ["a."])
    with pytest.raises(ValueError, match=r"references\[1\] is empty"):
        rm.rouge_l(["a.", "b."], ["a.", " "])
    with pytest.raises(TypeError, match="lists of report strings, not one string"):
        rm.rouge_l("a.", "a.")
    with pytest.raises(TypeError, match=r"generated\[0\] is a NoneType, not a str"):
        rm.rouge_l([None], ["a."])
    with pytest.raises(ValueError, match=r"true_labels: expected \(2, \d+\) for 2 generated"):
        rm.report_scores(["a.", "b."], ["a.", "b."], np.zeros((3, len(ALL_LABELS))))


@pytest.fixture(scope="module")
def phantom_reports(tmp_path_factory):
    """The validation reports and CSV labels of a real phantom dataset, and its training reports."""
    import pandas as pd

    from cagcl_mini.layout import csv_path

    root = make_dataset(
        tmp_path_factory.mktemp("report_metrics") / "phantom",
        n_train=12, n_valid=12, size=32, seed=3, workers=1, progress=False,
    )  # fmt: skip
    valid = pd.read_csv(csv_path(root, "reports", "valid"))
    labels = pd.read_csv(csv_path(root, "labels", "valid")).set_index("VolumeName")
    train = pd.read_csv(csv_path(root, "reports", "train"))["Findings_EN"].tolist()
    y = labels.loc[valid["VolumeName"], list(ALL_LABELS)].to_numpy()
    return valid["Findings_EN"].tolist(), y, train


def test_the_true_report_scores_one_and_its_labels_read_back(phantom_reports):
    reports, labels, _ = phantom_reports
    assert labels.sum() > 0
    out = rm.report_scores(reports, reports, labels, n_bootstrap=50, bertscore=False)
    assert out["rouge_l"] == 1.0 and out["rouge_l_ci95"] == [1.0, 1.0]
    assert out["ce_precision"] == out["ce_recall"] == out["ce_f1"] == 1.0
    assert out["ce_macro_f1"] == 1.0 and out["n"] == len(reports)
    assert np.isnan(out["bertscore_f1"])


def test_baselines_that_see_no_image_score_as_they_must(phantom_reports):
    from cagcl_mini.evaluation.report_generation import random_reports

    reports, labels, train = phantom_reports
    normal = "The heart is normal. The lungs are clear. The liver is unremarkable."
    out = rm.report_scores([normal] * len(reports), reports, labels, n_bootstrap=50)
    assert out["ce_recall"] == 0.0 and out["ce_precision"] == 0.0 and out["ce_f1"] == 0.0
    assert out["ce_recall_ci95"] == [0.0, 0.0]
    assert 0.0 < out["rouge_l"] < 1.0 and 0.0 < out["bertscore_f1"] < 1.0
    drawn = random_reports(train, len(reports), seed=0)
    rand = rm.report_scores(drawn, reports, labels, n_bootstrap=200, seed=1)
    assert 0.0 < rand["rouge_l"] < 1.0 and 0.0 < rand["ce_recall"] < 1.0
    for name in rm.METRICS:
        lo, hi = rand[f"{name}_ci95"]
        assert lo <= rand[name] <= hi, name


def test_rouge_l_equals_rouge_scores_own_stemming_scorer(phantom_reports):
    from rouge_score import rouge_scorer

    reports, _, train = phantom_reports
    plain = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pairs = list(zip(train[: len(reports)], reports, strict=True)) * 2  # repeats hit the memory
    ours = rm.rouge_l([g for g, _ in pairs], [r for _, r in pairs])
    theirs = [plain.score(r, g)["rougeL"].fmeasure for g, r in pairs]
    np.testing.assert_array_equal(ours, theirs)
    assert 0 < ours.mean() < 1


def test_intervals_from_counts_equal_the_loop_over_resamples(phantom_reports):
    """report_scores computes every resample at once; the slow definition (index the volumes,
    recompute the metric, take percentiles) must give the same intervals."""
    from cagcl_mini.evaluation.report_generation import random_reports
    from cagcl_mini.evaluation.uncertainty import bootstrap_statistic

    reports, labels, train = phantom_reports
    drawn = random_reports(train, len(reports), seed=2)
    bert = np.linspace(0.5, 0.9, len(reports))
    fast = rm.report_scores(drawn, reports, labels, n_bootstrap=300, seed=4, bert_f1=bert)
    pred, true = rm.reports_labels(drawn).astype(bool), labels.astype(bool)
    rouge = rm.rouge_l(drawn, reports)
    slow = {
        "rouge_l": lambda i: float(rouge[i].mean()),
        "bertscore_f1": lambda i: float(bert[i].mean()),
        "ce_precision": lambda i: rm.clinical_efficacy(pred[i], true[i])["precision"],
        "ce_recall": lambda i: rm.clinical_efficacy(pred[i], true[i])["recall"],
        "ce_f1": lambda i: rm.clinical_efficacy(pred[i], true[i])["f1"],
        "ce_macro_f1": lambda i: rm.clinical_efficacy(pred[i], true[i])["macro_f1"],
    }
    assert 0 < fast["ce_f1"] < 1
    for name, statistic in slow.items():
        expected = bootstrap_statistic(len(reports), statistic, 300, seed=4)
        np.testing.assert_allclose(fast[f"{name}_ci95"], expected, rtol=0, atol=1e-12)


def test_candidate_sets_share_one_bertscore_call_and_score_as_alone(phantom_reports, monkeypatch):
    from cagcl_mini.evaluation.report_generation import random_reports

    reports, labels, train = phantom_reports
    normal = "The heart is normal. The lungs are clear. The liver is unremarkable."
    sets = {"normal": [normal] * len(reports), "random": random_reports(train, len(reports), 0)}
    alone = {name: rm.bertscore_f1(texts, reports) for name, texts in sets.items()}
    calls = []
    real = rm.bertscore_f1
    monkeypatch.setattr(rm, "bertscore_f1", lambda *a, **k: calls.append(a) or real(*a, **k))
    together = rm.report_scores_sets(sets, reports, labels, n_bootstrap=20)
    assert len(calls) == 1 and len(calls[0][0]) == 2 * len(reports)  # one scorer call
    for name, texts in sets.items():
        np.testing.assert_allclose(
            together[name]["bertscore_f1"], alone[name].mean(), rtol=0, atol=1e-5
        )
        direct = rm.report_scores(texts, reports, labels, n_bootstrap=20, bertscore=False)
        assert together[name]["ce_f1"] == direct["ce_f1"]
        assert together[name]["rouge_l"] == direct["rouge_l"]
    with pytest.raises(ValueError, match=r"bert_f1: expected \(12,\)"):
        rm.report_scores(reports, reports, labels, bert_f1=np.zeros(3))
    assert rm.bertscore_f1_sets({}, reports) == {}
