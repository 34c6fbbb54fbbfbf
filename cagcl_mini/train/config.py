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
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from cagcl_mini import paths
from cagcl_mini.fileio import atomic_write_text
from cagcl_mini.losses.objective import PRESET_AUGMENT, resolve_weights
from cagcl_mini.nn.config import ModelConfig
from cagcl_mini.phantom.plan import PhantomSpec
from cagcl_mini.train.presets import PRESETS

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
        "hu_check",  # a check of the input, not a change of what is computed from it
    }
)

# Fields added after runs were cached: they enter the fingerprint only away from these defaults,
# so a cached run's name (and its checkpoint) survives the field's arrival.
LATE_FIELD_DEFAULTS: dict[str, Any] = {"dictionary_fraction": 1.0, "image_augment": False}

PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]


@dataclass(config=ConfigDict(extra="forbid"))
class TrainConfig:
    """Everything a pretraining run needs; the defaults are the ``cpu-quick`` preset.

    A pydantic dataclass: every field is checked (type and range) when the config is built, so a
    bad value in a YAML file or a ``--set`` fails when it is read, naming the field.
    """

    name: str = "cpu-quick"
    loss_preset: str | dict = "cagcl"  # "fvlm" | "ctglip" | "cagcl" or {term: weight}
    augment: bool | None = None  # text augmentation; None = the loss preset's choice
    augment_variants: PositiveInt | None = 2  # augmentations per description (None: fresh)
    image_augment: bool = False  # random blur, noise and HU offset (data/appearance.py)
    # share of each anatomy's abnormality dictionary the diagnosis term uses (ablation; 1 = all)
    dictionary_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    # data: None = the embedded phantom dataset under paths.default_data_dir(), built on demand
    data_root: str | None = None
    n_train: PositiveInt = PhantomSpec.n_train
    n_valid: Count = PhantomSpec.n_valid
    data_size: PositiveInt = PhantomSpec.size  # edge of the phantom volumes written to disk
    data_seed: int = PhantomSpec.seed
    data_difficulty: str = PhantomSpec.difficulty  # "tutorial" or "realistic" (phantom only)
    image_size: PositiveInt = 48  # edge of the volumes the network sees (resized by the loader)
    data_cache: str | bool = "disk+memory"  # CTReportDataset cache: False, "memory", "disk",
    # "disk+memory" or a folder
    hu_check: bool = True  # the loader's HU sanity check of every volume (air near -1000 HU)
    # model: ModelConfig overrides
    model: dict = field(
        default_factory=lambda: {
            "vision": "tiny",
            "pooling": "attention",
            "embed_dim": 128,
            "text_pooling": "cls",
            "text_train_layers": 1,
            "max_length": 128,
        }
    )
    text_prefix_cache: bool = True  # cache hidden states below the first trainable text layer
    # optimisation
    # 240 steps of 8 volumes: the same volume passes as 120 of 16, more optimiser steps
    batch_size: PositiveInt = 8  # global batch per micro-step (split across torchrun processes)
    grad_accum: PositiveInt = 1  # micro-batches per optimiser step
    steps: PositiveInt = 240  # optimiser steps
    lr: Annotated[float, Field(gt=0.0)] = 5e-3
    text_lr: Annotated[float, Field(ge=0.0)] = 1e-4  # the transformer layers of the text encoder
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.01
    warmup_steps: Count = 24
    min_lr_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05  # cosine ends at lr * this
    clip_grad: Annotated[float, Field(gt=0.0)] | None = 1.0  # max gradient norm; None = no clip
    seed: int = 0
    # bookkeeping
    checkpoint_every: Count = 40  # optimiser steps between checkpoints (0 = only the final one)
    keep_checkpoints: PositiveInt = 2  # periodic checkpoints kept (oldest deleted)
    log_every: PositiveInt = 1
    log_format: Literal["jsonl", "csv"] = "jsonl"
    out_dir: str | None = None  # None = paths.checkpoint_dir() / run_name()
    num_workers: Count = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # "auto" = cuda, then mps, then cpu
    amp: bool = True  # bf16 autocast of the forward on CUDA
    cpu_bf16: bool = True  # the same on CPUs with native bf16 (AMX / AVX-512 BF16) only
    deterministic: bool = False  # torch.use_deterministic_algorithms (warn only)
    progress: bool = True  # tqdm progress bar

    # ------------------------------------------------------------------ checks
    def __post_init__(self) -> None:
        """The checks a field type cannot state: the loss preset and the model's fields."""
        try:
            resolve_weights(self.loss_preset)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"loss_preset: {exc.args[0]}") from None
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(self.model) - known)
        if unknown:
            raise ValueError(
                f"unknown key 'model.{unknown[0]}'; ModelConfig fields are "
                f"{', '.join(sorted(known))}"
            )
        try:
            checked = TypeAdapter(ModelConfig).validate_python(dict(self.model))
        except ValidationError as exc:
            raise ValueError(describe_validation_error(exc, prefix="model.")) from None
        self.model = {key: getattr(checked, key) for key in self.model}

    def check_runnable(self) -> None:
        """What a run needs beyond valid fields: an existing ``data_root``, and on the phantom a
        training split that holds one batch. Cheap, so the CLI checks it before heavy imports."""
        if self.data_root is not None and not Path(self.data_root).expanduser().is_dir():
            raise FileNotFoundError(f"dataset root {self.data_root} does not exist (data_root)")
        if self.data_root is None and self.n_train < self.batch_size:
            raise ValueError(
                f"the phantom's train split would hold {self.n_train} volumes (n_train), fewer "
                f"than one batch (batch_size {self.batch_size})"
            )

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
        """The :class:`cagcl_mini.nn.model.ModelConfig` of this run (errors name unknown keys);
        the localisation loss term adds the head it trains."""
        model = dict(self.model)
        if "localisation" in self.loss_weights():
            model["localisation_head"] = True
        return ModelConfig.from_dict(model)

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
        data = {
            k: v
            for k, v in self.to_dict().items()
            if k not in BOOKKEEPING_FIELDS and LATE_FIELD_DEFAULTS.get(k, object()) != v
        }
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
            raise ValueError(
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
        except ValidationError as exc:
            raise ValueError(f"{source}: {describe_validation_error(exc)}") from None

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


_EXPECTED = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "none_required": "null",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line for a pydantic error: ``<field>: expected <what>, got <value>``.

    Only the first faulty field is named (the others are reported once it is fixed); the members
    of a union (``float | None``) are joined with "or"."""
    errors = exc.errors()
    first = errors[0]
    if first["type"] == "value_error" and not first["loc"]:  # raised by __post_init__
        return str(first["ctx"]["error"])
    name = str(first["loc"][0])
    wanted = []
    for err in (e for e in errors if e["loc"] and str(e["loc"][0]) == name):
        kind, ctx = err["type"], err.get("ctx") or {}
        if kind in _BOUNDS:
            bound = next(iter(ctx.values()))
            wanted.append(
                f"{_BOUNDS[kind]} {bound:g}"
                if isinstance(bound, float)
                else f"{_BOUNDS[kind]} {bound}"
            )
        elif kind == "literal_error":
            wanted.append(ctx["expected"])
        elif kind == "value_error":
            return f"{prefix}{name}: {ctx['error']}"
        else:
            wanted.append(_EXPECTED.get(kind, err["msg"]))
    got = first["input"]
    return f"{prefix}{name}: expected {' or '.join(dict.fromkeys(wanted))}, got {got!r}"


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
