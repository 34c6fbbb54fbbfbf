"""The pretraining objectives: local (fVLM), global cross-anatomy (CA-GCL), anatomy and diagnosis
(CT-GLIP), the sigmoid (SigLIP) forms of local and global, and prompt-based disease supervision.

Shared notation (every function below):

- ``v, t``: (B, K, E) L2-normalised visual / text embeddings, ``v_i^k`` = anatomy k of sample i.
  The functions do not re-normalise them. Under DDP, all-gather before calling: B is any size.
- ``present`` (B, K) bool: anatomy k is in volume i; absent tokens never enter a loss.
- ``abnormal`` (B, K) bool: anatomy k of sample i has a finding (None: no normal/normal rule).
- ``texts``: B lists of K description strings (optional), for the identical-text rule.
- ``logit_scale``: log of the inverse temperature, a learnable tensor or a float (CLIP-style);
  the scale is ``s = min(exp(logit_scale), 100)``.
- ``c_ij^k = <v_i^k, t_j^k>`` cosine similarity; ``P`` the positives of
  :mod:`cagcl_mini.losses.targets` (the pair itself, both normal, or identical text; same anatomy
  only); ``q_ij = P_ij / sum_j P_ij`` the row-normalised targets.
- ``targets`` (K, B, B) nonnegative weights (e.g. ``soft_targets_from_labels``) replace the 0/1
  ``P`` of same-anatomy pairs; the diagonal is kept at 1 and absent pairs at 0.

Each loss returns a scalar. When nothing qualifies (say no anatomy is in two samples) it returns an
exact 0 that is still connected to the inputs' graph, never NaN. Logits are computed in at least
float32, so bf16 autocast does not change the softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from cagcl_mini.losses.targets import (
    Texts,
    present_tokens,
    same_anatomy_weights,
    text_ids,
    token_weights,
)

MAX_LOGIT_SCALE = 100.0
CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
SIGLIP_INIT_LOGIT_SCALE = math.log(10.0)  # SigLIP's initialisation t' = log 10
SIGLIP_INIT_LOGIT_BIAS = -10.0  # SigLIP's initialisation b = -10
_NEG = -1e9  # logit of a masked candidate: exp(_NEG - logsumexp) == 0, and stays finite


def logit_scale_value(logit_scale: Tensor | float, like: Tensor) -> Tensor:
    """``s = min(exp(logit_scale), 100)`` as a tensor on ``like``'s device (gradient kept)."""
    if isinstance(logit_scale, Tensor):
        return logit_scale.to(like.device).exp().clamp(max=MAX_LOGIT_SCALE)
    value = min(math.exp(float(logit_scale)), MAX_LOGIT_SCALE)
    return torch.tensor(value, dtype=_dtype(like), device=like.device)


def _dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _zero(*tensors: object) -> Tensor:
    """An exact 0 connected to every tensor input, so backward() and DDP see the parameters."""
    parts = [x.sum() * 0.0 for x in tensors if isinstance(x, Tensor) and x.is_floating_point()]
    return sum(parts[1:], parts[0]) if parts else torch.zeros(())


def _check(
    v: Tensor, t: Tensor | None, present: Tensor, abnormal: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Validate the shapes; return the masks as bool tensors on ``v``'s device."""
    if v.ndim != 3:
        raise ValueError(f"v: expected (B, K, E) embeddings, got shape {tuple(v.shape)}")
    if t is not None and t.shape != v.shape:
        raise ValueError(f"t: expected the shape of v {tuple(v.shape)}, got {tuple(t.shape)}")
    for name, mask in (("present", present), ("abnormal", abnormal)):
        if mask is not None and tuple(mask.shape) != tuple(v.shape[:2]):
            raise ValueError(
                f"{name}: expected a (B, K) = {tuple(v.shape[:2])} mask, got {tuple(mask.shape)}"
            )
    present = present.to(v.device, torch.bool)
    return present, None if abnormal is None else abnormal.to(v.device, torch.bool)


def _soft_cross_entropy(logits: Tensor, weights: Tensor, valid: Tensor, dim: int) -> Tensor:
    """``-sum_j q_j log softmax_j(logits)`` along ``dim``, softmax over ``valid`` entries only.

    ``q`` is ``weights`` normalised along ``dim``. Rows without valid entries give 0 (finite).
    """
    logp = torch.log_softmax(logits.masked_fill(~valid, _NEG), dim=dim)
    q = weights / weights.sum(dim, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    return -(q * logp).sum(dim)


def local_alignment_loss(
    v: Tensor,
    t: Tensor,
    present: Tensor,
    abnormal: Tensor | None,
    logit_scale: Tensor | float,
    texts: Texts | None = None,
    *,
    targets: Tensor | None = None,
) -> Tensor:
    """fVLM local alignment: per-anatomy InfoNCE with false-negative targets, both directions.

    For each anatomy k, over the n_k samples S_k that have it (logits ``s * c_ij^k``)::

        L_k^{v->t} = 1/n_k sum_{i in S_k} -sum_{j in S_k} q_ij log softmax_j(s c_ij^k)
        L_k^{t->v} = 1/n_k sum_{j in S_k} -sum_{i in S_k} q'_ji log softmax_i(s c_ij^k)
        L = mean over {k : n_k >= 2} of (L_k^{v->t} + L_k^{t->v}) / 2

    ``q`` row-normalises P^k, ``q'`` row-normalises its transpose (equal for the symmetric 0/1
    rule). With P = identity (every sample abnormal, distinct texts) each L_k is the CLIP loss.
    Returns a graph-connected 0 when no anatomy is present in two samples.
    """
    present, abnormal = _check(v, t, present, abnormal)
    dt = _dtype(v)
    p = present.T  # (K, B)
    n = p.sum(1)
    use = n >= 2
    if not bool(use.any()):
        return _zero(v, t, logit_scale)
    scale = logit_scale_value(logit_scale, v)
    logits = scale * torch.einsum("ike,jke->kij", v.to(dt), t.to(dt))  # (K, B, B)
    valid = p[:, :, None] & p[:, None, :]
    w = same_anatomy_weights(present, abnormal, texts, targets, dt)
    v2t = _soft_cross_entropy(logits, w, valid, dim=-1)  # (K, B) per visual anchor i
    t2v = _soft_cross_entropy(logits, w, valid, dim=-2)  # (K, B) per text anchor j
    per_anatomy = 0.5 * ((v2t * p).sum(1) + (t2v * p).sum(1)) / n.clamp_min(1)
    return per_anatomy[use].mean()


def global_cross_anatomy_loss(
    v: Tensor,
    t: Tensor,
    present: Tensor,
    abnormal: Tensor | None,
    logit_scale: Tensor | float,
    texts: Texts | None = None,
    *,
    targets: Tensor | None = None,
) -> Tensor:
    """CA-GCL global cross-anatomy InfoNCE: one softmax over all N present tokens of the batch.

    Tokens a = (i, k) with ``present[i, k]``; logits ``s * <v_a, t_b>`` for all a, b::

        L = 1/2 [ 1/N sum_a -sum_b q_ab log softmax_b(s <v_a, t_b>)
                + 1/N sum_b -sum_a q'_ba log softmax_a(s <v_a, t_b>) ]

    ``P_ab = [k_a == k_b] * (a == b | both normal | same text)``: the texts of every other anatomy
    are negatives (this is what pushes anatomies apart in text space), the same-anatomy
    false-negative rule of the local loss holds. Returns a graph-connected 0 when N < 2.
    """
    present, abnormal = _check(v, t, present, abnormal)
    sample, anat = present_tokens(present)
    if sample.numel() < 2:
        return _zero(v, t, logit_scale)
    dt = _dtype(v)
    scale = logit_scale_value(logit_scale, v)
    logits = scale * (v[sample, anat].to(dt) @ t[sample, anat].to(dt).T)  # (N, N)
    w = token_weights(sample, anat, present, abnormal, texts, targets, dt)
    valid = torch.ones_like(w, dtype=torch.bool)
    v2t = _soft_cross_entropy(logits, w, valid, dim=-1).mean()
    t2v = _soft_cross_entropy(logits, w, valid, dim=-2).mean()
    return 0.5 * (v2t + t2v)


def anatomy_contrastive_loss(
    v: Tensor, present: Tensor, anatomy_text: Tensor, logit_scale: Tensor | float
) -> Tensor:
    """CT-GLIP anatomy contrast: each present v_i^k against the K anatomy prompt embeddings.

    With ``a_m`` (K, E) the normalised embeddings of "This is the {anatomy} in the CT scan."::

        L = 1/N sum_{(i,k) present} -log softmax_m(s <v_i^k, a_m>)[m = k]

    (cross-entropy over the K anatomies, target k). Graph-connected 0 when nothing is present.
    """
    present, _ = _check(v, None, present, None)
    if anatomy_text.shape != (v.shape[1], v.shape[2]):
        raise ValueError(
            f"anatomy_text: expected (K, E) = {tuple(v.shape[1:])}, got {tuple(anatomy_text.shape)}"
        )
    sample, anat = present_tokens(present)
    if sample.numel() == 0:
        return _zero(v, anatomy_text, logit_scale)
    dt = _dtype(v)
    logits = logit_scale_value(logit_scale, v) * (v[sample, anat].to(dt) @ anatomy_text.to(dt).T)
    return F.cross_entropy(logits, anat)


def disease_supervision_loss(
    v: Tensor,
    present: Tensor,
    disease_text: Tensor,
    disease_anatomy: Tensor,
    labels: Tensor,
    logit_scale: Tensor | float,
) -> Tensor:
    """Prompt-based disease supervision (arXiv 2603.02026): the model's own zero-shot score
    against the labels.

    ``disease_text`` (2A, E) holds the normalised (negative, positive) prompt embeddings of A
    abnormalities, interleaved; ``disease_anatomy`` (A,) the anatomy index of each; ``labels``
    (B, A) their 0/1 labels. With ``c`` the cosines of ``v_i^k`` (k the abnormality's anatomy)
    to the two prompts, the zero-shot score is ``sigmoid(s (c_pos - c_neg))`` and::

        L = 1/N sum_{(i,a): present[i, k(a)]} BCE(sigmoid(s (c_pos - c_neg)), y_ia)

    Graph-connected 0 when no abnormality's anatomy is present.
    """
    present, _ = _check(v, None, present, None)
    a = disease_anatomy.shape[0]
    if disease_text.shape != (2 * a, v.shape[2]):
        raise ValueError(
            f"disease_text: expected (2A, E) = {(2 * a, v.shape[2])} interleaved (negative, "
            f"positive) prompts, got {tuple(disease_text.shape)}"
        )
    if tuple(labels.shape) != (v.shape[0], a):
        raise ValueError(f"labels: expected (B, A) = {(v.shape[0], a)}, got {tuple(labels.shape)}")
    anat = disease_anatomy.to(v.device, torch.long)
    valid = present[:, anat]
    if not bool(valid.any()):
        return _zero(v, disease_text, logit_scale)
    dt = _dtype(v)
    prompts = disease_text.to(dt)
    margin = prompts[1::2] - prompts[0::2]  # (A, E): c_pos - c_neg = <v, t_pos - t_neg>
    logits = logit_scale_value(logit_scale, v) * (v[:, anat].to(dt) * margin).sum(-1)
    target = labels.to(v.device, dt)
    return F.binary_cross_entropy_with_logits(logits[valid], target[valid])


def diagnosis_contrastive_loss(
    v: Tensor,
    t: Tensor,
    present: Tensor,
    logit_scale: Tensor | float,
    dictionary: Tensor | None = None,
    dictionary_anatomy: Tensor | None = None,
    exclude: Tensor | None = None,
    *,
    abnormal: Tensor | None = None,
    texts: Texts | None = None,
) -> Tensor:
    """CT-GLIP diagnosis contrast: v_i^k against its own description, with hard negatives.

    Candidates of token (i, k): its own description t_i^k (the target), the batch's other
    descriptions of anatomy k ``{t_j^k : present[j,k], j != i}`` and the dictionary sentences of
    anatomy k ``{d_m : dictionary_anatomy[m] == k, not exclude[i,k,m]}``::

        L = 1/N' sum_{(i,k)} -log [ exp(s <v_i^k, t_i^k>) / sum_{c in C_ik} exp(s <v_i^k, c>) ]

    ``dictionary`` (M, E) holds normalised embeddings of abnormal sentences, ``dictionary_anatomy``
    (M,) their anatomy index 0..K-1, ``exclude`` (B, K, M) bool the sentences that match the
    sample's own findings (never negatives). If ``abnormal`` / ``texts`` are given, batch
    descriptions that are false negatives by the local rule (both normal, identical text) are
    removed from C_ik. The mean runs over the N' tokens with at least one negative; graph-connected
    0 when there is none.
    """
    present, abnormal = _check(v, t, present, abnormal)
    batch, k, e = v.shape
    sample, anat = present_tokens(present)
    dt = _dtype(v)
    vt = v[sample, anat].to(dt)  # (N, E)
    per_anatomy = torch.einsum("ike,jke->kij", v.to(dt), t.to(dt))  # (K, B, B)
    logits = per_anatomy[anat, sample]  # (N, B): <v_i^k, t_j^k>
    own = torch.arange(batch, device=v.device)[None, :] == sample[:, None]
    false_neg = torch.zeros_like(own)
    if abnormal is not None:
        normal = ~abnormal
        false_neg |= normal[sample, anat][:, None] & normal[:, anat].T
    if texts is not None:
        ids = text_ids(texts, batch, k, device=v.device)
        false_neg |= ids[sample, anat][:, None] == ids[:, anat].T
    valid = present[:, anat].T & (own | ~false_neg)
    if dictionary is not None and dictionary.shape[0] > 0:
        m = dictionary.shape[0]
        if dictionary.shape != (m, e):
            raise ValueError(f"dictionary: expected (M, E={e}), got {tuple(dictionary.shape)}")
        if dictionary_anatomy is None or tuple(dictionary_anatomy.shape) != (m,):
            got = None if dictionary_anatomy is None else tuple(dictionary_anatomy.shape)
            raise ValueError(f"dictionary_anatomy: expected ({m},) anatomy indices, got {got}")
        valid_d = dictionary_anatomy.to(v.device)[None, :] == anat[:, None]
        if exclude is not None:
            if tuple(exclude.shape) != (batch, k, m):
                raise ValueError(
                    f"exclude: expected (B, K, M) = {(batch, k, m)}, got {tuple(exclude.shape)}"
                )
            valid_d &= ~exclude.to(v.device, torch.bool)[sample, anat]
        logits = torch.cat([logits, vt @ dictionary.to(dt).T], dim=1)
        valid = torch.cat([valid, valid_d], dim=1)
    use = valid.sum(1) >= 2  # the target and at least one negative
    if not bool(use.any()):
        return _zero(v, t, dictionary, logit_scale)
    logits = logit_scale_value(logit_scale, v) * logits
    logp = torch.log_softmax(logits.masked_fill(~valid, _NEG), dim=1)
    return -logp[torch.arange(sample.numel(), device=v.device), sample][use].mean()


def _as_tensor(x: Tensor | float, like: Tensor) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(like.device)
    return torch.tensor(float(x), dtype=_dtype(like), device=like.device)


def sigmoid_local_loss(
    v: Tensor,
    t: Tensor,
    present: Tensor,
    abnormal: Tensor | None,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float = SIGLIP_INIT_LOGIT_BIAS,
    texts: Texts | None = None,
    *,
    targets: Tensor | None = None,
) -> Tensor:
    """SigLIP form of the local loss: independent binary decisions per same-anatomy pair.

    With ``x_ij^k = s c_ij^k + b`` (b = ``logit_bias``, learnable) and ``z_ij = +1`` for the
    positives P of the local rule, ``-1`` otherwise::

        L_k = 1/n_k^2 sum_{i,j in S_k} -log sigmoid(z_ij x_ij^k),   L = mean_{k: n_k >= 2} L_k

    Normalisation: SigLIP sums over all pairs and divides by the batch size, i.e. its loss is
    n_k times ours; we take the mean over pairs so the value does not grow with the batch (rescale
    the weight if you want SigLIP's). With soft ``targets`` y in [0, 1] the pair term is
    ``BCE(x, y) = -y log sigmoid(x) - (1-y) log sigmoid(-x)``, which is the formula above for y = 0/1.
    """
    present, abnormal = _check(v, t, present, abnormal)
    dt = _dtype(v)
    p = present.T
    n = p.sum(1)
    use = n >= 2
    if not bool(use.any()):
        return _zero(v, t, logit_scale, logit_bias)
    x = logit_scale_value(logit_scale, v) * torch.einsum("ike,jke->kij", v.to(dt), t.to(dt))
    x = x + _as_tensor(logit_bias, v)
    y = same_anatomy_weights(present, abnormal, texts, targets, dt).clamp(max=1.0)
    valid = p[:, :, None] & p[:, None, :]
    pair = F.binary_cross_entropy_with_logits(x, y, reduction="none") * valid
    per_anatomy = pair.sum((1, 2)) / (n * n).clamp_min(1)
    return per_anatomy[use].mean()


def sigmoid_global_loss(
    v: Tensor,
    t: Tensor,
    present: Tensor,
    abnormal: Tensor | None,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float = SIGLIP_INIT_LOGIT_BIAS,
    texts: Texts | None = None,
    *,
    targets: Tensor | None = None,
) -> Tensor:
    """SigLIP form of the global loss over all N present tokens (cross-anatomy pairs: z = -1)::

        L = 1/N^2 sum_{a,b} -log sigmoid(z_ab (s <v_a, t_b> + b)),   z_ab = +1 iff P_ab

    (SigLIP's normalisation would be N times this, see :func:`sigmoid_local_loss`).
    Graph-connected 0 when N < 2.
    """
    present, abnormal = _check(v, t, present, abnormal)
    sample, anat = present_tokens(present)
    if sample.numel() < 2:
        return _zero(v, t, logit_scale, logit_bias)
    dt = _dtype(v)
    x = logit_scale_value(logit_scale, v) * (v[sample, anat].to(dt) @ t[sample, anat].to(dt).T)
    x = x + _as_tensor(logit_bias, v)
    y = token_weights(sample, anat, present, abnormal, texts, targets, dt).clamp(max=1.0)
    return F.binary_cross_entropy_with_logits(x, y)


def snippet_localisation_loss(position: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error between predicted and cited axial positions (fractions of the axis),
    over the P cited snippets of a batch; an exact 0 tied to ``position`` when P is 0.

    The optional localisation term of pretraining (arXiv 2603.02026 mines such pairs from the
    slice citations of reports): the image tower learns per-slice features that a text query can
    find a finding in.
    """
    if position.shape != target.shape or position.dim() != 1:
        raise ValueError(
            f"snippet_position and snippet_target must be (P,) alike, got "
            f"{tuple(position.shape)} and {tuple(target.shape)}"
        )
    if not position.numel():
        return _zero(position)
    dtype = _dtype(position)
    return (position.to(dtype) - target.to(position.device, dtype)).abs().mean()
