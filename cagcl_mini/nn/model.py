"""The anatomy-level vision-language model: per-anatomy visual tokens and per-anatomy text embeddings.

``AnatomyCLIP`` = vision encoder (``vision_encoder.py``) -> anatomy mask pooling (``pooling.py``)
-> visual projection, and text encoder (``text_encoder.py``) -> text projection, both into one
shared L2-normalised space of ``embed_dim``. Plus the scalars the contrastive losses need:

- ``logit_scale``: CLIP's learnable log inverse temperature, initialised to ``log(1/0.07)``;
  ``scale()`` returns ``exp(logit_scale)`` clamped at 100 (CLIP's cap, so logits cannot blow up).
- ``logit_bias``: SigLIP's learnable bias, initialised to -10 by default (SigLIP's choice: almost
  every pair in a sigmoid loss is a negative, so starting all logits near -10 matches that prior
  instead of spending the first steps correcting a 50/50 guess); ``logit_bias_init=0`` gives a
  neutral start. CLIP-style (softmax) losses ignore it.

Absent anatomies (no voxel in the anatomy map) and empty descriptions ("" in
``encode_batch_texts``) embed to exact zero vectors, with a ``present`` mask; nothing is NaN.

While the text encoder is frozen (``text_train_layers=0``) its pooled outputs are cached per string
(``text_encoder.py`` explains the rules); ``text_cache_stats`` counts hits and misses and
``set_text_cache(False)`` switches the cache off. Checkpoints: ``checkpoint_state_dict()`` leaves
out the frozen pretrained text weights (they reload from the package), a plain ``state_dict()``
keeps everything; both load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from cagcl_mini.anatomy import ANATOMIES
from cagcl_mini.nn.config import ModelConfig
from cagcl_mini.nn.localisation import LocalisationHead, slice_features
from cagcl_mini.nn.pooling import AttentionMaskPool, mean_mask_pool
from cagcl_mini.nn.text import TextEncoder
from cagcl_mini.nn.vision import build_vision_encoder

POOLINGS: tuple[str, ...] = ("mean", "attention")
PROJECTIONS: tuple[str, ...] = ("linear", "mlp")
__all__ = ["POOLINGS", "PROJECTIONS", "AnatomyCLIP", "ModelConfig", "ProjectionHead"]


class ProjectionHead(nn.Module):
    """Maps encoder features to the shared space: ``"linear"`` or ``"mlp"`` (Linear-GELU-Linear)."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear") -> None:
        super().__init__()
        if kind == "linear":
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        elif kind == "mlp":
            hidden = max(in_dim, out_dim)
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
            )
        else:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AnatomyCLIP(nn.Module):
    """Per-anatomy CT-report contrastive model (fVLM / CT-GLIP / CA-GCL share it; losses differ)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {cfg.pooling!r}")
        if not 1 <= cfg.num_anatomies <= len(ANATOMIES):
            raise ValueError(f"num_anatomies must be 1..{len(ANATOMIES)}, got {cfg.num_anatomies}")
        self.config = cfg
        self.vision = build_vision_encoder(cfg.vision, **cfg.vision_kwargs)
        channels = int(self.vision.out_channels)
        self.attention_pool = (
            AttentionMaskPool(
                channels, cfg.num_anatomies, cfg.attention_heads, min_coverage=cfg.min_coverage
            )
            if cfg.pooling == "attention"
            else None
        )
        self.text_encoder = TextEncoder(
            cfg.text_model,
            pooling=cfg.text_pooling,
            train_layers=cfg.text_train_layers,
            max_length=cfg.max_length,
            use_cache=cfg.text_cache,
        )
        self.visual_proj = ProjectionHead(channels, cfg.embed_dim, cfg.projection)
        self.text_proj = ProjectionHead(
            self.text_encoder.hidden_size, cfg.embed_dim, cfg.projection
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.logit_bias_init)))
        self.localisation_head = (
            LocalisationHead(channels, cfg.embed_dim) if cfg.localisation_head else None
        )

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def scale(self) -> torch.Tensor:
        """``exp(logit_scale)`` clamped at ``exp(logit_scale_max)`` (100): multiplies cosines."""
        return self.logit_scale.clamp(max=self.config.logit_scale_max).exp()

    # ------------------------------------------------------------------ image side
    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """Vision encoder feature map (B,C,h,w,d) of an image batch (B,1,H,W,D)."""
        return self.vision(image)

    def encode_image(self, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v (B,K,E) L2-normalised, present (B,K) bool)`` from ``batch["image"]`` and
        ``batch["anatomy"]``; anatomies without a voxel get zero vectors."""
        v, present, _ = self._encode_image(batch)
        return v, present

    def _encode_image(self, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``encode_image``'s ``(v, present)`` and the feature map they were pooled from."""
        image, anatomy = image_and_anatomy(batch, self.device)
        with record_function("vision"):
            features = self.image_features(image)
        with record_function("pooling"):
            if self.attention_pool is not None:
                pooled, present = self.attention_pool(features, anatomy)
            else:
                pooled, present = mean_mask_pool(
                    features, anatomy, self.config.num_anatomies, self.config.min_coverage
                )
            v = F.normalize(self.visual_proj(pooled), dim=-1)
        return v * present.unsqueeze(-1).to(v.dtype), present, features

    def locate_snippets_head(self) -> nn.Module:
        """The localisation head; a ValueError saying how to build one if the model has none."""
        if self.localisation_head is None:
            raise ValueError(
                "this model has no localisation head: build it with "
                "ModelConfig(localisation_head=True) (the 'localisation' loss term does)"
            )
        return self.localisation_head

    def locate_snippets(
        self, features: torch.Tensor, rows: torch.Tensor, snippets: Sequence[str]
    ) -> torch.Tensor:
        """``(P,)`` predicted axial positions (fractions, RAS+) of ``snippets``, each in the
        volume ``rows[p]`` of a ``(B,C,h,w,d)`` feature map (needs ``localisation_head``)."""
        head = self.locate_snippets_head()
        slices = slice_features(features).index_select(0, rows.to(features.device))
        position, _ = head(slices, self.encode_text(snippets))
        return position

    # ------------------------------------------------------------------ text side
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised embeddings (N,E) of ``texts``; "" gives a finite vector (callers mask it)."""
        hidden = self.text_encoder(list(texts)).to(self.device)
        return F.normalize(self.text_proj(hidden), dim=-1)

    def encode_batch_texts(self, texts: Sequence[Sequence[str]]) -> torch.Tensor:
        """(B,K,E) embeddings of per-anatomy descriptions, zeros where a description is "".

        Only the unique non-empty strings of the call go through the encoder (a batch repeats
        normal sentences a lot), then they are scattered back.
        """
        rows = [list(r) for r in texts]
        k = len(rows[0]) if rows else self.config.num_anatomies
        bad = [i for i, r in enumerate(rows) if len(r) != k]
        if bad:
            raise ValueError(
                f"batch texts must be B lists of {k} strings; rows {bad} have other lengths"
            )
        flat = [t for r in rows for t in r]
        unique = list(dict.fromkeys(t for t in flat if t))
        out = torch.zeros(len(flat), self.config.embed_dim, device=self.device)
        if unique:
            emb = self.encode_text(unique)
            index = {t: i for i, t in enumerate(unique)}
            where = [i for i, t in enumerate(flat) if t]
            src = torch.tensor([index[flat[i]] for i in where], device=self.device)
            dst = torch.tensor(where, device=self.device)
            out = out.index_copy(0, dst, emb.index_select(0, src).to(out.dtype))
        return out.view(len(rows), k, self.config.embed_dim)

    def anatomy_prompt_embeddings(self) -> torch.Tensor:
        """(K,E) embeddings of the CT-GLIP prompts "This is the {anatomy} in the CT scan."."""
        return self.encode_text([a.prompt for a in ANATOMIES[: self.config.num_anatomies]])

    # ------------------------------------------------------------------ text cache
    @property
    def text_cache_stats(self) -> dict[str, int]:
        """Hits, misses and size of the frozen-text-encoder cache (see ``text_encoder.py``)."""
        return self.text_encoder.cache_stats

    def set_text_cache(self, enabled: bool) -> None:
        """Switch the text cache on or off (off = re-encode every string, for benchmarks)."""
        self.text_encoder.use_cache = bool(enabled)
        self.text_encoder.clear_cache()

    # ------------------------------------------------------------------ one training step
    def forward(
        self,
        batch: Mapping,
        texts: Sequence[Sequence[str]] | None = None,
        dictionary: Sequence[str] | None = None,
        with_prompts: bool = False,
        disease_prompts: Sequence[str] | None = None,
        snippets: tuple[torch.Tensor, Sequence[str]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The loss inputs the model provides, named as :mod:`cagcl_mini.losses.objective`'s
        ``INPUT_KEYS``, in one call (so DistributedDataParallel syncs every gradient):

        ``v`` (B,K,E) visual anatomy embeddings, ``t`` (B,K,E) embeddings of ``texts`` (default
        ``batch["texts"]``), ``present`` (B,K): the anatomy is in the volume *and* described,
        ``logit_scale`` and ``logit_bias``; plus ``dictionary`` (M,E) for the ``dictionary``
        sentences (CT-GLIP's abnormality dictionary) and ``anatomy_text`` (K,E), the anatomy
        prompts, when ``with_prompts``; ``disease_text`` for the ``disease_prompts`` (the disease
        supervision term); ``snippet_position`` (P,) for ``snippets``, ``(rows (P,), texts)``:
        cited report snippets and the batch row of each one's volume (the localisation term).
        The batch supplies the rest (``abnormal``, ``texts``, labels...).
        """
        v, in_volume, features = self._encode_image(batch)
        texts = batch["texts"] if texts is None else texts
        described = torch.tensor(
            [[bool(t) for t in row] for row in texts], dtype=torch.bool, device=self.device
        )
        with record_function("text"):
            t = self.encode_batch_texts(texts)
        out = {
            "v": v,
            "t": t,
            "present": in_volume & described,
            "logit_scale": self.logit_scale,
            "logit_bias": self.logit_bias,
        }
        if dictionary is not None:
            out["dictionary"] = self.encode_text(dictionary)
        if with_prompts:
            out["anatomy_text"] = self.anatomy_prompt_embeddings()
        if disease_prompts is not None:
            out["disease_text"] = self.encode_text(disease_prompts)
        if snippets is not None:
            rows, snippet_texts = snippets
            if len(snippet_texts):
                out["snippet_position"] = self.locate_snippets(features, rows, snippet_texts)
            else:  # empty, but tied to the head so backward and DDP still see its parameters
                head = self.locate_snippets_head()
                out["snippet_position"] = torch.cat([p.reshape(-1)[:0] for p in head.parameters()])
        return out

    # ------------------------------------------------------------------ checkpoints
    def _frozen_text_keys(self) -> set[str]:
        prefix = "text_encoder.model."
        trainable = {
            prefix + n for n, p in self.text_encoder.model.named_parameters() if p.requires_grad
        }
        return {k for k in self.state_dict() if k.startswith(prefix) and k not in trainable}

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """``state_dict`` without the frozen pretrained text weights (they reload from the
        package): ~1 MB instead of ~92 MB with the frozen MiniLM."""
        frozen = self._frozen_text_keys()
        return {k: v for k, v in self.state_dict().items() if k not in frozen}

    def load_checkpoint_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a ``checkpoint_state_dict`` (or a full ``state_dict``); only frozen text weights
        may be missing, anything else missing or unexpected is an error naming the keys."""
        result = self.load_state_dict(dict(state), strict=False)
        missing = sorted(set(result.missing_keys) - self._frozen_text_keys())
        if missing or result.unexpected_keys:
            raise KeyError(
                f"checkpoint does not fit this model: missing {missing[:8]}, "
                f"unexpected {sorted(result.unexpected_keys)[:8]}"
            )


def image_and_anatomy(batch: Mapping, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ``batch["image"]`` (B,1,H,W,D) float and ``batch["anatomy"]`` (B,H,W,D) long."""
    for key in ("image", "anatomy"):
        if key not in batch:
            raise KeyError(f"batch has no {key!r} (keys: {sorted(batch)})")
    # MONAI MetaTensors become plain tensors: metadata tracking only slows the network down.
    image, anatomy = (
        x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
        for x in (batch["image"], batch["anatomy"])
    )
    if image.dim() != 5 or image.shape[1] != 1:
        raise ValueError(f"batch['image'] must be (B,1,H,W,D), got {tuple(image.shape)}")
    if anatomy.shape != image.shape[:1] + image.shape[2:]:
        raise ValueError(
            f"batch['anatomy'] must be (B,H,W,D) = {tuple(image.shape[:1] + image.shape[2:])}, "
            f"got {tuple(anatomy.shape)}"
        )
    if anatomy.dtype.is_floating_point:
        raise ValueError(f"batch['anatomy'] must be an integer label map, got {anatomy.dtype}")
    return image.to(device, torch.float32, non_blocking=True), anatomy.to(
        device, torch.long, non_blocking=True
    )
