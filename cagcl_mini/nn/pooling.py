"""Anatomy mask pooling: one feature vector per (sample, anatomy) from a 3D feature map.

A vision encoder turns a CT volume ``(B,1,H,W,D)`` into a coarser feature map ``(B,C,h,w,d)``; the
anatomy map ``(B,H,W,D)`` (0 background, 1..K the catalog's anatomies) lives at the input
resolution. Pooling happens in two steps:

1. **Masks to feature resolution** (:func:`masks_to_feature_resolution`): each feature voxel sees a
   block of input voxels; its weight for anatomy k is the *fraction of that block covered by k*
   (average pooling of the one-hot mask, exactly what ``adaptive_avg_pool3d`` computes). We count
   labels with one ``bincount`` over ``feature_voxel * (K+1) + label`` instead of building the
   ``(B,K+1,H,W,D)`` float one-hot (``K+1`` times the volume's memory). Soft coverage beats
   nearest-neighbour downsampling for small organs: nearest keeps one input voxel per block, so an
   organ thinner than the stride (oesophagus, a trachea at 4x) can vanish or jump by half a block,
   while coverage keeps every voxel's vote, gives partial-volume voxels a proportional weight,
   and sums to the organ's true volume (in feature voxels).
2. **Pooling** (:func:`mean_mask_pool`): the coverage-weighted mean of the feature vectors,
   ``pooled[b,k] = sum_n w[b,k,n] f[b,:,n] / sum_n w[b,k,n]``, for all samples and anatomies at once.
   Two exact implementations of that one formula:

   * ``"dense"``: ``einsum('bkn,bcn->bkc')`` as one batched matmul (``torch.bmm``). Simple, but K
     multiply-adds per feature element, so its time grows with K.
   * ``"sparse"``: each feature voxel belongs to one anatomy (two or three on boundaries), so the
     ``(B*K, B*N)`` block-diagonal weight matrix is almost empty. Its rows are weighted bags of
     token indices, and ``F.embedding_bag(mode="sum", per_sample_weights=...)`` over the
     ``(B*N, C)`` channels-last tokens is exactly that sparse-dense product: ``O(nnz * C)``, one
     pass over the covered feature voxels whatever K, in PyTorch's tuned lookup kernels (faster
     on CPU than ``torch.sparse.mm`` with a CSR matrix, which we used first; README figures).

   ``"auto"`` (the default) picks ``"sparse"`` when the features are ``channels_last_3d`` in
   memory (the tokens are then a free view) and ``"dense"`` otherwise: transposing a
   channel-first map costs more than the whole matmul (``cagcl-mini bench pooling`` reports
   both layouts). An encoder run in ``channels_last_3d`` gets the fast path for free. Both
   methods are exact, differentiable with respect to the features, and equal a per-anatomy
   boolean-mask loop (tests/nn/test_pooling.py).

An anatomy with no coverage in a sample is reported absent (``present`` False) and pooled to zeros:
no NaN, and finite gradients. :class:`AttentionMaskPool` is the fVLM-style learned alternative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_METHODS = ("auto", "dense", "sparse")


def _check_labels(anatomy: Tensor, num_anatomies: int) -> None:
    if anatomy.dim() != 4 or anatomy.dtype.is_floating_point or anatomy.dtype == torch.bool:
        raise ValueError(
            f"anatomy must be an integer label map (B,H,W,D), got {anatomy.dtype} {tuple(anatomy.shape)}"
        )
    if anatomy.numel():
        low, high = (int(v) for v in torch.aminmax(anatomy))
        if low < 0 or high > num_anatomies:
            raise ValueError(
                f"anatomy labels must lie in 0..{num_anatomies} (0 background), got {low}..{high}"
            )


def _axis_cells(n_in: int, n_out: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """For one axis: the output cells each input index falls in (-1 padded), and cell sizes.

    Cells follow ``adaptive_avg_pool3d``: cell i spans ``[floor(i*n_in/n_out), ceil((i+1)*n_in/n_out))``,
    so when ``n_out`` does not divide ``n_in`` neighbouring cells overlap by one voxel.
    """
    i = torch.arange(n_out, device=device)
    start = (i * n_in) // n_out
    end = ((i + 1) * n_in + n_out - 1) // n_out
    x = torch.arange(n_in, device=device)[:, None]
    member = (x >= start) & (x < end)
    cells = torch.where(member, i, n_out).sort(dim=1).values
    cells = cells[:, : int(member.sum(1).max())]
    return cells.masked_fill(cells == n_out, -1), end - start


def masks_to_feature_resolution(
    anatomy: Tensor,
    feature_shape: tuple[int, int, int],
    num_anatomies: int,
    *,
    include_background: bool = False,
    method: str = "count",
) -> Tensor:
    """Fraction of each feature voxel covered by each anatomy: ``(B,K,h,w,d)`` float32.

    ``anatomy`` is the ``(B,H,W,D)`` label map. ``include_background`` prepends channel 0
    (background), so the ``K+1`` channels sum to 1 in every feature voxel. ``method="count"``
    bincounts labels per feature voxel (no one-hot); ``"onehot"`` is the textbook
    ``adaptive_avg_pool3d(one_hot(...))``, kept as the reference. Both give the same numbers.
    """
    _check_labels(anatomy, num_anatomies)
    h, w, d = (int(s) for s in feature_shape)
    if min(h, w, d) < 1:
        raise ValueError(f"feature_shape must be three positive sizes, got {feature_shape}")
    k1 = num_anatomies + 1
    if method == "onehot":
        onehot = F.one_hot(anatomy.long(), k1).permute(0, 4, 1, 2, 3).float()
        out = F.adaptive_avg_pool3d(onehot, (h, w, d))
    elif method == "count":
        out = _coverage_by_counting(anatomy, (h, w, d), k1)
    else:
        raise ValueError(f"method must be 'count' or 'onehot', got {method!r}")
    return (out if include_background else out[:, 1:]).contiguous()


def _coverage_by_counting(labels: Tensor, shape: tuple[int, int, int], k1: int) -> Tensor:
    """``(B,K+1,h,w,d)`` coverage from one ``bincount`` of ``(b*(K+1) + label)*N + feature voxel``."""
    b, n_cells = labels.shape[0], shape[0] * shape[1] * shape[2]
    axes = [_axis_cells(n, m, labels.device) for n, m in zip(labels.shape[1:], shape, strict=True)]
    # int32 indices halve the memory traffic of the one full-size temporary when they fit.
    itype = torch.int32 if b * n_cells * k1 < 2**31 else torch.long
    offset = (torch.arange(b, device=labels.device) * (k1 * n_cells)).view(b, 1, 1, 1).to(itype)
    counts = None
    # One bincount when the factors divide; overlapping cells add one more pass per extra slot.
    for jx in range(axes[0][0].shape[1]):
        for jy in range(axes[1][0].shape[1]):
            for jz in range(axes[2][0].shape[1]):
                sub, picked = labels, []
                for axis, (cells, _), j in zip((1, 2, 3), axes, (jx, jy, jz), strict=True):
                    keep = (cells[:, j] >= 0).nonzero().squeeze(1)
                    if keep.numel() < cells.shape[0]:
                        sub = sub.index_select(axis, keep)
                    picked.append(cells[keep, j])
                cx, cy, cz = picked
                cell = (cx.view(-1, 1, 1) * shape[1] + cy.view(1, -1, 1)) * shape[2]
                idx = sub.to(itype, copy=True)
                idx *= n_cells
                idx += (cell + cz.view(1, 1, -1)).to(itype)
                idx += offset
                found = torch.bincount(idx.reshape(-1), minlength=b * k1 * n_cells)
                counts = found if counts is None else counts.add_(found)
    sizes = [s for _, s in axes]
    volume = sizes[0].view(-1, 1, 1) * sizes[1].view(1, -1, 1) * sizes[2].view(1, 1, -1)
    return counts.view(b, k1, *shape).float().div_(volume)


def downsample_labels(
    anatomy: Tensor, feature_shape: tuple[int, int, int], num_anatomies: int, rule: str = "majority"
) -> Tensor:
    """A hard label map ``(B,h,w,d)`` at feature resolution, for display and comparison.

    ``"majority"``: the label covering most of each feature voxel (background included);
    ``"nearest"``: ``F.interpolate(mode="nearest")``, the naive choice that can lose small organs.
    """
    if rule == "majority":
        return masks_to_feature_resolution(
            anatomy, feature_shape, num_anatomies, include_background=True
        ).argmax(1)
    if rule == "nearest":
        _check_labels(anatomy, num_anatomies)
        return F.interpolate(anatomy[:, None].float(), size=tuple(feature_shape), mode="nearest")[
            :, 0
        ].long()
    raise ValueError(f"rule must be 'majority' or 'nearest', got {rule!r}")


@dataclass
class MaskWeights:
    """Anatomy weights at feature resolution, ready for pooling (compute once, pool many times).

    ``dense`` ``(B,K,N)`` coverage fractions (``N = h*w*d``), ``total`` ``(B,K)`` their sums,
    ``present`` ``(B,K)`` whether an anatomy has any coverage. ``normalized`` divides each row by
    its total (rows of absent anatomies stay 0), so pooling is a single matmul with no division
    and no NaN. ``bags`` is ``normalized`` as the block-diagonal ``(B*K, B*N)`` sparse matrix in
    ``embedding_bag`` form (token indices, row offsets, weights). Both are built on first use.
    """

    dense: Tensor
    total: Tensor
    present: Tensor
    feature_shape: tuple[int, int, int]
    _normalized: Tensor | None = field(default=None, repr=False)
    _bags: tuple[Tensor, Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def normalized(self) -> Tensor:
        if self._normalized is None:
            denom = self.total.clamp_min(torch.finfo(self.dense.dtype).tiny).unsqueeze(-1)
            self._normalized = (self.dense / denom).contiguous()
        return self._normalized

    @property
    def bags(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(indices (nnz,), offsets (B*K,), weights (nnz,))``: row r of the block-diagonal matrix
        is the bag ``indices[offsets[r]:offsets[r+1]]`` of rows of the ``(B*N, C)`` tokens."""
        if self._bags is None:
            b, k, n = self.dense.shape
            flat = self.normalized.reshape(b * k, n)
            rows, cols = flat.nonzero(as_tuple=True)  # row-major: sorted by row
            weights = flat[rows, cols]
            counts = torch.bincount(rows, minlength=b * k)
            offsets = torch.zeros_like(counts)
            offsets[1:] = counts.cumsum(0)[:-1]
            self._bags = (cols + (rows // k) * n, offsets, weights)
        return self._bags


def prepare_weights(
    anatomy: Tensor | MaskWeights,
    feature_shape: tuple[int, int, int],
    num_anatomies: int,
    min_coverage: float = 0.0,
) -> MaskWeights:
    """Weights for pooling a ``feature_shape`` map, from labels ``(B,H,W,D)`` or weights ``(B,K,h,w,d)``.

    Feature voxels whose coverage of an anatomy is below ``min_coverage`` are dropped for that
    anatomy (0 keeps every voxel the anatomy touches). An anatomy left with no weight is absent.
    A :class:`MaskWeights` passes through unchanged (its threshold was applied when it was made).
    """
    if isinstance(anatomy, MaskWeights):
        if tuple(anatomy.feature_shape) != tuple(feature_shape):
            raise ValueError(
                f"weights were prepared for features {anatomy.feature_shape}, got {feature_shape}"
            )
        return anatomy
    shape = tuple(int(s) for s in feature_shape)
    if anatomy.dtype.is_floating_point:
        if (
            anatomy.dim() != 5
            or anatomy.shape[1] != num_anatomies
            or tuple(anatomy.shape[2:]) != shape
        ):
            raise ValueError(
                f"weights must be (B,{num_anatomies},{','.join(map(str, shape))}), "
                f"got {tuple(anatomy.shape)}"
            )
        weights = anatomy
    else:
        weights = masks_to_feature_resolution(anatomy, shape, num_anatomies)
    dense = weights.reshape(weights.shape[0], num_anatomies, -1).float()
    if min_coverage > 0:
        dense = dense.masked_fill(dense < min_coverage, 0.0)
    total = dense.sum(-1)
    return MaskWeights(dense.contiguous(), total, total > 0, shape)  # type: ignore[arg-type]


def _is_channels_last(features: Tensor) -> bool:
    """Whether ``(B,C,h,w,d)`` features sit in memory as ``(B,h,w,d,C)`` (``channels_last_3d``)."""
    return features.permute(0, 2, 3, 4, 1).is_contiguous()


def _channels_last_tokens(features: Tensor) -> Tensor:
    """``(B*N, C)`` tokens; a view when ``features`` is ``channels_last_3d``, else one copy."""
    b, c = features.shape[:2]
    return features.permute(0, 2, 3, 4, 1).reshape(-1, c)


def mean_mask_pool(
    features: Tensor,
    anatomy: Tensor | MaskWeights,
    num_anatomies: int,
    min_coverage: float = 0.0,
    method: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Coverage-weighted mean feature of every anatomy: ``(pooled (B,K,C), present (B,K) bool)``.

    ``features`` is ``(B,C,h,w,d)``; ``anatomy`` a label map ``(B,H,W,D)`` at any resolution, weights
    ``(B,K,h,w,d)``, or :class:`MaskWeights` from :func:`prepare_weights` (the fast path in a loop).
    Absent anatomies pool to zeros. ``method``: ``"auto"``, ``"dense"`` or ``"sparse"`` (module doc).
    """
    if features.dim() != 5:
        raise ValueError(f"features must be (B,C,h,w,d), got {tuple(features.shape)}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    mw = prepare_weights(anatomy, tuple(features.shape[2:]), num_anatomies, min_coverage)
    b, c = features.shape[:2]
    if mw.dense.shape[0] != b:
        raise ValueError(f"features have batch {b} but the anatomy weights {mw.dense.shape[0]}")
    if method == "auto":
        method = "sparse" if _is_channels_last(features) else "dense"
    if method == "dense":  # rows of `normalized` sum to 1 (0 when absent): the matmul is the mean
        weights = mw.normalized.to(features.dtype)
        pooled = torch.bmm(weights, features.reshape(b, c, -1).transpose(1, 2))
    else:
        indices, offsets, weights = mw.bags
        pooled = F.embedding_bag(
            indices,
            _channels_last_tokens(features),
            offsets,
            mode="sum",
            per_sample_weights=weights.to(features.dtype),
        ).view(b, -1, c)
    return pooled, mw.present


class AttentionMaskPool(nn.Module):
    """fVLM-style attention pooling: one learned query per anatomy attends to that anatomy's tokens.

    Keys and values are linear maps of the feature tokens; each anatomy's query sees only the
    tokens it covers. The attention logits get ``log(coverage)`` added, so ``-inf`` outside the
    anatomy, and with equal scores the softmax reproduces the coverage-weighted mean exactly:
    attention pooling is mean pooling with learned, content-dependent re-weighting. With
    ``residual=True`` the mean-pooled vector is added and the output projection starts at zero,
    so training starts from plain mean pooling. Returns ``(pooled (B,K,C), present (B,K))``.
    """

    def __init__(
        self,
        channels: int,
        num_anatomies: int,
        num_heads: int = 4,
        residual: bool = True,
        min_coverage: float = 0.0,
    ) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_anatomies, self.num_heads = num_anatomies, num_heads
        self.residual, self.min_coverage = residual, min_coverage
        self.query = nn.Parameter(torch.randn(num_anatomies, channels) / math.sqrt(channels))
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)
        if residual:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, features: Tensor, anatomy: Tensor | MaskWeights) -> tuple[Tensor, Tensor]:
        """Pool ``features`` ``(B,C,h,w,d)`` over ``anatomy`` (labels, weights or MaskWeights)."""
        b, c = features.shape[:2]
        k, heads = self.num_anatomies, self.num_heads
        mw = prepare_weights(anatomy, tuple(features.shape[2:]), k, self.min_coverage)
        tokens = features.reshape(b, c, -1).transpose(1, 2)  # (B,N,C)
        keys = self.key(tokens).view(b, -1, heads, c // heads).transpose(1, 2)  # (B,h,N,C/h)
        values = self.value(tokens).view(b, -1, heads, c // heads).transpose(1, 2)
        queries = self.query.view(k, heads, c // heads).transpose(0, 1).expand(b, -1, -1, -1)
        # log-coverage bias; rows of absent anatomies get 0 instead of all -inf (which gives NaN).
        weights = mw.dense.to(features.dtype)
        bias = torch.where(mw.present.unsqueeze(-1), weights.log(), torch.zeros_like(weights))
        attended = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=bias.unsqueeze(1)
        )
        pooled = self.out(attended.transpose(1, 2).reshape(b, k, c))
        if self.residual:
            pooled = pooled + mean_mask_pool(features, mw, k)[0]
        return pooled.masked_fill(~mw.present.unsqueeze(-1), 0.0), mw.present
