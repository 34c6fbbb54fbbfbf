"""How well :mod:`cagcl_mini.text.reports` splits real reports: routing and abnormal-flag accuracy.

The reference is CT-RATE findings already split per anatomy in the fVLM style (``{case: {anatomy:
text}}``, a normal anatomy's text starting with "<anatomy> shows no significant abnormalities.").
For each case the preambles are removed, every anatomy's text is cut into sentences (each
sentence's true anatomy is the one it came from), the sentences are joined into one report, and
:func:`~cagcl_mini.text.reports.split_report` must put every sentence back into its own anatomy and no
other. The abnormal flag's reference is the absence of the preamble; note that this label follows
the report's impression, so an anatomy whose findings describe something the impression left out
counts as "normal" there (listed in ``flag_disagreements`` for review).

:func:`evaluate_unpunctuated` asks the same of the reports lower-cased and stripped of punctuation
(:func:`unpunctuate`): how many abnormal flags change, and how many sentences still reach their
anatomy.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from cagcl_mini.anatomy import ANATOMY_NAMES
from cagcl_mini.text.findings import is_abnormal
from cagcl_mini.text.reports import route_spans, split_report, split_sentences


def preamble(anatomy_name: str) -> str:
    """The fVLM marker of a normal anatomy: "<anatomy> shows no significant abnormalities."."""
    return f"{anatomy_name} shows no significant abnormalities."


def load_cases(path: str | Path) -> dict[str, dict[str, str]]:
    """Read ``{case: {anatomy: text}}`` and check its shape, naming the file in every error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"per-anatomy findings file {path} does not exist")
    cases = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(cases, dict) or not cases:
        raise ValueError(f"{path}: expected a non-empty JSON object {{case: {{anatomy: text}}}}")
    for case, texts in cases.items():
        if not isinstance(texts, dict) or not all(isinstance(t, str) for t in texts.values()):
            raise ValueError(f"{path}: case {case!r} must map anatomy names to strings")
        unknown = set(texts) - set(ANATOMY_NAMES)
        if unknown:
            raise ValueError(
                f"{path}: case {case!r} has anatomies {sorted(unknown)} outside the catalog "
                f"({', '.join(ANATOMY_NAMES)})"
            )
    return cases


def strip_preamble(anatomy_name: str, text: str) -> tuple[str, bool]:
    """(body, labelled abnormal)."""
    marker = preamble(anatomy_name)
    if text.lower().startswith(marker.lower()):
        return text[len(marker) :], False
    return text, True


def unpunctuate(text: str) -> str:
    """Lower case, every character that is not a word character or a space made a space.

    Keeps the length, so a sentence's (start, end) in ``text`` is its place in the result.
    """
    return re.sub(r"[^\w\s]", " ", text.lower())


def _reference(
    texts: Mapping[str, str], rng: np.random.Generator | None
) -> tuple[list[str], list[tuple[str, str]], dict[str, bool]]:
    """(anatomy order, [(true anatomy, sentence)] in report order, {anatomy: labelled abnormal})."""
    order = list(texts)
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    truth: list[tuple[str, str]] = []
    flags: dict[str, bool] = {}
    for name in order:
        body, flags[name] = strip_preamble(name, texts[name])
        truth += [(name, s) for s in split_sentences(body)]
    return order, truth, flags


def evaluate_splitting(cases: Mapping[str, Mapping[str, str]], shuffle_seed: int | None = None):
    """Routing and abnormal-flag figures of :func:`split_report` on per-anatomy reference texts.

    ``shuffle_seed`` shuffles the order of the anatomies within each report (sentences of one
    anatomy keep their order); None keeps the data's order. Returns a dict with
    ``routing_accuracy`` (share of sentences found in their own anatomy and no other),
    ``n_sentences``, ``abnormal_accuracy`` / ``abnormal_precision`` / ``abnormal_recall`` /
    ``abnormal_f1`` over ``n_pairs`` (case, anatomy) pairs, ``confusion`` (true anatomy ->
    where its sentences went: an anatomy, "dropped" or "several"), ``misrouted`` and
    ``flag_disagreements`` (for reading, not scoring).
    """
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    confusion: dict[str, Counter] = {name: Counter() for name in ANATOMY_NAMES}
    misrouted, disagreements, labels, predicted = [], [], [], []
    n_sentences = n_correct = 0
    for case, texts in cases.items():
        order, truth, flags = _reference(texts, rng)
        report = " ".join(s for _, s in truth)
        out = split_report(report)
        found = {name: Counter(split_sentences(out[name])) for name in ANATOMY_NAMES}
        for name, sentence in truth:
            where = [a for a in ANATOMY_NAMES if found[a][sentence] > 0]
            got = where[0] if len(where) == 1 else ("dropped" if not where else "several")
            confusion[name][got] += 1
            n_sentences += 1
            n_correct += got == name
            if got != name:
                misrouted.append({"case": case, "sentence": sentence, "true": name, "got": got})
        for name in order:
            pred = is_abnormal(name, out[name])
            labels.append(flags[name])
            predicted.append(pred)
            if pred != flags[name]:
                disagreements.append(
                    {
                        "case": case,
                        "anatomy": name,
                        "label": flags[name],
                        "predicted": pred,
                        "text": out[name],
                    }  # fmt: skip
                )
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="binary", zero_division=0
    )
    return {
        "routing_accuracy": n_correct / max(n_sentences, 1),
        "n_sentences": n_sentences,
        "abnormal_accuracy": float(accuracy_score(labels, predicted)) if labels else 0.0,
        "abnormal_precision": float(precision),
        "abnormal_recall": float(recall),
        "abnormal_f1": float(f1),
        "n_pairs": len(labels),
        "confusion": {k: dict(v) for k, v in confusion.items() if v},
        "misrouted": misrouted,
        "flag_disagreements": disagreements,
    }


def evaluate_unpunctuated(
    cases: Mapping[str, Mapping[str, str]], shuffle_seed: int | None = None
) -> dict:
    """How :func:`split_report` fares on the reports lower-cased and without punctuation.

    Each case's report is built as in :func:`evaluate_splitting` (preambles removed, sentences
    joined by " ") and then passed through :func:`unpunctuate`. Returns ``flag_flips``: the
    (case, anatomy) abnormal flags that differ from those of the punctuated report (out of
    ``n_pairs``), ``abnormal_accuracy`` against the labels, ``routing_accuracy``: share of the
    reference sentences all of whose words land in their own anatomy and no other (clauses of
    one sentence may be cut apart now), ``word_routing_accuracy``: share of words in their own
    anatomy, ``n_sentences``, ``n_words``, and for reading ``flips`` and ``misrouted`` (each with
    where the sentence's words went). The heuristic-split warning of :func:`split_report` is
    silenced here.
    """
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    flips, misrouted, labels, predicted = [], [], [], []
    n_sentences = n_correct = n_words = n_words_correct = 0
    for case, texts in cases.items():
        order, truth, flags = _reference(texts, rng)
        report = " ".join(s for _, s in truth)
        plain = unpunctuate(report)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            punctuated, out = split_report(report), split_report(plain)
        owner = [""] * len(plain)  # the anatomy each character of the plain report went to
        for name, spans in route_spans(plain).items():
            for s, e in spans:
                owner[s:e] = [name] * (e - s)
        start = 0
        for name, sentence in truth:
            words = [owner[start + m.start()] or "dropped" for m in re.finditer(r"\w+", sentence)]
            start += len(sentence) + 1
            n_sentences += 1
            n_words += len(words)
            n_words_correct += sum(w == name for w in words)
            if all(w == name for w in words):
                n_correct += 1
            else:
                misrouted.append(
                    {
                        "case": case,
                        "sentence": unpunctuate(sentence),
                        "true": name,
                        "went": dict(Counter(words)),
                    }
                )
        for name in order:
            before, after = is_abnormal(name, punctuated[name]), is_abnormal(name, out[name])
            labels.append(flags[name])
            predicted.append(after)
            if before != after:
                flips.append(
                    {
                        "case": case,
                        "anatomy": name,
                        "punctuated": before,
                        "unpunctuated": after,
                        "text": out[name],
                    }
                )
    return {
        "flag_flips": len(flips),
        "n_pairs": len(labels),
        "abnormal_accuracy": float(accuracy_score(labels, predicted)) if labels else 0.0,
        "routing_accuracy": n_correct / max(n_sentences, 1),
        "word_routing_accuracy": n_words_correct / max(n_words, 1),
        "n_sentences": n_sentences,
        "n_words": n_words,
        "flips": flips,
        "misrouted": misrouted,
    }
