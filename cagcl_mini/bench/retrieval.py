"""``cagcl-mini bench retrieval``: volume <-> report retrieval and retrieval report generation.

For each loss preset (trained with the config's budget, reused from the cache when present), on
the validation split: recall@1/5/10 image->text and text->image
(:func:`~cagcl_mini.evaluation.retrieval.retrieval_recall`), and the reports written by
retrieval from the training descriptions (:func:`~cagcl_mini.evaluation.report_generation.generate_reports`)
scored against the true reports: ROUGE-L, BERTScore F1 and clinical efficacy
(:func:`~cagcl_mini.evaluation.report_metrics.report_scores`). Every figure carries its 95 %
bootstrap interval over validation volumes. Beside them, what needs no image: the chance recall
k/N, a random training report per volume and the most common normal report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cagcl_mini.evaluation.embed import EmbeddedSplit, embed_dataset
from cagcl_mini.evaluation.report_generation import (
    generate_reports,
    most_common_normal_report,
    random_reports,
    true_reports,
)
from cagcl_mini.evaluation.report_metrics import report_scores, report_scores_sets
from cagcl_mini.evaluation.retrieval import RECALL_KS, retrieval_recall
from cagcl_mini.evaluation.uncertainty import N_BOOTSTRAP
from cagcl_mini.train.config import TrainConfig, resolve_config
from cagcl_mini.train.loop import trained_model
from cagcl_mini.train.setup import dataset_for

PRESETS: tuple[str, ...] = ("fvlm", "ctglip", "cagcl")
DIRECTIONS: tuple[str, ...] = ("image_to_text", "text_to_image")


def _recall_keys(recall: dict[str, Any]) -> dict[str, Any]:
    """``recall@k`` -> ``recall_at_k`` (JSON keys a shell or pandas reads without quoting)."""
    return {key.replace("@", "_at_"): value for key, value in recall.items()}


def retrieval_row(
    train: EmbeddedSplit,
    valid: EmbeddedSplit,
    k_vote: int = 1,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    bertscore: bool = True,
) -> dict[str, Any]:
    """One model's figures from its embedded training and validation splits (module doc)."""
    recall = retrieval_recall(valid, RECALL_KS, n_bootstrap)
    generated = generate_reports(valid, train, k_vote=k_vote)
    scores = report_scores(
        generated.reports, true_reports(valid), valid.labels.numpy(), n_bootstrap, seed, bertscore
    )
    return {
        **{d: _recall_keys(recall[d]) for d in DIRECTIONS},
        "n_retrieval": recall["n"],
        **scores,
    }


def baseline_rows(
    train: EmbeddedSplit,
    valid: EmbeddedSplit,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    bertscore: bool = True,
) -> dict[str, Any]:
    """The image-blind baselines: ``random_report``, ``most_common_normal`` and the retrieval
    ``chance`` k/N."""
    references, labels = true_reports(valid), valid.labels.numpy()
    normal = most_common_normal_report(train)
    drawn = random_reports(true_reports(train), len(valid), seed=seed)
    n = len(valid)
    candidates = {"random_report": drawn, "most_common_normal": [normal] * n}
    return {
        **report_scores_sets(candidates, references, labels, n_bootstrap, seed, bertscore),
        "chance": {f"recall_at_{k}": min(1.0, k / n) for k in RECALL_KS},
    }


def benchmark(
    config: TrainConfig | str = "cpu-quick",
    presets: Sequence[str] = PRESETS,
    steps: int | None = None,
    seed: int = 0,
    k_vote: int = 1,
    n_bootstrap: int = N_BOOTSTRAP,
    bertscore: bool = True,
) -> dict[str, Any]:
    """Every preset's retrieval and report figures, then ``baselines`` (module doc); ``steps``
    replaces the config's steps (and scales its warmup)."""
    if not presets:
        raise ValueError("presets: name at least one loss preset (fvlm, ctglip, cagcl)")
    config = resolve_config(config).replace(seed=seed).with_steps(steps)
    train_set, valid_set = dataset_for(config, "train"), dataset_for(config, "valid")
    out: dict[str, Any] = {}
    for name in presets:
        model = trained_model(config, loss_preset=name)
        train, valid = embed_dataset(model, train_set), embed_dataset(model, valid_set)
        out[name] = retrieval_row(train, valid, k_vote, n_bootstrap, seed, bertscore)
    out["baselines"] = baseline_rows(train, valid, n_bootstrap, seed, bertscore)
    out |= {
        "config": config.name,
        "n_train": len(train_set),
        "n_valid": len(valid_set),
        "steps": config.steps,
        "seed": seed,
        "k_vote": k_vote,
        "n_bootstrap": n_bootstrap,
    }
    return out
