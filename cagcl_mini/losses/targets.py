"""Who is a positive for whom: the target matrices of the contrastive losses.

A contrastive loss compares every visual embedding with every text embedding of a batch and
needs to know which pairs should score high. Treating only the pair itself as positive (CLIP)
punishes the model for matching two normal lungs described in different words, or two reports
that say the exact same sentence. fVLM's false-negative rule therefore makes a pair (i, j) of the
same anatomy k a positive when

    i == j  or  (both normal)  or  (their descriptions are the identical string),

and cross-anatomy pairs are never positives. The losses row-normalise these 0/1 weights into target
distributions ``q_ij = P_ij / sum_j P_ij``. Soft targets (SCALE-VLP style) replace the 0/1 weights
by the similarity of the two samples' abnormality label sets.

Everything here is pure tensor code, used by :mod:`cagcl_mini.losses.terms` and by notebook 02's heat maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cagcl_mini.anatomy import ABNORMALITY_BY_NAME, ALL_LABELS, ANATOMY_ID

Texts = Sequence[Sequence[str]]  # B lists of K strings ("" where absent)


def text_ids(
    texts: Texts, batch_size: int, num_anatomies: int, device: torch.device | None = None
) -> Tensor:
    """(B, K) long ids of the descriptions: two ids are equal iff the two strings are equal.

    Comparing integers replaces a (B*K)^2 string comparison; the dictionary pass is the only
    Python loop, over strings, not over pairs.
    """
    if len(texts) != batch_size or any(len(row) != num_anatomies for row in texts):
        got = f"{len(texts)} rows of lengths {sorted({len(r) for r in texts})}"
        raise ValueError(
            f"texts: expected {batch_size} lists of {num_anatomies} strings (B, K), got {got}"
        )
    vocab: dict[str, int] = {}
    flat = []
    for row in texts:
        for s in row:
            if not isinstance(s, str):
                raise TypeError(f"texts: expected strings, got {type(s).__name__} {s!r}")
            flat.append(vocab.setdefault(s, len(vocab)))
    return torch.tensor(flat, dtype=torch.long, device=device).reshape(batch_size, num_anatomies)


def pair_weights(present: Tensor, abnormal: Tensor | None, texts: Texts | None = None) -> Tensor:
    """(K, B, B) bool positives of the same-anatomy rule, unnormalised.

    ``P[k, i, j] = present[i,k] & present[j,k] & (i == j | (~abnormal[i,k] & ~abnormal[j,k])
    | texts[i][k] == texts[j][k])``. ``abnormal=None`` drops the normal/normal clause and
    ``texts=None`` the identical-text clause (then P is the identity on present samples: CLIP).
    """
    present = present.bool()
    batch, k = present.shape
    p = present.T  # (K, B)
    pos = torch.eye(batch, dtype=torch.bool, device=present.device).expand(k, batch, batch)
    if abnormal is not None:
        normal = ~abnormal.bool().T
        pos = pos | (normal[:, :, None] & normal[:, None, :])
    if texts is not None:
        ids = text_ids(texts, batch, k, present.device).T
        pos = pos | (ids[:, :, None] == ids[:, None, :])
    return pos & p[:, :, None] & p[:, None, :]


def token_pair_weights(
    anatomy_index: Tensor, abnormal: Tensor | None = None, text_index: Tensor | None = None
) -> Tensor:
    """(N, N) bool positives between N (sample, anatomy) tokens of the global loss.

    ``P[a, b] = (anatomy[a] == anatomy[b]) & (a == b | both normal | same text id)``: the
    same-anatomy rule, and never a positive across anatomies.
    """
    n = anatomy_index.shape[0]
    same = anatomy_index[:, None] == anatomy_index[None, :]
    pos = torch.eye(n, dtype=torch.bool, device=anatomy_index.device)
    if abnormal is not None:
        normal = ~abnormal.bool()
        pos = pos | (normal[:, None] & normal[None, :])
    if text_index is not None:
        pos = pos | (text_index[:, None] == text_index[None, :])
    return pos & same


def row_normalise(weights: Tensor) -> Tensor:
    """Divide each row by its sum so it is a target distribution; all-zero rows stay zero."""
    w = weights.float() if not weights.is_floating_point() else weights
    return w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


def local_targets(
    abnormal_k: Sequence[bool] | Tensor, texts_k: Sequence[str] | None = None
) -> Tensor:
    """(n, n) row-normalised targets of the local loss for the n samples having one anatomy.

    ``abnormal_k`` (n,) flags the abnormal samples; ``texts_k`` their n descriptions (or None).
    """
    ab = torch.as_tensor(abnormal_k, dtype=torch.bool).reshape(-1)
    n = ab.shape[0]
    texts = None if texts_k is None else [[s] for s in texts_k]
    w = pair_weights(torch.ones(n, 1, dtype=torch.bool), ab[:, None], texts)[0]
    return row_normalise(w)


def global_targets(
    anatomy_index: Sequence[int] | Tensor,
    abnormal: Sequence[bool] | Tensor | None,
    texts: Sequence[str] | None = None,
) -> Tensor:
    """(N, N) row-normalised targets of the global cross-anatomy loss over N tokens.

    Token a has anatomy ``anatomy_index[a]``, flag ``abnormal[a]`` and description ``texts[a]``.
    """
    anat = torch.as_tensor(anatomy_index, dtype=torch.long).reshape(-1)
    ab = None if abnormal is None else torch.as_tensor(abnormal, dtype=torch.bool).reshape(-1)
    tid = None
    if texts is not None:
        if len(texts) != anat.shape[0]:
            raise ValueError(f"texts: expected {anat.shape[0]} strings, got {len(texts)}")
        tid = text_ids([list(texts)], 1, len(texts))[0]
    return row_normalise(token_pair_weights(anat, ab, tid))


def present_tokens(present: Tensor) -> tuple[Tensor, Tensor]:
    """(sample_index, anatomy_index) of the present (i, k) tokens, row-major, each (N,)."""
    sample, anat = present.bool().nonzero(as_tuple=True)
    return sample, anat


def same_anatomy_weights(
    present: Tensor,
    abnormal: Tensor | None,
    texts: Texts | None = None,
    targets: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(K, B, B) float, unnormalised pair weights of the local losses.

    The 0/1 rule of :func:`pair_weights`, or, when ``targets`` (K, B, B) is given (soft targets),
    those weights clipped at 0, zeroed where either sample lacks the anatomy, and with the
    diagonal of present samples raised to 1 (the pair itself is always a positive).
    """
    present = present.bool()
    if targets is None:
        return pair_weights(present, abnormal, texts).to(dtype)
    batch, k = present.shape
    if tuple(targets.shape) != (k, batch, batch):
        raise ValueError(
            f"targets: expected (K, B, B) = {(k, batch, batch)}, got {tuple(targets.shape)}"
        )
    p = present.T
    valid = p[:, :, None] & p[:, None, :]
    w = targets.to(present.device, dtype).clamp_min(0.0) * valid
    return torch.maximum(w, pair_weights(present, None, None).to(dtype))


def token_weights(
    sample: Tensor,
    anat: Tensor,
    present: Tensor,
    abnormal: Tensor | None,
    texts: Texts | None = None,
    targets: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(N, N) float, unnormalised weights between the present tokens (``sample``, ``anat``).

    Same rule (or same ``targets``) as :func:`same_anatomy_weights`, zero across anatomies.
    """
    if targets is None:
        ab = None if abnormal is None else abnormal.bool()[sample, anat]
        tid = None
        if texts is not None:
            tid = text_ids(texts, *present.shape, device=present.device)[sample, anat]
        return token_pair_weights(anat, ab, tid).to(dtype)
    w = same_anatomy_weights(present, abnormal, texts, targets, dtype)
    same = anat[:, None] == anat[None, :]
    return w[anat[:, None], sample[:, None], sample[None, :]] * same


def catalog_label_anatomy() -> Tensor:
    """(A,) long: the anatomy index 0..K-1 of each column of ``ALL_LABELS``, from the catalog."""
    return torch.tensor(
        [ANATOMY_ID[ABNORMALITY_BY_NAME[name].anatomy] - 1 for name in ALL_LABELS],
        dtype=torch.long,
    )


def soft_targets_from_labels(
    labels: Tensor,
    label_anatomy: Tensor | None = None,
    num_anatomies: int | None = None,
    threshold: float = 0.5,
) -> Tensor:
    """(K, B, B) SCALE-VLP-style soft pair weights: Jaccard similarity of per-anatomy label sets.

    With ``S_i^k`` the set of abnormality labels of sample i that belong to anatomy k
    (``labels[i, a] > threshold`` and ``label_anatomy[a] == k``):

        W[k, i, j] = |S_i^k ∩ S_j^k| / |S_i^k ∪ S_j^k|,   and 1 when both sets are empty.

    The diagonal is 1 and two normal samples weigh 1, so the hard false-negative rule is the
    special case "W == 1"; partially overlapping findings give partial credit. Pass the result as
    ``targets=`` to the local / global / sigmoid losses (they row-normalise it, mask absent
    anatomies, and keep the diagonal at 1). ``label_anatomy`` defaults to the catalog's mapping
    of ``ALL_LABELS`` columns; ``num_anatomies`` to ``label_anatomy.max() + 1``.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels: expected (B, A), got shape {tuple(labels.shape)}")
    if label_anatomy is None:
        label_anatomy = catalog_label_anatomy()
    label_anatomy = label_anatomy.to(labels.device, torch.long)
    if label_anatomy.shape != (labels.shape[1],):
        raise ValueError(
            f"label_anatomy: expected ({labels.shape[1]},) to match labels (B, A), "
            f"got {tuple(label_anatomy.shape)}"
        )
    k = int(label_anatomy.max()) + 1 if num_anatomies is None else num_anatomies
    hits = (labels > threshold).float()  # (B, A)
    onehot = F.one_hot(label_anatomy, k).float()  # (A, K)
    inter = torch.einsum("ia,ja,ak->kij", hits, hits, onehot)
    count = (hits @ onehot).T  # (K, B)
    union = count[:, :, None] + count[:, None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(inter))
