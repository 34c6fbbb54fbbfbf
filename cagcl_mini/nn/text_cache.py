"""Prefix cache for a partially trainable text encoder: run only the layers that train.

When only the last n of L transformer layers train, the embeddings and the first L - n layers are a
fixed function of the string. Training repeats the same descriptions every epoch, so this module
keeps, per unique string, the hidden states entering the first trainable layer, and each step runs
only the n trainable layers on them. With MiniLM (6 layers) and 2 trainable layers a text forward +
backward costs about a third of the full one.

The frozen bottom runs in eval mode (no dropout), so a cached state equals a fresh one; dropout
still acts in the trainable layers. (Without the cache the frozen layers would apply dropout in
training mode: injected noise, no learning.) The trainable top layers see the same attention mask
the full model builds (``transformers.masking_utils.create_bidirectional_mask``), padded positions
are zeros that no real token attends to, so outputs equal the uncached encoder's (checked in tests).
With CLS pooling only position 0 of the last layer is ever read, so that layer runs for the CLS
query alone (:func:`cls_only_layer`), with the query absorbed into the key and value projections:
no token of the cached states is projected, a padded token costs next to nothing, and the
descriptions of a call run as one padded batch. The frozen bottom (new strings), and trainable
layers below the last, run on groups of similar token count (:func:`bucket_by_length`), so a short
normal sentence is not padded to the longest lung description of its batch.

``attach_prefix_cache(text_encoder)`` routes the encoder's ``encode_uncached`` through the cache;
it applies to BERT-style models (``.embeddings`` + ``.encoder.layer``) while 0 < n < L layers
train, and otherwise falls back to the encoder's own path (a frozen encoder has its own
pooled-output cache in :mod:`cagcl_mini.nn.text`).

On disk. The shared store of a text model is also kept in ``$CAGCL_MINI_HOME/cache/text_prefix``
(one file per text model, ``max_length`` and split layer, named by a digest of the frozen
weights): a store is read from there the first time a process needs it, and
:func:`save_shared_prefix_states` (called at the end of training and of ``embed_dataset``) writes
the strings computed since, merged with the file, under a temporary name renamed into place. So
the next notebook or process does not run the frozen bottom again for the same descriptions.
States read back are the computed ones, bit for bit; which strings shared a padded batch when they
were first computed can differ between histories, as it already does inside one process
(differences of float rounding). ``CAGCL_MINI_PREFIX_DISK=0`` keeps the stores in memory only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from cagcl_mini import paths
from cagcl_mini.fileio import atomic_path
from cagcl_mini.nn.digest import state_digest
from cagcl_mini.nn.text import TextEncoder, bucket_by_length

# Frozen bottoms are the pretrained weights, the same in every model built on the same text model:
# models of one process share their cached states (evaluation embeds the same descriptions with
# every model it compares). Keyed by (text model, max_length, split layer).
_SHARED: dict[tuple[str, int, int], OrderedDict[str, torch.Tensor]] = {}
_FILES: dict[tuple[str, int, int], Path] = {}  # a shared store's file, once it has been looked up
_NEW: dict[tuple[str, int, int], int] = {}  # strings computed since the store was last saved
BOTTOM_CHUNK = 256  # strings per forward of the frozen bottom (bounds its attention memory)
DISK_ENV = "CAGCL_MINI_PREFIX_DISK"  # "0": shared stores stay in memory only
DISK_FORMAT = 1
MAX_DISK_BYTES = 256 * 2**20  # a store's file keeps its most recently used strings up to this


def clear_shared_prefix_states() -> None:
    """Forget every shared prefix state in memory (tests, or to free memory); files stay."""
    _SHARED.clear()
    _FILES.clear()
    _NEW.clear()


_MEMORY_ONLY = [0]  # depth of memory_only() blocks


def disk_enabled() -> bool:
    """Whether shared stores are read from and saved to disk (``CAGCL_MINI_PREFIX_DISK``, and
    not inside :func:`memory_only`)."""
    return not _MEMORY_ONLY[0] and os.environ.get(DISK_ENV, "1").strip() != "0"


@contextlib.contextmanager
def memory_only() -> Iterator[None]:
    """Inside, shared stores are neither read from nor saved to disk (to time the cold path)."""
    _MEMORY_ONLY[0] += 1
    try:
        yield
    finally:
        _MEMORY_ONLY[0] -= 1


def prefix_dir() -> Path:
    """Where shared stores are kept on disk (``$CAGCL_MINI_HOME/cache/text_prefix``)."""
    return paths.home() / "cache" / "text_prefix"


def _store_file(key: tuple[str, int, int], encoder: TextEncoder) -> Path:
    """The file of a shared store: named by a digest of the frozen bottom's weights."""
    model, split = encoder.model, key[2]
    frozen = nn.ModuleList([model.embeddings, *model.encoder.layer[:split]])
    name = json.dumps([DISK_FORMAT, *key, state_digest(frozen.state_dict())])
    return (
        prefix_dir()
        / f"prefix-{key[1]}-{split}-{hashlib.sha256(name.encode()).hexdigest()[:24]}.pt"
    )


def _read_states(path: Path, warn: bool = True) -> OrderedDict[str, torch.Tensor]:
    """The states a store file holds (empty when absent; unreadable: empty, with a warning)."""
    if not path.is_file():
        return OrderedDict()
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        texts, lengths, states = data["texts"], data["lengths"], data["states"]
        if data.get("format") != DISK_FORMAT or len(texts) != len(lengths):
            raise ValueError(f"not a format-{DISK_FORMAT} prefix file")
        return OrderedDict(zip(texts, torch.split(states, lengths), strict=True))
    except Exception as exc:  # noqa: BLE001 - an unreadable cache is recomputed
        if warn:
            warnings.warn(
                f"{path}: unreadable text prefix states ({exc}); recomputing", stacklevel=2
            )
        return OrderedDict()


def save_shared_prefix_states() -> list[Path]:
    """Write every shared store that computed new strings to its file (merged with what the file
    holds, most recently used last, capped at :data:`MAX_DISK_BYTES`); the files written."""
    written = []
    for key, path in list(_FILES.items()):
        if not _NEW.get(key) or not disk_enabled():
            continue
        merged = _read_states(path, warn=False)  # unreadable: overwritten
        for text, state in _SHARED.get(key, {}).items():
            merged.pop(text, None)
            merged[text] = state
        texts, total = [], 0
        for text in reversed(merged):  # newest first, until the cap
            total += merged[text].numel() * merged[text].element_size()
            if total > MAX_DISK_BYTES:
                break
            texts.append(text)
        texts.reverse()
        data = {
            "format": DISK_FORMAT,
            "texts": texts,
            "lengths": [int(merged[t].shape[0]) for t in texts],
            "states": torch.cat([merged[t].cpu() for t in texts]) if texts else torch.zeros(0),
        }
        try:
            with atomic_path(path) as tmp:
                torch.save(data, tmp)
        except OSError as exc:  # a read-only cache folder costs speed, never a result
            warnings.warn(f"could not save text prefix states to {path}: {exc}", stacklevel=2)
            continue
        _NEW[key] = 0
        written.append(path)
    return written


class PrefixCache:
    """String -> hidden states (tokens, hidden) after the frozen bottom of a text encoder.

    With ``shared`` (the default) the states live in a store every encoder of the same text model
    and ``max_length`` shares in this process; ``max_strings`` caps that store.
    """

    def __init__(
        self, encoder: TextEncoder, max_strings: int = 20_000, shared: bool = True
    ) -> None:
        self.encoder = encoder
        self.max_strings = int(max_strings)
        self.shared = bool(shared)
        self._states: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._split: int | None = None
        self._fallback: Callable[[list[str]], torch.Tensor] = encoder.encode_uncached
        self.hits = 0
        self.misses = 0
        self.enabled = True
        # length buckets of the frozen bottom and the live top (bucket_by_length); None: one
        # batch padded to its longest
        self.bucket_growth: float | None = 1.5
        # the CLS-only last layer scores the cached states without projecting each token
        # (cls_only_layer); False projects every token's key and value (the reference)
        self.absorb_query = True

    # ------------------------------------------------------------------ where to cut
    def split_layer(self) -> int | None:
        """Index of the first trainable layer when the model can be cut there, else None."""
        model = self.encoder.model
        layers = getattr(getattr(model, "encoder", None), "layer", None)
        embeddings = getattr(model, "embeddings", None)
        if not isinstance(layers, nn.ModuleList) or embeddings is None:
            return None
        if any(p.requires_grad for p in embeddings.parameters()):
            return None
        for i, layer in enumerate(layers):
            if any(p.requires_grad for p in layer.parameters()):
                return i if i > 0 else None
        return None  # fully frozen: the encoder's own pooled cache applies

    @property
    def stats(self) -> dict[str, int]:
        """Hits and misses since the last ``clear``, and the strings in its store."""
        store = self._store(self._split) if self._split is not None else self._states
        return {"hits": self.hits, "misses": self.misses, "size": len(store)}

    def clear(self) -> None:
        """Forget this encoder's cached states (call after changing which layers train)."""
        self._states = OrderedDict()
        self.hits = self.misses = 0

    def _key(self, split: int) -> tuple[str, int, int]:
        return (str(self.encoder.name_or_path), int(self.encoder.max_length), int(split))

    def _store(self, split: int) -> OrderedDict[str, torch.Tensor]:
        if not self.shared:
            return self._states
        key = self._key(split)
        if key not in _SHARED:
            _SHARED[key] = OrderedDict()
            if disk_enabled():
                _FILES[key] = _store_file(key, self.encoder)
                device = self.encoder.device
                _SHARED[key] = OrderedDict(
                    (text, state.to(device)) for text, state in _read_states(_FILES[key]).items()
                )
        return _SHARED[key]

    # ------------------------------------------------------------------ encoding
    def _missing_groups(self, texts: list[str]) -> list[list[str]]:
        """``texts`` in groups of similar token count (``bucket_growth``), at most
        ``BOTTOM_CHUNK`` strings each: the frozen bottom pads each group to its own longest."""
        if not texts:
            return []
        if self.bucket_growth is None:
            groups = [list(range(len(texts)))]
        else:
            groups = bucket_by_length(self.encoder.token_counts(texts), self.bucket_growth)
        return [
            [texts[i] for i in group[k : k + BOTTOM_CHUNK]]
            for group in groups
            for k in range(0, len(group), BOTTOM_CHUNK)
        ]

    @torch.no_grad()
    def _bottom(self, texts: list[str], split: int) -> list[torch.Tensor]:
        """Hidden states after embeddings + layers[:split] for ``texts``, one (len_i, H) each."""
        model = self.encoder.model
        enc = self.encoder.tokenize(texts)
        modules = [model.embeddings, *model.encoder.layer[:split]]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            hidden = model.embeddings(
                input_ids=enc["input_ids"], token_type_ids=enc.get("token_type_ids")
            )
            mask = _attention_mask(model, hidden, enc["attention_mask"])
            for layer in model.encoder.layer[:split]:
                hidden = _layer_out(layer(hidden, mask))
        finally:
            for m, mode in zip(modules, modes, strict=True):
                m.train(mode)
        lengths = enc["attention_mask"].sum(1).tolist()
        return [hidden[i, : int(n)].clone() for i, n in enumerate(lengths)]

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Pooled (N, hidden) outputs of ``texts``: cached bottom, trainable top run live."""
        split = self.split_layer() if self.enabled else None
        if split is None:
            return self._fallback(texts)
        if split != self._split:
            self.clear()
            self._split = split
        store = self._store(split)
        missing = list(dict.fromkeys(t for t in texts if t not in store))
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        for group in self._missing_groups(missing):
            for text, state in zip(group, self._bottom(group, split), strict=True):
                store[text] = state
        if missing and self.shared:
            key = self._key(split)
            _NEW[key] = _NEW.get(key, 0) + len(missing)
        states = [store[t] for t in texts]
        for text in texts:
            store.move_to_end(text)
        while len(store) > self.max_strings:
            store.popitem(last=False)
        if not states:
            return torch.zeros(0, self.encoder.hidden_size, device=self.encoder.device)
        buckets = (
            length_buckets(states, self.bucket_growth)
            if self.bucket_growth is not None and self._padding_costs(split)
            else [list(range(len(states)))]
        )
        out = torch.cat([self._top([states[i] for i in bucket], split) for bucket in buckets])
        order = torch.tensor([i for bucket in buckets for i in bucket])
        return out.index_select(0, torch.argsort(order).to(out.device))

    def _cls_only_last(self) -> bool:
        """Whether the last layer runs for the CLS position alone (CLS pooling, a BERT block)."""
        return self.encoder.pooling == "cls" and _bert_layer(self.encoder.model.encoder.layer[-1])

    def _padding_costs(self, split: int) -> bool:
        """Whether a padded token costs a live layer's work: not when the only live layer is the
        CLS-only one with its query absorbed, so one padded batch beats several length groups."""
        only_cls = self._cls_only_last() and split == len(self.encoder.model.encoder.layer) - 1
        return not (only_cls and self.absorb_query)

    def _top(self, states: list[torch.Tensor], split: int) -> torch.Tensor:
        """Pooled (N, hidden) outputs of the trainable layers (from ``split``) on cached states."""
        model = self.encoder.model
        hidden = nn.utils.rnn.pad_sequence(states, batch_first=True)
        lengths = torch.tensor([s.shape[0] for s in states], device=hidden.device)
        attention = (
            torch.arange(hidden.shape[1], device=hidden.device)[None] < lengths[:, None]
        ).long()
        top = list(model.encoder.layer[split:])
        last_cls = self._cls_only_last()
        if last_cls:  # CLS pooling reads one position of the last layer: compute only that one
            top = top[:-1]
        mask = _attention_mask(model, hidden, attention) if top else None
        for layer in top:
            hidden = _layer_out(layer(hidden, mask))
        if last_cls:
            hidden = cls_only_layer(model.encoder.layer[-1], hidden, attention, self.absorb_query)
        return self.encoder.pool(hidden, attention).float()


def length_buckets(states: list[torch.Tensor], growth: float = 1.5) -> list[list[int]]:
    """:func:`bucket_by_length` of cached states by their token count."""
    return bucket_by_length([s.shape[0] for s in states], growth)


def _bert_layer(layer: nn.Module) -> bool:
    """Whether ``layer`` has the BERT block layout :func:`cls_only_layer` relies on."""
    attn = getattr(layer, "attention", None)
    self_attn = getattr(attn, "self", None)
    needed = [(self_attn, n) for n in ("query", "key", "value", "num_attention_heads")]
    needed += [(attn, "output"), (layer, "intermediate"), (layer, "output")]
    return all(hasattr(obj, name) for obj, name in needed)


def cls_only_layer(
    layer: nn.Module, hidden: torch.Tensor, attention: torch.Tensor, absorb_query: bool = True
) -> torch.Tensor:
    """A BERT layer's output at position 0 only, as (N, 1, hidden).

    The CLS query attends to every real token, then the attention output projection, the
    feed-forward block and both LayerNorms run on one position instead of L. With
    ``absorb_query`` (the default) no token is projected either: a head's score of token j is
    ``q . (W_k h_j + b_k) = (W_k^T q) . h_j + q . b_k``, and its output
    ``sum_j a_j (W_v h_j + b_v) = W_v (sum_j a_j h_j) + b_v sum_j a_j``, so the key and value
    projections run once per string instead of once per token (per token, 2 x heads x hidden
    multiply-adds instead of 2 x hidden^2). ``absorb_query=False`` projects every token's key and
    value, as the layer itself does. Both equal the full layer's position 0 up to float rounding,
    gradients included; dropout acts as in the full layer in training mode.
    """
    sa = layer.attention.self
    n, length, width = hidden.shape
    heads, size = sa.num_attention_heads, sa.attention_head_size
    scale = getattr(sa, "scaling", size**-0.5)
    dropout = sa.dropout.p if sa.training else 0.0
    q = sa.query(hidden[:, :1]).view(n, 1, heads, size).transpose(1, 2)  # (N, heads, 1, size)
    keep = attention[:, None, None, :].bool()
    if absorb_query:
        w_key = sa.key.weight.view(heads, size, width)
        q_in = torch.einsum("nhd,hdw->nhw", q[:, :, 0], w_key)  # (N, heads, hidden)
        # q . b_k is one constant per head and string: softmax ignores it, but it keeps the key
        # bias in the graph (a zero gradient, as in the full layer) so the optimiser treats it alike
        key_bias = (q[:, :, 0] * sa.key.bias.view(heads, size)).sum(-1)
        scores = (q_in @ hidden.transpose(1, 2) + key_bias[..., None]) * scale  # (N, heads, L)
        probs = scores.masked_fill(~keep[:, :, 0], float("-inf")).softmax(-1)
        probs = torch.nn.functional.dropout(probs, dropout, training=dropout > 0)
        mixed = probs @ hidden  # (N, heads, hidden): each head's weighted sum of the tokens
        w_value = sa.value.weight.view(heads, size, width)
        ctx = torch.einsum("nhw,hdw->nhd", mixed, w_value)
        ctx = ctx + sa.value.bias.view(heads, size) * probs.sum(-1, keepdim=True)
    else:
        k = sa.key(hidden).view(n, length, heads, size).transpose(1, 2)
        v = sa.value(hidden).view(n, length, heads, size).transpose(1, 2)
        ctx = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=keep, dropout_p=dropout, scale=scale
        )[:, :, 0]
    ctx = ctx.reshape(n, 1, heads * size)
    att = layer.attention.output(ctx, hidden[:, :1])
    return layer.output(layer.intermediate(att), att)


def _layer_out(out: torch.Tensor | tuple) -> torch.Tensor:
    """A transformer layer's hidden states (transformers 5 returns a tensor, 4.x a tuple)."""
    return out[0] if isinstance(out, tuple) else out


def _attention_mask(model: nn.Module, embeds: torch.Tensor, attention: torch.Tensor):
    """The attention mask the model's own forward would pass to its layers."""
    return create_bidirectional_mask(
        config=model.config, inputs_embeds=embeds, attention_mask=attention
    )


def attach_prefix_cache(
    encoder: TextEncoder, max_strings: int = 20_000, shared: bool = True
) -> PrefixCache:
    """Route ``encoder.encode_uncached`` through a new :class:`PrefixCache` (returned).

    Idempotent: an encoder that already has one keeps it.
    """
    existing = getattr(encoder, "prefix_cache", None)
    if isinstance(existing, PrefixCache):
        return existing
    cache = PrefixCache(encoder, max_strings=max_strings, shared=shared)
    encoder.prefix_cache = cache
    encoder.encode_uncached = cache.encode
    return cache
