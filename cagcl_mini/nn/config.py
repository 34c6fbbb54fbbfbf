"""``ModelConfig``: the plain values that rebuild an ``AnatomyCLIP``, apart from the network code.

It lives in its own module so that reading and checking a training config (``train.config``, the
CLI's ``--print-config`` and its one-line errors) does not import MONAI and the vision networks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

from cagcl_mini.anatomy import NUM_ANATOMIES


@dataclass
class ModelConfig:
    """Everything needed to rebuild an ``AnatomyCLIP`` (stored in checkpoints via ``to_dict``)."""

    vision: str = "tiny"  # a name of vision_encoder.VISION_ENCODERS
    vision_kwargs: dict = field(default_factory=dict)  # overrides for build_vision_encoder
    embed_dim: int = 128
    pooling: str = "mean"  # "mean" | "attention"
    attention_heads: int = 4
    min_coverage: float = 0.0  # feature voxels covering less of an anatomy are ignored for it
    projection: str = "linear"  # "linear" | "mlp" (Linear-GELU-Linear)
    text_model: str | None = None  # Hugging Face id or folder; None = the bundled MiniLM
    text_pooling: str = "mean"  # "cls" | "mean"
    text_train_layers: int = 0  # 0 frozen, n last layers, -1 all
    max_length: int = 64
    text_cache: bool = True  # cache frozen-encoder outputs per string
    num_anatomies: int = NUM_ANATOMIES
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = math.log(100.0)
    logit_bias_init: float = -10.0
    localisation_head: bool = False  # a LocalisationHead for the pretraining's localisation term

    def __post_init__(self) -> None:
        if self.text_model is not None:
            self.text_model = str(self.text_model)  # a Path would not load with weights_only
        if isinstance(self.max_length, int) and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 (CLS and SEP tokens), got {self.max_length}")

    def to_dict(self) -> dict:
        """Plain dict of builtins (loads with ``torch.load(..., weights_only=True)``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; known: {sorted(known)}")
        return cls(**dict(data))
