"""How well :mod:`cagcl_mini.text.reports` splits real reports: routing and abnormal-flag accuracy.

The reference is CT-RATE findings already split per anatomy in the fVLM style (``{case: {anatomy:
text}}``, a normal anatomy's text starting with "<anatomy> shows no significant abnormalities.").
For each case the preambles are removed, every anatomy's text is cut into sentences (each
sentence's true anatomy is the one it came from), the sentences are joined into one report, and
:func:`~cagcl_mini.text.reports.split_report` must put every sentence back into its own anatomy and no
other. The abnormal flag's reference is the absence of the preamble; note that this label follows
the report's impression, so an anatomy whose findings describe something the impression left out
counts as "normal" there (listed in ``flag_disagreements`` for review).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from cagcl_mini.anatomy import ANATOMY_NAMES
from cagcl_mini.text.findings import is_abnormal
from cagcl_mini.text.reports import split_report, split_sentences


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
        order = list(texts)
        if rng is not None:
            order = [order[i] for i in rng.permutation(len(order))]
        truth: list[tuple[str, str]] = []
        flags: dict[str, bool] = {}
        for name in order:
            body, flags[name] = strip_preamble(name, texts[name])
            truth += [(name, s) for s in split_sentences(body)]
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
