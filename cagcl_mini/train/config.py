"""Training configuration: one dataclass, YAML in and out, presets, ``key=value`` overrides.

A ``TrainConfig`` holds every choice of a pretraining run (data, model, objective, optimiser,
bookkeeping) as plain values, so it round-trips through YAML and through a checkpoint loaded with
``torch.load(weights_only=True)``. Its defaults are the ``cpu-quick`` preset; the presets are in
:mod:`cagcl_mini.train.presets`. With ``cpu-quick`` the text side is nearly free: the frozen
layers are cached per string and the last layer runs for the CLS position only
(:mod:`cagcl_mini.nn.text_cache`). The README has the measured step times and what the presets
do to the collapse statistics.

The nested ``model`` dict holds :class:`cagcl_mini.nn.model.ModelConfig` overrides. Unknown keys in
a YAML file are errors naming the key and the file.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cagcl_mini import paths
from cagcl_mini.fileio import atomic_write_text
from cagcl_mini.losses.objective import PRESET_AUGMENT, resolve_weights
from cagcl_mini.nn.model import ModelConfig
from cagcl_mini.phantom.plan import PhantomSpec
from cagcl_mini.train.presets import PRESETS

LOG_FORMATS: tuple[str, ...] = ("jsonl", "csv")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")

# Fields that change where or how verbosely a run is recorded, not what it computes.
BOOKKEEPING_FIELDS: frozenset[str] = frozenset(
    {
        "out_dir",
        "num_workers",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "log_format",
        "progress",
        "data_cache",
    }
)


@dataclass
class TrainConfig:
    """Everything a pretraining run needs; the defaults are the ``cpu-quick`` preset."""

    name: str = "cpu-quick"
    loss_preset: str | dict = "cagcl"  # "fvlm" | "ctglip" | "cagcl" or {term: weight}
    augment: bool | None = None  # text augmentation; None = the loss preset's choice
    augment_variants: int | None = 2  # augmentations per description (None: a fresh one per step)
    # data: None = the embedded phantom dataset under paths.default_data_dir(), built on demand
    data_root: str | None = None
    n_train: int = PhantomSpec.n_train
    n_valid: int = PhantomSpec.n_valid
    data_size: int = PhantomSpec.size  # edge of the phantom volumes written to disk
    data_seed: int = PhantomSpec.seed
    data_difficulty: str = PhantomSpec.difficulty  # "tutorial" or "realistic" (phantom only)
    image_size: int = 48  # edge of the volumes the network sees (resized by the loader)
    data_cache: str | bool = "disk+memory"  # CTReportDataset cache: False, "memory", "disk",
    # "disk+memory" or a folder
    # model: ModelConfig overrides
    model: dict = field(
        default_factory=lambda: {
            "vision": "tiny",
            "pooling": "attention",
            "embed_dim": 128,
            "text_pooling": "cls",
            "text_train_layers": 1,
            "max_length": 48,
        }
    )
    text_prefix_cache: bool = True  # cache hidden states below the first trainable text layer
    # optimisation
    batch_size: int = 16  # global batch per micro-step (split across processes under torchrun)
    grad_accum: int = 1  # micro-batches per optimiser step
    steps: int = 120  # optimiser steps
    lr: float = 5e-3
    text_lr: float = 1e-4  # for the transformer layers of the text encoder
    weight_decay: float = 0.01
    warmup_steps: int = 12
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    clip_grad: float | None = 1.0  # max global gradient norm; None = no clipping
    seed: int = 0
    # bookkeeping
    checkpoint_every: int = 40  # optimiser steps between checkpoints (0 = only the final one)
    keep_checkpoints: int = 2  # periodic checkpoints kept (oldest deleted)
    log_every: int = 1
    log_format: str = "jsonl"  # "jsonl" | "csv"
    out_dir: str | None = None  # None = paths.checkpoint_dir() / run_name()
    num_workers: int = 0
    device: str = "auto"  # "auto" = cuda, then mps, then cpu
    amp: bool = True  # bf16 autocast of the forward on CUDA
    cpu_bf16: bool = False  # the same on CPUs with native bf16 (AMX / AVX-512 BF16) only
    deterministic: bool = False  # torch.use_deterministic_algorithms (warn only)
    progress: bool = True  # tqdm progress bar

    # ------------------------------------------------------------------ checks
    def __post_init__(self) -> None:
        self._coerce_numbers()
        positive = ("batch_size", "grad_accum", "steps", "image_size", "n_train", "log_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "num_workers", "n_valid"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.augment_variants is not None and self.augment_variants < 1:
            raise ValueError(
                f"TrainConfig.augment_variants must be >= 1 or None, got {self.augment_variants}"
            )
        if self.keep_checkpoints < 1:
            raise ValueError(
                f"TrainConfig.keep_checkpoints must be >= 1, got {self.keep_checkpoints}"
            )
        if self.log_format not in LOG_FORMATS:
            raise ValueError(
                f"TrainConfig.log_format must be one of {LOG_FORMATS}, got {self.log_format!r}"
            )
        if self.device not in DEVICES:
            raise ValueError(f"TrainConfig.device must be one of {DEVICES}, got {self.device!r}")
        if not isinstance(self.model, dict):
            raise TypeError(
                f"TrainConfig.model must be a dict of ModelConfig fields, got {self.model!r}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(
                f"TrainConfig.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}"
            )

    def _coerce_numbers(self) -> None:
        """YAML 1.1 reads ``3e-4`` as a string and ``1`` as an int: fix float/int fields."""
        for f in dataclasses.fields(self):
            kind = str(f.type).replace(" | None", "")
            value = getattr(self, f.name)
            if value is None or kind not in ("float", "int") or isinstance(value, bool):
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"TrainConfig.{f.name} must be a number, got {value!r}") from None
            if kind == "int":
                if not number.is_integer():
                    raise ValueError(f"TrainConfig.{f.name} must be an integer, got {value!r}")
                number = int(number)
            setattr(self, f.name, number)

    # ------------------------------------------------------------------ derived values
    def loss_weights(self) -> dict[str, float]:
        """The {term: weight} dict of ``loss_preset`` (validated by ``losses.resolve_weights``)."""
        return resolve_weights(self.loss_preset)

    def use_augment(self) -> bool:
        """``augment``, or the loss preset's default (cagcl augments, fvlm and ctglip do not)."""
        if self.augment is not None:
            return bool(self.augment)
        return isinstance(self.loss_preset, str) and PRESET_AUGMENT.get(self.loss_preset, False)

    def model_config(self) -> ModelConfig:
        """The :class:`cagcl_mini.nn.model.ModelConfig` of this run (errors name unknown keys)."""
        return ModelConfig.from_dict(self.model)

    def phantom_spec(self) -> PhantomSpec:
        """The embedded dataset this run trains on when ``data_root`` is None."""
        return PhantomSpec(
            self.n_train, self.n_valid, self.data_size, self.data_seed, self.data_difficulty
        )

    def with_steps(self, steps: int | None) -> TrainConfig:
        """A copy with ``steps`` optimiser steps and the warmup scaled alike (None: unchanged)."""
        if steps is None or int(steps) == self.steps:
            return self
        warmup = max(1, round(self.warmup_steps * int(steps) / self.steps))
        return self.replace(steps=int(steps), warmup_steps=warmup)

    def loss_tag(self) -> str:
        """The preset name, or ``custom`` for a weights dict."""
        return self.loss_preset if isinstance(self.loss_preset, str) else "custom"

    def fingerprint(self) -> str:
        """Hash of every field that changes the computation (not paths, logging or workers),
        and, on the embedded data, of the phantom it builds (its version and calibration), so a
        cached run never outlives the dataset it was trained on."""
        data = {k: v for k, v in self.to_dict().items() if k not in BOOKKEEPING_FIELDS}
        if self.data_root is None:
            data["phantom"] = self.phantom_spec().params()
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]

    def run_name(self) -> str:
        """``<name>-<loss>-<fingerprint>``: one folder per distinct computation."""
        return f"{self.name}-{self.loss_tag()}-{self.fingerprint()[:8]}"

    def run_dir(self) -> Path:
        """``out_dir``, or ``paths.checkpoint_dir() / run_name()``."""
        if self.out_dir is not None:
            return Path(self.out_dir).expanduser()
        return paths.checkpoint_dir() / self.run_name()

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain builtins only (YAML- and ``weights_only``-safe)."""
        return copy.deepcopy(dataclasses.asdict(self))

    def flat_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with the model's fields as ``model.<field>`` entries (one level, for
        tables that compare configs)."""
        data = self.to_dict()
        model = data.pop("model")
        return data | {f"model.{k}": v for k, v in model.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a dict; unknown keys (also inside ``model``) raise naming key and source."""
        if not isinstance(data, dict):
            raise TypeError(
                f"{source}: expected a mapping of TrainConfig fields, got {type(data).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise ValueError(
                    f"{source}: unknown key {key!r}; TrainConfig fields are {', '.join(sorted(known))}"
                )
        data = copy.deepcopy(dict(data))
        model = data.get("model", {})
        if not isinstance(model, dict):
            raise ValueError(f"{source}: 'model' must be a mapping of ModelConfig fields")
        model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
        for key in model:
            if key not in model_fields:
                raise ValueError(
                    f"{source}: unknown key 'model.{key}'; ModelConfig fields are "
                    f"{', '.join(sorted(model_fields))}"
                )
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc

    def save_yaml(self, path: str | Path) -> Path:
        """Write the config as YAML, atomically (temp file + rename)."""
        path = Path(path)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        atomic_write_text(path, text)
        return path

    @classmethod
    def load_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML written by ``save_yaml`` (or by hand: missing keys take the defaults)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (checked like ``from_dict``)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes}, source="replace()")

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """Apply ``key=value`` strings (values parsed as YAML; ``model.key=value`` for the model)."""
        data = self.to_dict()
        for item in assignments:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ValueError(f"override {item!r} is not of the form key=value")
            value = yaml.safe_load(raw) if raw.strip() else None
            *parents, leaf = key.strip().split(".")
            target = data
            for part in parents:
                if not isinstance(target.get(part), dict):
                    raise ValueError(f"override {item!r}: {part!r} is not a nested mapping")
                target = target[part]
            target[leaf] = value
        return TrainConfig.from_dict(data, source="overrides " + " ".join(assignments))


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A preset's config (``cpu-quick`` or ``gpu-full``), with fields changed by ``overrides``."""
    if name not in PRESETS:
        raise KeyError(f"unknown training preset {name!r}; choose one of {', '.join(PRESETS)}")
    base = TrainConfig().to_dict()
    base.update(copy.deepcopy(PRESETS[name]))
    base.update(overrides)
    return TrainConfig.from_dict(base, source=f"preset {name!r}")


def resolve_config(spec: str | Path | TrainConfig | dict) -> TrainConfig:
    """A ``TrainConfig`` from a preset name, a YAML path, a dict or a config (copied)."""
    if isinstance(spec, TrainConfig):
        return TrainConfig.from_dict(spec.to_dict())
    if isinstance(spec, dict):
        return TrainConfig.from_dict(spec)
    if isinstance(spec, str) and spec in PRESETS:
        return preset(spec)
    path = Path(spec)
    if path.is_file():
        return TrainConfig.load_yaml(path)
    raise FileNotFoundError(
        f"--config {spec!r} is neither a preset ({', '.join(PRESETS)}) nor an existing YAML file"
    )
