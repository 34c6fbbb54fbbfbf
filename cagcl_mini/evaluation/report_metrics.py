"""How good a generated report is: word overlap, meaning overlap and clinical efficacy.

- **ROUGE-L** F-measure (``rouge-score``, Porter stemming): the longest common subsequence of
  words between the generated and the true report.
- **BERTScore** F1 (``bert-score``) on the bundled MiniLM (:func:`cagcl_mini.nn.text.default_text_model_path`),
  all its layers, no idf and no baseline rescaling, offline: greedy matching of contextual token
  embeddings. Without rescaling, unrelated English text already scores well above 0, so read it
  against the baselines, not against 0.
- **Clinical efficacy** (CE): the labels a report asserts, read back with the project's own splitter
  and finding patterns (:func:`report_labels`: :func:`~cagcl_mini.text.reports.split_report`, then
  :func:`~cagcl_mini.text.findings.findings` per anatomy), against the volume's true labels:
  micro precision, recall and F1 over every (volume, abnormality) pair, and the macro F1 over
  abnormalities with at least one positive volume.

:func:`report_scores` gives all of them with a 95 % bootstrap interval over volumes (the draws of
:func:`~cagcl_mini.evaluation.uncertainty.bootstrap_statistic`, every resample at once from
per-volume counts: :func:`~cagcl_mini.evaluation.uncertainty.resample_counts`).
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rouge_score import rouge_scorer, tokenizers
from sklearn.metrics import precision_recall_fscore_support

from cagcl_mini.anatomy import ALL_LABELS, ANATOMY_NAMES, NUM_ANATOMIES
from cagcl_mini.evaluation.uncertainty import N_BOOTSTRAP, percentile_interval, resample_counts
from cagcl_mini.nn.text import _quiet_transformers, default_text_model_path
from cagcl_mini.text.findings import findings
from cagcl_mini.text.reports import split_report

_LABEL_INDEX = {name: i for i, name in enumerate(ALL_LABELS)}
METRICS: tuple[str, ...] = (
    "rouge_l", "bertscore_f1", "ce_precision", "ce_recall", "ce_f1", "ce_macro_f1"
)  # fmt: skip


def _check_pairs(generated: Sequence[str], references: Sequence[str]) -> None:
    """One-line errors for lists that cannot be scored pairwise."""
    if isinstance(generated, str) or isinstance(references, str):
        raise TypeError("generated and references must be lists of report strings, not one string")
    if len(generated) == 0:
        raise ValueError("generated: no report to score (empty list)")
    if len(generated) != len(references):
        raise ValueError(
            f"generated and references differ in length: {len(generated)} vs {len(references)}"
        )
    for name, texts in (("generated", generated), ("references", references)):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"{name}[{bad}] is a {type(texts[bad]).__name__}, not a str")
    empty = next((i for i, t in enumerate(references) if not t.strip()), None)
    if empty is not None:
        raise ValueError(f"references[{empty}] is empty: a true report is needed to score against")


# ----------------------------------------------------------------------------- text overlap
class _RememberingTokenizer(tokenizers.Tokenizer):
    """rouge-score's default tokenizer (Porter stemming) that remembers its recent texts: a
    reference scored against several candidate sets, or a report generated many times, is
    tokenised and stemmed once."""

    def __init__(self) -> None:
        self._tokens = functools.lru_cache(maxsize=4096)(
            tokenizers.DefaultTokenizer(use_stemmer=True).tokenize
        )

    def tokenize(self, text: str) -> list[str]:
        return list(self._tokens(text))


@functools.lru_cache(maxsize=1)
def _rouge() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_RememberingTokenizer())


def rouge_l(generated: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F-measure of each (generated, reference) pair, shape (N,)."""
    _check_pairs(generated, references)
    scorer = _rouge()
    return np.array(
        [
            scorer.score(ref, gen)["rougeL"].fmeasure
            for gen, ref in zip(generated, references, strict=True)
        ]
    )


def _num_layers(model: Path) -> int:
    return int(json.loads((model / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"])


@functools.lru_cache(maxsize=2)
def _bert_scorer(model: str, num_layers: int, batch_size: int) -> Any:
    from bert_score import BERTScorer  # imports transformers' pipelines: only when scoring

    with _quiet_transformers():
        return BERTScorer(
            model_type=model, num_layers=num_layers, batch_size=batch_size, device="cpu",
            rescale_with_baseline=False, idf=False,
        )  # fmt: skip


def bertscore_f1(
    generated: Sequence[str],
    references: Sequence[str],
    model: str | Path | None = None,
    num_layers: int | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """BERTScore F1 of each pair, shape (N,): ``model`` a local folder (default: the bundled
    MiniLM), ``num_layers`` the layer whose embeddings match (default: its last)."""
    _check_pairs(generated, references)
    folder = Path(model) if model is not None else default_text_model_path()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model: {folder} is not a local model folder (no config.json)")
    layers = _num_layers(folder) if num_layers is None else int(num_layers)
    scorer = _bert_scorer(str(folder), layers, int(batch_size))
    with _quiet_transformers():
        _, _, f1 = scorer.score(list(generated), list(references), batch_size=int(batch_size))
    return f1.double().clamp(max=1.0).numpy()  # identical texts: 1 up to float rounding


def bertscore_f1_sets(
    candidates: Mapping[str, Sequence[str]], references: Sequence[str], **kwargs: Any
) -> dict[str, np.ndarray]:
    """:func:`bertscore_f1` of several candidate sets against the same ``references``, in one
    scorer call: bert-score embeds each distinct sentence of a call once, so the references (and
    a report two sets share) are embedded once instead of once per set."""
    names = list(candidates)
    for name in names:
        _check_pairs(candidates[name], references)
    if not names:
        return {}
    flat = [text for name in names for text in candidates[name]]
    f1 = bertscore_f1(flat, list(references) * len(names), **kwargs)
    n = len(references)
    return {name: f1[i * n : (i + 1) * n] for i, name in enumerate(names)}


# ----------------------------------------------------------------------------- clinical efficacy
def report_findings(report: str) -> dict[str, frozenset[str]]:
    """Anatomy name -> the catalog abnormalities its description in ``report`` asserts, for every
    catalog anatomy (read with :func:`~cagcl_mini.text.reports.split_report` and
    :func:`~cagcl_mini.text.findings.findings`); a blank report asserts none."""
    if not isinstance(report, str):
        raise TypeError(f"report must be a str, got {type(report).__name__}")
    if not report.strip():
        return {name: frozenset() for name in ANATOMY_NAMES}
    with warnings.catch_warnings():  # an unpunctuated generated report is split anyway
        warnings.simplefilter("ignore", UserWarning)
        parts = split_report(report)
    return {name: findings(name, parts[name]) for name in ANATOMY_NAMES}


def report_labels(report: str) -> np.ndarray:
    """(A,) 0/1 in ``ALL_LABELS`` order: the abnormalities a report asserts, each read in the
    description of its own anatomy (:func:`report_findings`)."""
    out = np.zeros(len(ALL_LABELS), dtype=np.int64)
    for names in report_findings(report).values():
        for name in names:
            out[_LABEL_INDEX[name]] = 1
    return out


def anatomy_differences(
    generated: Sequence[str], reference: Sequence[str]
) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """The anatomies whose findings differ between two lists of K per-anatomy descriptions
    (catalog order, "" where absent): {anatomy: (generated findings, true findings)}."""
    for name, texts in (("generated", generated), ("reference", reference)):
        if isinstance(texts, str) or len(texts) != NUM_ANATOMIES:
            raise ValueError(
                f"{name}: expected K={NUM_ANATOMIES} per-anatomy descriptions "
                f"({', '.join(ANATOMY_NAMES)}), got "
                f"{'one string' if isinstance(texts, str) else len(texts)}"
            )
    out = {}
    for k, anatomy_name in enumerate(ANATOMY_NAMES):
        ours = findings(anatomy_name, generated[k] or "")
        theirs = findings(anatomy_name, reference[k] or "")
        if ours != theirs:
            out[anatomy_name] = (ours, theirs)
    return out


def reports_labels(reports: Sequence[str]) -> np.ndarray:
    """(N, A) :func:`report_labels` of every report."""
    if isinstance(reports, str):
        raise TypeError("reports must be a list of report strings, not one string")
    return (
        np.stack([report_labels(r) for r in reports])
        if len(reports)
        else np.zeros((0, len(ALL_LABELS)), np.int64)
    )


def _check_labels(predicted: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predicted, true = np.asarray(predicted), np.asarray(true)
    if predicted.ndim != 2 or predicted.shape != true.shape:
        raise ValueError(
            f"predicted and true labels must both be (N, A), got {predicted.shape} and {true.shape}"
        )
    if predicted.shape[0] == 0:
        raise ValueError("predicted: no volume to score (0 rows)")
    for name, x in (("predicted", predicted), ("true", true)):
        bad = np.argwhere(~np.isin(x, (0, 1)))
        if len(bad):
            row, col = (int(i) for i in bad[0])
            raise ValueError(
                f"{name} labels must be 0/1, got {x[row, col].item()!r} at row {row}, column {col}"
            )
    return predicted.astype(bool), true.astype(bool)


def _micro(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def clinical_efficacy(
    predicted: np.ndarray, true: np.ndarray, labels: Sequence[str] = ALL_LABELS
) -> dict[str, Any]:
    """CE of (N, A) predicted against true 0/1 labels: ``precision``, ``recall``, ``f1`` (micro
    over all pairs), ``macro_f1`` over the abnormalities with a true positive volume, and
    ``per_abnormality`` {name: {precision, recall, f1, support}}."""
    predicted, true = _check_labels(predicted, true)
    if predicted.shape[1] != len(labels):
        raise ValueError(f"labels: {len(labels)} names for {predicted.shape[1]} label columns")
    tp = float((predicted & true).sum())
    fp, fn = float((predicted & ~true).sum()), float((~predicted & true).sum())
    precision, recall, f1 = _micro(tp, fp, fn)
    p, r, f, support = precision_recall_fscore_support(
        true, predicted, average=None, zero_division=0
    )
    seen = support > 0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "macro_f1": float(f[seen].mean()) if seen.any() else math.nan,
        "per_abnormality": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },  # fmt: skip
        "n": int(predicted.shape[0]),
    }


# ----------------------------------------------------------------------------- all together
def report_scores(
    generated: Sequence[str],
    references: Sequence[str],
    true_labels: np.ndarray,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    bertscore: bool = True,
    bert_f1: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every metric of the module docstring for N generated reports, each with ``<name>_ci95``
    (volumes resampled ``n_bootstrap`` times; 0 gives no intervals); ``bertscore=False`` skips
    the BERTScore model (the value is NaN then); ``bert_f1`` passes per-pair BERTScores already
    computed (:func:`bertscore_f1_sets`)."""
    _check_pairs(generated, references)
    true_labels = np.asarray(true_labels)
    if true_labels.ndim != 2 or true_labels.shape[0] != len(generated):
        raise ValueError(
            f"true_labels: expected ({len(generated)}, {len(ALL_LABELS)}) for "
            f"{len(generated)} generated reports, got {true_labels.shape}"
        )
    pred, true = _check_labels(reports_labels(generated), true_labels)
    rouge = rouge_l(generated, references)
    if bert_f1 is not None:
        bert = np.asarray(bert_f1, dtype=float)
        if bert.shape != (len(generated),):
            raise ValueError(f"bert_f1: expected ({len(generated)},), got {bert.shape}")
    elif bertscore:
        bert = bertscore_f1(generated, references)
    else:
        bert = np.full(len(generated), np.nan)
    ce = clinical_efficacy(pred, true)
    out: dict[str, Any] = {
        "rouge_l": float(rouge.mean()),
        "bertscore_f1": float(bert.mean()),
        "ce_precision": ce["precision"],
        "ce_recall": ce["recall"],
        "ce_f1": ce["f1"],
        "ce_macro_f1": ce["macro_f1"],
    }
    if n_bootstrap:
        resampled = _resampled_scores(rouge, bert, pred, true, n_bootstrap, seed)
        for name, values in resampled.items():
            out[f"{name}_ci95"] = list(percentile_interval(values))
    out["n"] = len(generated)
    return out


def _resampled_scores(
    rouge: np.ndarray, bert: np.ndarray, pred: np.ndarray, true: np.ndarray, n: int, seed: int
) -> dict[str, np.ndarray]:
    """Each metric of :func:`report_scores` in ``n`` resamples of the volumes (the draws of
    :func:`~cagcl_mini.evaluation.uncertainty.bootstrap_statistic`), all from per-volume counts:
    a resample's true positives are ``counts @ tp``, and so on."""
    counts = resample_counts(len(rouge), n, seed)  # (n, N)
    pair_tp, pair_fp, pair_fn = (pred & true), (pred & ~true), (~pred & true)  # (N, A)
    tp, fp, fn = (counts @ x.sum(1) for x in (pair_tp, pair_fp, pair_fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        label_tp, label_fp, label_fn = (counts @ x for x in (pair_tp, pair_fp, pair_fn))  # (n, A)
        label_f1 = np.where(
            label_tp > 0, 2 * label_tp / (2 * label_tp + label_fp + label_fn), 0.0
        )  # scikit-learn's F1 with zero_division=0
        seen = (counts @ true) > 0  # labels with a true positive volume in the resample
        macro_f1 = np.where(seen, label_f1, 0.0).sum(1) / seen.sum(1)  # NaN: none seen
    return {
        "rouge_l": counts @ rouge / len(rouge),
        "bertscore_f1": counts @ bert / len(bert),  # NaN throughout when BERTScore was skipped
        "ce_precision": precision,
        "ce_recall": recall,
        "ce_f1": f1,
        "ce_macro_f1": macro_f1,
    }


def report_scores_sets(
    candidates: Mapping[str, Sequence[str]],
    references: Sequence[str],
    true_labels: np.ndarray,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    bertscore: bool = True,
) -> dict[str, dict[str, Any]]:
    """:func:`report_scores` of several candidate sets (models, baselines) against the same
    references, their BERTScores computed in one call (:func:`bertscore_f1_sets`)."""
    bert = bertscore_f1_sets(candidates, references) if bertscore else {}
    return {
        name: report_scores(
            texts, references, true_labels, n_bootstrap, seed, bertscore, bert_f1=bert.get(name)
        )
        for name, texts in candidates.items()
    }
