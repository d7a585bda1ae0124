"""Training objectives of the papers, batched.

- DMC: :func:`dmc_center_similarity`, :func:`dmc_max_margin_loss` (Eq. 8), with :func:`sample_negatives`.
- CAVL: :func:`alignment_score` / :func:`alignment_score_matrix` (Eq. 4), :func:`cavl_contrastive_loss` (Eq. 5) and
  the counting network's :func:`poisson_regression_loss` (Eq. 6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "alignment_score",
    "alignment_score_matrix",
    "cavl_contrastive_loss",
    "dmc_center_similarity",
    "dmc_max_margin_loss",
    "poisson_regression_loss",
    "sample_negatives",
]


def sample_negatives(batch_size: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Tensor:
    """For each item i of a batch, the index of a different, randomly chosen item (never i itself).

    ``neg[i] = (i + r_i) mod B`` with ``r_i`` uniform in ``1..B-1``: one draw per item, no loop, no rejection.

    Returns:
        ``(B,)`` int64 indices.
    """
    if batch_size < 2:
        raise ValueError(f"sample_negatives: batch_size must be >= 2 to have a negative; got {batch_size}")
    gen_device = generator.device if generator is not None else device
    shift = torch.randint(1, batch_size, (batch_size,), generator=generator, device=gen_device)
    idx = (torch.arange(batch_size, device=gen_device) + shift) % batch_size
    return idx.to(device) if device is not None else idx


def dmc_center_similarity(ca: Tensor, cv: Tensor, eps: float = 1e-8) -> Tensor:
    """Cosine proximity ``s(c^a_j, c^v_j)`` of matching audio and visual centers (both in W_j's space).

    Args:
        ca: ``(B, k, m)`` audio centers.
        cv: ``(B, k, m)`` visual centers.

    Returns:
        ``(B, k)`` similarities in ``[-1, 1]``.
    """
    if ca.shape != cv.shape or ca.dim() != 3:
        raise ValueError(f"dmc_center_similarity: ca and cv must both be (B, k, m); got {tuple(ca.shape)} and "
                         f"{tuple(cv.shape)}")
    return F.cosine_similarity(ca, cv, dim=-1, eps=eps)


def dmc_max_margin_loss(ca: Tensor, cv: Tensor, ca_neg: Tensor, margin: float = 1.0) -> Tensor:
    """DMC's max-margin loss (Eq. 8), averaged over the batch.

    For every center j, the true pair must be more similar than a pair with a negative (other scene's) audio by
    at least ``margin``: ``sum_j max(0, s(c^a-_j, c^v_j) - s(c^a_j, c^v_j) + margin)``.

    Args:
        ca: ``(B, k, m)`` audio centers of the true sound.
        cv: ``(B, k, m)`` visual centers.
        ca_neg: ``(B, k, m)`` audio centers of a sound from another scene (e.g. ``ca[sample_negatives(B)]``).
        margin: the margin Delta.

    Returns:
        scalar loss.
    """
    pos = dmc_center_similarity(ca, cv)
    neg = dmc_center_similarity(ca_neg, cv)
    return F.relu(neg - pos + margin).sum(dim=-1).mean()  # Eq. 8


def alignment_score_matrix(ca: Tensor, cv: Tensor) -> Tensor:
    """CAVL's audio-visual score (Eq. 4) for every (sound, image) pair of two batches.

    ``S[a, v] = sum_i min_j ||c^a_i(a) - c^v_j(v)||_2``: each audio center is matched to its nearest visual center.

    Args:
        ca: ``(Ba, ka, C)`` audio centers.
        cv: ``(Bv, kv, C)`` visual centers.

    Returns:
        ``(Ba, Bv)`` scores (low = the sound fits the image).
    """
    if ca.dim() != 3 or cv.dim() != 3 or ca.shape[-1] != cv.shape[-1]:
        raise ValueError(f"alignment_score_matrix: need ca (Ba, ka, C), cv (Bv, kv, C); got {tuple(ca.shape)}, "
                         f"{tuple(cv.shape)}")
    diff = ca[:, None, :, None, :] - cv[None, :, None, :, :]  # (Ba, Bv, ka, kv, C)
    dist = diff.pow(2).sum(-1).clamp_min(1e-12).sqrt()
    return dist.amin(dim=-1).sum(dim=-1)  # Eq. 4


def alignment_score(ca: Tensor, cv: Tensor) -> Tensor:
    """Eq. 4 for matching pairs: ``ca (B, ka, C)`` and ``cv (B, kv, C)`` -> ``(B,)``."""
    if ca.shape[0] != cv.shape[0]:
        raise ValueError(f"alignment_score: batch sizes differ: {ca.shape[0]} vs {cv.shape[0]}")
    diff = ca[:, :, None, :] - cv[:, None, :, :]
    dist = diff.pow(2).sum(-1).clamp_min(1e-12).sqrt()
    return dist.amin(dim=-1).sum(dim=-1)


def cavl_contrastive_loss(scores: Tensor, same_scene: Tensor, margin: float = 1.0) -> Tensor:
    """CAVL's contrastive loss (Eq. 5).

    ``L = 1/(2n) sum [ delta S^2 + (1 - delta) max(margin - S, 0)^2 ]`` over the given pairs, n = ``scores.shape[0]``.
    Pass the full ``(n, n)`` score matrix with ``same_scene = eye(n)`` for Eq. 5 as written, or ``(n, 2)`` scores
    (positive, sampled negative) with labels ``[1, 0]`` for the sampled-negative form the paper trains with.

    Args:
        scores: alignment scores S (any shape, first dimension n).
        same_scene: same shape, 1 / True where sound and image come from the same scene.
        margin: the margin.
    """
    if scores.shape != same_scene.shape:
        raise ValueError(f"cavl_contrastive_loss: scores {tuple(scores.shape)} and same_scene "
                         f"{tuple(same_scene.shape)} must have the same shape")
    delta = same_scene.to(scores.dtype)
    per_pair = delta * scores.pow(2) + (1 - delta) * F.relu(margin - scores).pow(2)
    return per_pair.sum() / (2 * scores.shape[0])  # Eq. 5


def poisson_regression_loss(log_rate: Tensor, count: Tensor) -> Tensor:
    """CAVL's Poisson regression loss (Eq. 6) without the constant ``ln(y!)``, averaged over the batch.

    With ``lambda = exp(log_rate)``: ``L = mean_i (lambda_i - y_i log lambda_i) = mean_i (exp(eta_i) - y_i eta_i)``,
    the negative log-likelihood of ``y_i ~ Poisson(lambda_i)`` up to ``ln(y_i!)``, which does not depend on the
    model. The paper sums over the n items; the mean (``torch.nn.PoissonNLLLoss``'s reduction) keeps the learning
    rate independent of the batch size. Taking the log-rate ``eta`` keeps ``y log lambda`` exact for tiny rates.

    Args:
        log_rate: ``(B,)`` predicted ``log lambda``.
        count: ``(B,)`` observed counts ``y`` (any non-negative numbers).

    Returns:
        scalar loss.
    """
    if log_rate.shape != count.shape:
        raise ValueError(f"poisson_regression_loss: log_rate {tuple(log_rate.shape)} and count "
                         f"{tuple(count.shape)} must have the same shape")
    y = count.to(log_rate.dtype)
    return (log_rate.exp() - y * log_rate).mean()  # Eq. 6 without ln(y!)
