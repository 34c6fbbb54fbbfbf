"""Intra-scan snippet localisation: predict where a cited report sentence's finding lies.

Radiologists cite the slice that shows a finding ("(series 2, image 37)"); arXiv 2603.02026 mines
262k such (snippet, slice) pairs and trains a head to predict the slice. Here:

1. :func:`~cagcl_mini.data.citations.mine_pairs`: the pairs of one split, from its reports
   (``Findings_EN``, :func:`cagcl_mini.text.citations.mine_citations`). "image N" counts the stored volume's slices
   along its axis 2, 1-based; the target is that slice's centre as a fraction of the RAS+ superior
   axis, ``(N - 0.5) / Z`` (flipped when the stored axis 2 points inferior), and an error of one
   axis fraction is ``Z * ZSpacing`` mm (the metadata's spacing).
2. For each loss preset, the pretrained model (``trained_model(config, loss_preset=...)``) is
   frozen: per-slice image features (:func:`~cagcl_mini.nn.localisation.slice_features`) and the
   snippet's text embedding feed a :class:`~cagcl_mini.nn.localisation.LocalisationHead` trained
   on the training pairs (L1 on the position fraction).
   A model pretrained *with* the localisation term (:data:`TERM_PRESET`, the optional term of
   :mod:`cagcl_mini.losses.terms`) is scored both ways: a post-hoc head on its frozen features,
   like the others, and the head pretraining trained beside it (``own_head``).
3. On the validation pairs: mean absolute error in mm with its 95 % bootstrap interval over pairs
   (:func:`~cagcl_mini.evaluation.uncertainty.bootstrap_statistic`), beside two baselines that
   need no training: the z centroid of the snippet's anatomy in the volume's own label map (the
   anatomy from the project's router, :func:`~cagcl_mini.text.reports.route_sentence`; the
   dataset mean where the router names none or the anatomy is absent), and the mean position of
   the training pairs.

:func:`run_localisation` does it all and is what notebook 08 and ``cagcl-mini bench
localisation`` call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cagcl_mini.anatomy import ANATOMY_NAMES
from cagcl_mini.data.citations import LocalisationPairs, mine_pairs
from cagcl_mini.data.dataset import CTReportDataset
from cagcl_mini.evaluation.uncertainty import N_BOOTSTRAP, bootstrap_statistic
from cagcl_mini.losses.objective import LOSS_PRESETS
from cagcl_mini.nn.localisation import LocalisationHead, localisation_loss, slice_features
from cagcl_mini.nn.model import AnatomyCLIP
from cagcl_mini.train.config import TrainConfig, resolve_config
from cagcl_mini.train.loop import trained_model
from cagcl_mini.train.setup import dataset_for

PRESETS: tuple[str, ...] = ("fvlm", "cagcl", "ctglip")
# cagcl pretrained with the localisation term added (losses.terms.snippet_localisation_loss)
TERM_PRESET = "cagcl+localisation"
TERM_WEIGHT = 1.0
HEAD_STEPS = 300
HEAD_LR = 3e-3


def pretraining_config(
    config: TrainConfig, name: str, term_weight: float = TERM_WEIGHT
) -> TrainConfig:
    """The pretraining run of ``name``: a loss preset, or :data:`TERM_PRESET` (cagcl's terms and
    text augmentation plus the localisation term at ``term_weight``)."""
    if name != TERM_PRESET:
        return config.replace(loss_preset=name)
    if term_weight <= 0:
        raise ValueError(
            f"{TERM_PRESET}: the localisation term's weight must be > 0, got {term_weight}"
        )
    weights = {**LOSS_PRESETS["cagcl"], "localisation": float(term_weight)}
    return config.replace(loss_preset=weights, augment=True)


def _require_pairs(pairs: LocalisationPairs, dataset: CTReportDataset) -> None:
    if len(pairs) == 0:
        raise ValueError(
            f"no slice citations in the {dataset.split} reports (Findings_EN) of "
            f"{dataset.dataset_dir}: localisation needs sentences citing "
            '"(series N, image M)"'
        )


def load_volumes(dataset: CTReportDataset, indices: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Item index -> ``{"image" (1,1,S,S,S), "anatomy" (S,S,S) long}`` of the cited volumes."""
    out = {}
    for i in dict.fromkeys(int(v) for v in indices):
        vol = dataset.load_volume(i)
        image = vol["image"]
        image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        out[i] = {"image": image[None].float(), "anatomy": torch.as_tensor(vol["anatomy"])}
    return out


def anatomy_centroids(volumes: dict[int, dict[str, Any]]) -> dict[int, np.ndarray]:
    """Item index -> ``(K,)`` z centroid of each anatomy in the label map, as a fraction of the
    axis (slice centres ``(z + 0.5) / S``); NaN where the anatomy has no voxel."""
    out = {}
    for i, vol in volumes.items():
        anatomy = vol["anatomy"]
        depth = anatomy.shape[-1]
        z = torch.arange(depth, dtype=torch.float64)
        cents = np.full(len(ANATOMY_NAMES), math.nan)
        for k in range(len(ANATOMY_NAMES)):
            counts = (anatomy == k + 1).sum(dim=(0, 1)).double()
            if counts.sum() > 0:
                cents[k] = float(((z + 0.5) * counts).sum() / counts.sum() / depth)
        out[i] = cents
    return out


@torch.no_grad()
def encode_pairs(
    model: AnatomyCLIP,
    pairs: LocalisationPairs,
    volumes: dict[int, dict[str, Any]],
    batch_size: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen ``(slices (N, C, Z), text (N, E))`` of the pairs: the model's per-slice image
    features of each pair's volume and its snippet's text embedding."""
    model.eval()
    order = list(dict.fromkeys(int(v) for v in pairs.volume))
    per_volume: dict[int, torch.Tensor] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        images = torch.cat([volumes[i]["image"] for i in chunk]).to(model.device)
        feats = slice_features(model.image_features(images)).float().cpu()
        per_volume.update(zip(chunk, feats, strict=True))
    slices = torch.stack([per_volume[int(v)] for v in pairs.volume])
    text = model.encode_text(pairs.snippets).float().cpu()
    return slices, text


def train_head(
    slices: torch.Tensor,
    text: torch.Tensor,
    target: torch.Tensor,
    steps: int = HEAD_STEPS,
    lr: float = HEAD_LR,
    seed: int = 0,
    hidden: int = 64,
) -> tuple[LocalisationHead, list[float]]:
    """A :class:`LocalisationHead` fitted full-batch (Adam, L1 on the position fraction) to the
    pairs; returns it (eval mode) and the loss of every step."""
    if steps < 1:
        raise ValueError(f"head steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    head = LocalisationHead(slices.shape[1], text.shape[1], hidden=hidden)
    optimiser = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    head.train()
    for _ in range(int(steps)):
        position, _ = head(slices, text)
        loss = localisation_loss(position, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return head.eval(), losses


@torch.no_grad()
def own_head_positions(
    model: AnatomyCLIP, pairs: LocalisationPairs, volumes: dict[int, dict[str, Any]]
) -> np.ndarray:
    """``(N,)`` positions the pretraining's own localisation head predicts for the pairs (a
    model trained with the localisation term), without a post-hoc head."""
    model.eval()
    out = np.zeros(len(pairs))
    for i in dict.fromkeys(int(v) for v in pairs.volume):
        where = np.flatnonzero(pairs.volume == i)
        features = model.image_features(volumes[i]["image"].to(model.device))
        rows = torch.zeros(len(where), dtype=torch.long)
        texts = [pairs.snippets[n] for n in where]
        out[where] = model.locate_snippets(features, rows, texts).float().cpu().numpy()
    return out


def _mae(
    errors_mm: np.ndarray, n_bootstrap: int, seed: int, centroid_mm: np.ndarray | None = None
) -> dict[str, Any]:
    """``{"mae_mm", "mae_mm_ci95"}``: the mean and its bootstrap interval over pairs; with the
    anatomy centroid's errors on the same pairs also ``minus_centroid_mm`` and its interval (the
    paired difference: negative is better than the baseline)."""
    lo, hi = bootstrap_statistic(
        len(errors_mm), lambda idx: float(errors_mm[idx].mean()), n_bootstrap, seed
    )
    out = {"mae_mm": float(errors_mm.mean()), "mae_mm_ci95": [lo, hi]}
    if centroid_mm is not None:
        diff = errors_mm - centroid_mm
        lo, hi = bootstrap_statistic(
            len(diff), lambda idx: float(diff[idx].mean()), n_bootstrap, seed
        )
        out |= {"minus_centroid_mm": float(diff.mean()), "minus_centroid_mm_ci95": [lo, hi]}
    return out


def baseline_positions(
    train: LocalisationPairs, valid: LocalisationPairs, centroids: dict[int, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(dataset_mean (N,), anatomy_centroid (N,), fallbacks)`` predictions for the validation
    pairs; ``fallbacks`` counts the pairs whose anatomy is unknown or absent (they get the mean)."""
    mean = float(train.target.mean())
    centroid = np.full(len(valid), mean)
    fallbacks = 0
    for n, (volume, name) in enumerate(zip(valid.volume, valid.anatomy, strict=True)):
        value = centroids[int(volume)][ANATOMY_NAMES.index(name)] if name else math.nan
        if math.isnan(value):
            fallbacks += 1
        else:
            centroid[n] = value
    return np.full(len(valid), mean), centroid, fallbacks


def run_localisation(
    config: TrainConfig | str | Path = "cpu-quick",
    presets: Sequence[str] = PRESETS,
    *,
    steps: int | None = None,
    head_steps: int = HEAD_STEPS,
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
    examples: int = 0,
    term_weight: float = TERM_WEIGHT,
) -> dict[str, Any]:
    """Snippet localisation for each loss preset against the two baselines (module docstring).

    ``steps`` replaces the pretraining steps of ``config``; ``head_steps`` trains each head.
    A preset named :data:`TERM_PRESET` is cagcl pretrained with the localisation term (weight
    ``term_weight``); its row also holds ``own_head``, the error of the head pretraining trained.
    Returns ``{preset: {"mae_mm", "mae_mm_ci95", "head_loss"...}, "baselines": {"anatomy_centroid":
    ..., "dataset_mean": ...}, "n_train_pairs", "n_valid_pairs", ...}``; with ``examples`` > 0
    also ``"examples"``: that many validation pairs with their predictions and a coronal slice of
    the volume (:func:`cagcl_mini.viz.localisation.plot_localisation` draws them).
    """
    if not presets:
        raise ValueError("presets: name at least one loss preset (fvlm, cagcl, ctglip)")
    config = resolve_config(config).replace(seed=seed).with_steps(steps)
    train_set, valid_set = dataset_for(config, "train"), dataset_for(config, "valid")
    train, valid = mine_pairs(train_set), mine_pairs(valid_set)
    _require_pairs(train, train_set)
    _require_pairs(valid, valid_set)
    train_volumes = load_volumes(train_set, train.volume)
    valid_volumes = load_volumes(valid_set, valid.volume)
    valid_t = torch.as_tensor(valid.target, dtype=torch.float32)
    mean, centroid, fallbacks = baseline_positions(train, valid, anatomy_centroids(valid_volumes))
    centroid_mm = np.abs(centroid - valid.target) * valid.extent_mm
    out: dict[str, Any] = {}
    predictions: dict[str, np.ndarray] = {}
    for name in presets:
        model = trained_model(pretraining_config(config, name, term_weight))
        slices, text = encode_pairs(model, train, train_volumes)
        head, losses = train_head(
            slices, text, torch.as_tensor(train.target, dtype=torch.float32), head_steps, seed=seed
        )
        with torch.no_grad():
            position, _ = head(*encode_pairs(model, valid, valid_volumes))
        predictions[name] = position.numpy().astype(float)
        errors = np.abs(predictions[name] - valid.target) * valid.extent_mm
        out[name] = _mae(errors, n_bootstrap, seed, centroid_mm) | {
            "head_loss_first": losses[0],
            "head_loss_last": losses[-1],
            "valid_l1": float(localisation_loss(position, valid_t)),
        }
        if model.localisation_head is not None:
            own = own_head_positions(model, valid, valid_volumes)
            out[name]["own_head"] = _mae(
                np.abs(own - valid.target) * valid.extent_mm, n_bootstrap, seed, centroid_mm
            )
    out["baselines"] = {
        "anatomy_centroid": _mae(centroid_mm, n_bootstrap, seed) | {"n_fallback": fallbacks},
        "dataset_mean": _mae(np.abs(mean - valid.target) * valid.extent_mm, n_bootstrap, seed),
    }
    out |= {
        "config": config.name,
        "n_train_pairs": len(train),
        "n_valid_pairs": len(valid),
        "steps": config.steps,
        "head_steps": int(head_steps),
        "seed": seed,
        "n_bootstrap": n_bootstrap,
    }
    if examples > 0:
        out["examples"] = _examples(valid, valid_volumes, predictions, centroid, examples)
    return out


def _examples(
    valid: LocalisationPairs,
    volumes: dict[int, dict[str, Any]],
    predictions: dict[str, np.ndarray],
    centroid: np.ndarray,
    k: int,
) -> list[dict[str, Any]]:
    """Up to ``k`` validation pairs (one per volume, spread over the split) for the figure."""
    seen: set[int] = set()
    picked = []
    for n in range(len(valid)):
        if int(valid.volume[n]) not in seen:
            seen.add(int(valid.volume[n]))
            picked.append(n)
    picked = picked[:: max(1, len(picked) // k)][:k]
    rows = []
    for n in picked:
        image = volumes[int(valid.volume[n])]["image"][0, 0].numpy()
        rows.append(
            {
                "id": valid.ids[n],
                "snippet": valid.snippets[n],
                "anatomy": valid.anatomy[n],
                "image_number": float(valid.image[n]),
                "target": float(valid.target[n]),
                "predicted": {name: float(p[n]) for name, p in predictions.items()},
                "anatomy_centroid": float(centroid[n]),
                "coronal": image[:, image.shape[1] // 2, :],  # (x, z) at mid-depth y
            }
        )
    return rows
