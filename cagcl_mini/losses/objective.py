"""An objective: loss terms by name, their weights, presets, and ``compute_losses``.

The model's forward (:meth:`cagcl_mini.nn.model.AnatomyCLIP.forward`) returns the keys of
:data:`INPUT_KEYS` that come from the model, the batch adds the rest, and :func:`compute_losses`
takes them all in one dict: one vocabulary, documented once here.
"""

from __future__ import annotations

from torch import Tensor

from cagcl_mini.losses.terms import (
    SIGLIP_INIT_LOGIT_BIAS,
    anatomy_contrastive_loss,
    diagnosis_contrastive_loss,
    disease_supervision_loss,
    global_cross_anatomy_loss,
    local_alignment_loss,
    sigmoid_global_loss,
    sigmoid_local_loss,
    snippet_localisation_loss,
)

LOSS_TERMS: dict[str, str] = {
    "local": "fVLM per-anatomy InfoNCE (local_alignment_loss)",
    "global": "CA-GCL InfoNCE over all present tokens (global_cross_anatomy_loss)",
    "anatomy": "CT-GLIP visual token vs K anatomy prompts (anatomy_contrastive_loss)",
    "diagnosis": "CT-GLIP visual token vs own description + dictionary (diagnosis_contrastive_loss)",
    "sigmoid_local": "SigLIP form of the local loss (sigmoid_local_loss)",
    "sigmoid_global": "SigLIP form of the global loss (sigmoid_global_loss)",
    "disease": "BCE of the zero-shot prompt score against the labels (disease_supervision_loss)",
    "localisation": "L1 of cited snippets' predicted axial positions (snippet_localisation_loss)",
}
LOSS_PRESETS: dict[str, dict[str, float]] = {
    "fvlm": {"local": 1.0},
    "ctglip": {"anatomy": 1.0, "diagnosis": 1.0},
    "cagcl": {"local": 1.0, "global": 1.0},
}
# Whether a preset trains on augmented descriptions (permutation + partial completeness).
PRESET_AUGMENT: dict[str, bool] = {"fvlm": False, "ctglip": False, "cagcl": True}

# The keys compute_losses reads (from `embeddings`, else from `batch`). The model's forward returns
# v, t, present, logit_scale, logit_bias, anatomy_text, dictionary, disease_text and
# snippet_position; the batch supplies the rest.
INPUT_KEYS: dict[str, str] = {
    "v": "(B, K, E) normalised visual anatomy embeddings",
    "t": "(B, K, E) normalised embeddings of the descriptions actually encoded",
    "present": "(B, K) bool, anatomy in the volume (and described, for the model's output)",
    "abnormal": "(B, K) bool, anatomy has a finding",
    "texts": "optional: B lists of K strings that were encoded into t (identical-text rule)",
    "logit_scale": "learnable log inverse temperature (tensor) or float",
    "logit_bias": f"optional: SigLIP bias (tensor or float), default {SIGLIP_INIT_LOGIT_BIAS}",
    "anatomy_text": "(K, E) normalised embeddings of the anatomy prompts",
    "dictionary": "optional: (M, E) normalised embeddings of the abnormal dictionary sentences",
    "dictionary_anatomy": "(M,) long anatomy index 0..K-1 of each dictionary sentence",
    "exclude": "optional: (B, K, M) bool, dictionary sentences matching the sample's findings",
    "disease_text": "(2A, E) normalised (negative, positive) prompt embeddings, interleaved",
    "disease_anatomy": "(A,) long anatomy index 0..K-1 of each prompted abnormality",
    "disease_labels": "(B, A) float 0/1 labels of the prompted abnormalities",
    "targets": "optional: (K, B, B) soft pair weights (soft_targets_from_labels) for local/global",
    "snippet_position": "(P,) predicted axial positions (fractions) of the batch's cited snippets",
    "snippet_target": "(P,) their cited positions (fractions of the RAS+ superior axis)",
}

# Inputs with one entry per sample (first axis B, or B lists): under DDP they are gathered across
# processes; the embeddings among them keep their gradient.
PER_SAMPLE_KEYS: frozenset[str] = frozenset(
    {"v", "t", "present", "abnormal", "texts", "exclude", "disease_labels"}
)
DIFFERENTIABLE_KEYS: frozenset[str] = frozenset({"v", "t"})


def resolve_weights(preset_or_weights: str | dict[str, float]) -> dict[str, float]:
    """A preset name or a {term: weight} dict -> a validated {term: weight} dict."""
    if isinstance(preset_or_weights, str):
        if preset_or_weights not in LOSS_PRESETS:
            raise KeyError(
                f"unknown loss preset {preset_or_weights!r}; choose one of {', '.join(LOSS_PRESETS)}"
            )
        return dict(LOSS_PRESETS[preset_or_weights])
    weights = {str(k): float(w) for k, w in dict(preset_or_weights).items()}
    unknown = sorted(set(weights) - set(LOSS_TERMS))
    if unknown:
        raise KeyError(f"unknown loss terms {unknown}; the terms are {', '.join(LOSS_TERMS)}")
    if not weights:
        raise ValueError("loss weights are empty: name at least one of " + ", ".join(LOSS_TERMS))
    return weights


def _term(name: str, x: dict) -> Tensor:
    """One loss term, its arguments taken from the merged inputs dict ``x``."""

    def get(key: str, required: bool = True):
        if x.get(key) is None and required:
            have = sorted(k for k, val in x.items() if val is not None)
            raise KeyError(
                f"loss term {name!r} needs input {key!r} ({INPUT_KEYS[key]}); got {have}"
            )
        return x.get(key)

    texts, targets = get("texts", False), get("targets", False)
    if name == "localisation":
        return snippet_localisation_loss(get("snippet_position"), get("snippet_target"))
    if name == "anatomy":
        return anatomy_contrastive_loss(
            get("v"), get("present"), get("anatomy_text"), get("logit_scale")
        )
    if name == "disease":
        return disease_supervision_loss(
            *(get("v"), get("present"), get("disease_text"), get("disease_anatomy")),
            get("disease_labels"),
            get("logit_scale"),
        )
    if name == "diagnosis":
        dictionary = get("dictionary", False)
        return diagnosis_contrastive_loss(
            *(get("v"), get("t"), get("present"), get("logit_scale"), dictionary),
            get("dictionary_anatomy", required=dictionary is not None),
            get("exclude", False),
            abnormal=get("abnormal", False),
            texts=texts,
        )
    args = (get("v"), get("t"), get("present"), get("abnormal"), get("logit_scale"))
    if name in ("local", "global"):
        fn = local_alignment_loss if name == "local" else global_cross_anatomy_loss
        return fn(*args, texts, targets=targets)
    fn = sigmoid_local_loss if name == "sigmoid_local" else sigmoid_global_loss
    bias = get("logit_bias", False)
    bias = SIGLIP_INIT_LOGIT_BIAS if bias is None else bias
    return fn(*args, bias, texts, targets=targets)


def compute_losses(
    preset_or_weights: str | dict[str, float], embeddings: dict, batch: dict | None = None
) -> dict[str, Tensor]:
    """Every term of a preset (or of a {term: weight} dict) and their weighted sum.

    ``embeddings`` holds the model's outputs and ``batch`` the data; a key is looked up in
    ``embeddings`` first (see ``INPUT_KEYS`` for all keys and shapes). Returns ``{term: scalar}``
    for each named term (weight 0 still computes it, to log it) plus ``"total" = sum w * term``,
    so the trainer can log each term and name the one that went non-finite.
    """
    weights = resolve_weights(preset_or_weights)
    inputs = {**(batch or {}), **embeddings}
    out = {name: _term(name, inputs) for name in weights}
    terms = [w * out[name] for name, w in weights.items()]
    out["total"] = sum(terms[1:], terms[0])
    return out
