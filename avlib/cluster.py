"""Differentiable clustering: the log-sum-exp soft-max / soft-min, DMC's multimodal clustering, soft k-means by EM.

Everything here is batched: a call clusters every item of a batch against all of its centers at once. The only
Python loop is over the (few) unrolled EM iterations, which are sequential by nature.

- :func:`lse_softmax`, :func:`lse_softmin`, :func:`soft_assign`: DMC Eq. 2, 3 and the softmax weights of Eq. 5.
- :func:`multimodal_cluster`: DMC Algorithm 1 (per-center projections W_j, inner-product distance).
- :func:`soft_kmeans`: CAVL Eq. 1-3 (squared Euclidean distance, stiffness beta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ClusterResult",
    "kmeans_free_energy",
    "kmeans_objective",
    "lse_softmax",
    "lse_softmin",
    "multimodal_cluster",
    "pca_init",
    "soft_assign",
    "soft_kmeans",
    "sq_distances",
]


def _magnitude(z: float | Tensor, like: Tensor, name: str) -> Tensor:
    """``z`` as a tensor on ``like``'s device/dtype, checked to be >= 0 and not NaN."""
    zt = torch.as_tensor(z, dtype=like.dtype if like.is_floating_point() else torch.float32, device=like.device)
    if bool(torch.isnan(zt).any()) or bool((zt < 0).any()):
        raise ValueError(f"{name} must be >= 0 (inf allowed) and not NaN; got {z!r}")
    return zt


def lse_softmax(x: Tensor, z: float | Tensor = 1.0, dim: int = -1, keepdim: bool = False,
                normalize: bool = False) -> Tensor:
    """Smooth maximum ``(1/z) log sum_j exp(z x_j)`` along ``dim`` (DMC Eq. 2).

    It satisfies ``max x <= lse_softmax(x, z) <= max x + log(k)/z`` for ``k`` entries along ``dim``. With
    ``normalize=True`` the sum becomes a mean, ``(1/z) log mean_j exp(z x_j)``, which lies in ``[mean x, max x]``.

    Numerically stable for every ``z >= 0``: the maximum is factored out and the remainder is computed as
    ``log1p(mean(expm1(.)))``, so nothing overflows at ``z = 1e4`` and nothing is lost to rounding as ``z -> 0``.
    The limits are exact: ``z = inf`` returns the maximum; ``z = 0`` returns ``+inf`` (the log k / z term) or, with
    ``normalize=True``, the arithmetic mean.

    Args:
        x: scores, any shape ``(..., k, ...)``.
        z: magnitude parameter (float or tensor broadcastable against ``x`` reduced with ``keepdim=True``).
        dim: the dimension reduced.
        keepdim: keep ``dim`` with size 1.
        normalize: use the log-mean-exp instead of the log-sum-exp.

    Returns:
        ``x`` reduced along ``dim``.
    """
    if x.numel() == 0 or x.shape[dim] == 0:
        raise ValueError("lse_softmax: x must have at least one entry along dim")
    zt = _magnitude(z, x, "lse_softmax: z")
    k = x.shape[dim]
    m = x.amax(dim=dim, keepdim=True)
    is_inf, is_zero = torch.isinf(zt), zt == 0
    z_safe = torch.where(is_inf | is_zero, torch.ones_like(zt), zt)
    # log mean exp(z (x - m)) = log1p(mean(expm1(z (x - m)))), each term in [-1, 0]: no overflow, no cancellation
    log_mean = torch.log1p(torch.expm1(z_safe * (x - m)).mean(dim=dim, keepdim=True))
    smooth = m + log_mean / z_safe
    mean = x.mean(dim=dim, keepdim=True)
    if normalize:
        out = torch.where(is_inf, m, torch.where(is_zero, mean, smooth))
    else:
        smooth = smooth + math.log(k) / z_safe
        out = torch.where(is_inf, m, torch.where(is_zero, torch.full_like(m, math.inf), smooth))
    return out if keepdim else out.squeeze(dim)


def lse_softmin(x: Tensor, z: float | Tensor = 1.0, dim: int = -1, keepdim: bool = False,
                normalize: bool = False) -> Tensor:
    """Smooth minimum ``-(1/z) log sum_j exp(-z x_j)`` (DMC Eq. 3); bounds ``min - log(k)/z <= . <= min``.

    Same arguments and limits as :func:`lse_softmax` (``z = inf`` gives the exact minimum).
    """
    return -lse_softmax(-x, z, dim=dim, keepdim=keepdim, normalize=normalize)


def soft_assign(d: Tensor, z: float | Tensor = 1.0, dim: int = -1) -> Tensor:
    """Soft assignment ``softmax(-z d)`` along ``dim`` (the weights s_ij of DMC Eq. 5, w_ij of CAVL Eq. 2).

    These are exactly the gradient of :func:`lse_softmin` with respect to ``d``. Limits: ``z = 0`` gives the uniform
    ``1/k``; ``z = inf`` gives the hard (one-hot) assignment to the smallest ``d``, ties shared equally.

    Args:
        d: distances ``(..., k, ...)``.
        z: magnitude / stiffness (float or broadcastable tensor), ``>= 0``.
        dim: the dimension of the centers.
    """
    zt = _magnitude(z, d, "soft_assign: z")
    is_inf = torch.isinf(zt)
    z_safe = torch.where(is_inf, torch.ones_like(zt), zt)
    soft = torch.softmax(-z_safe * d, dim=dim)
    if not bool(is_inf.any()):
        return soft
    hard = (d == d.amin(dim=dim, keepdim=True)).to(d.dtype)
    hard = hard / hard.sum(dim=dim, keepdim=True)
    return torch.where(is_inf, hard, soft)


@dataclass
class ClusterResult:
    """Output of a clustering module.

    Attributes:
        centers: ``(B, k, m)`` cluster centers.
        assign: ``(B, N, k)`` soft assignment of each of the N feature vectors to each center (rows sum to 1).
        distances: ``(B, N, k)`` the distances the final assignment was computed from.
    """

    centers: Tensor
    assign: Tensor
    distances: Tensor


def _check_features(u: Tensor, name: str) -> None:
    if u.dim() != 3 or u.shape[1] == 0:
        raise ValueError(f"{name} must have shape (B, N, C) with N >= 1; got {tuple(u.shape)}")


def multimodal_cluster(u: Tensor, weight: Tensor, iters: int = 3, z: float | Tensor = 1.0,
                       eps: float = 1e-8) -> ClusterResult:
    """DMC's clustering of one modality (Algorithm 1), batched over items and centers.

    Center j lives in its own space, reached through the projection ``W_j`` (``weight[j]``), which DMC shares
    between the audio and the visual modality. With ``d_ij = 0`` at the start, each of the ``iters`` unrolled,
    differentiable iterations does:

    - weights ``s_ij = softmax_j(-z d_ij)`` (E-like step),
    - centers ``c_j = sum_i s_ij W_j u_i`` (Eq. 7 with the projection; M-like step),
    - distances ``d_ij = -<W_j u_i, c_j / ||c_j||>`` (inner-product agreement).

    The returned assignment is ``softmax(-z d)`` of the final distances, i.e. the weights that the final centers
    induce. ``W_j`` also sets the scale of the distances, so it plays the role of the magnitude z of Eq. 3; the
    extra ``z`` (default 1) is kept for experiments.

    Args:
        u: ``(B, N, n)`` feature vectors (N = p positions of an image or q of a spectrogram).
        weight: ``(k, m, n)`` per-center projections ``W_j``.
        iters: number T of unrolled iterations (>= 1).
        z: magnitude of the softmax.
        eps: floor on ``||c_j||``.

    Returns:
        :class:`ClusterResult` with centers ``(B, k, m)``, assign and distances ``(B, N, k)``.
    """
    _check_features(u, "multimodal_cluster: u")
    if weight.dim() != 3 or weight.shape[2] != u.shape[2]:
        raise ValueError(f"multimodal_cluster: weight must be (k, m, n={u.shape[2]}); got {tuple(weight.shape)}")
    if iters < 1:
        raise ValueError(f"multimodal_cluster: iters must be >= 1; got {iters}")
    proj = torch.einsum("kmn,bin->bkim", weight, u)  # W_j u_i: (B, k, N, m)
    d = u.new_zeros(u.shape[0], u.shape[1], weight.shape[0])  # Algorithm 1: d_ij = 0
    centers = u.new_zeros(u.shape[0], weight.shape[0], weight.shape[1])
    for _ in range(iters):
        s = soft_assign(d, z)  # line 3: s_ij = softmax(-d_ij)
        centers = torch.einsum("bik,bkim->bkm", s, proj)  # line 4: c_j = sum_i s_ij W_j u_i
        unit = centers / centers.norm(dim=-1, keepdim=True).clamp_min(eps)
        d = -torch.einsum("bkim,bkm->bik", proj, unit)  # line 5: d_ij = -<W_j u_i, c_j/||c_j||>
    return ClusterResult(centers=centers, assign=soft_assign(d, z), distances=d)


def sq_distances(x: Tensor, c: Tensor) -> Tensor:
    """Squared Euclidean distances ``||x_i - c_j||^2``: x ``(B, N, C)``, c ``(B, k, C)`` -> ``(B, N, k)``.

    Computed from differences (not the ``|x|^2 - 2 x.c + |c|^2`` expansion) so they are never negative and the
    gradient at coinciding points is exact.
    """
    return (x.unsqueeze(2) - c.unsqueeze(1)).pow(2).sum(-1)


def kmeans_objective(x: Tensor, centers: Tensor, assign: Tensor) -> Tensor:
    """CAVL Eq. 1 with squared Euclidean distance: ``J = sum_ij w_ij ||x_i - c_j||^2`` per item -> ``(B,)``."""
    return (assign * sq_distances(x, centers)).sum(dim=(1, 2))


def kmeans_free_energy(x: Tensor, centers: Tensor, assign: Tensor, beta: float) -> Tensor:
    """``F = J - H(w)/beta = sum w d + (1/beta) sum w log w`` per item -> ``(B,)``.

    The E-step (Eq. 2) minimises F over w exactly and the M-step (Eq. 3) minimises it over the centers exactly, so
    F never increases under soft k-means; J alone only decreases under the M-step.
    """
    entropy_term = torch.special.xlogy(assign, assign).sum(dim=(1, 2))
    return kmeans_objective(x, centers, assign) + entropy_term / beta


def pca_init(x: Tensor, k: int, power_iters: int = 8) -> Tensor:
    """Deterministic, batched starting centers: ``k`` points evenly spaced along each item's principal axis.

    The principal direction comes from a few power iterations started at the point farthest from the mean; the
    centers span the range of the projections, ``mean + t_j v`` with ``t_j`` from min to max (k = 1 gives the mean).

    Args:
        x: ``(B, N, C)`` features.
        k: number of centers.

    Returns:
        ``(B, k, C)`` centers (not attached to the graph).
    """
    _check_features(x, "pca_init: x")
    if k < 1:
        raise ValueError(f"pca_init: k must be >= 1; got {k}")
    x = x.detach()
    mu = x.mean(dim=1, keepdim=True)
    xc = x - mu
    if k == 1:
        return mu
    far = xc.pow(2).sum(-1).argmax(dim=1)  # (B,)
    v = xc[torch.arange(x.shape[0], device=x.device), far]  # (B, C)
    for _ in range(power_iters):
        v = torch.einsum("bnc,bn->bc", xc, torch.einsum("bnc,bc->bn", xc, v))
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    t = torch.einsum("bnc,bc->bn", xc, v)
    frac = torch.linspace(0, 1, k, device=x.device, dtype=x.dtype)
    tj = t.amin(1, keepdim=True) + frac * (t.amax(1, keepdim=True) - t.amin(1, keepdim=True))  # (B, k)
    return mu + tj.unsqueeze(-1) * v.unsqueeze(1)


def soft_kmeans(x: Tensor, k: int, beta: float | Tensor, iters: int = 5, init: Tensor | str = "pca",
                return_history: bool = False) -> ClusterResult | tuple[ClusterResult, list[ClusterResult]]:
    """Soft k-means by EM (CAVL Eq. 1-3), batched over items and centers, unrolled and differentiable.

    Each iteration is an E-step ``w_ij = softmax_j(-beta ||x_i - c_j||^2)`` (Eq. 2) followed by an M-step
    ``c_j = sum_i w_ij x_i / sum_i w_ij`` (Eq. 3). We use the squared Euclidean distance: it is the distance for
    which the weighted mean of Eq. 3 is the exact minimiser of Eq. 1 (and the one of the soft k-means notes CAVL
    cites). ``beta -> inf`` gives Lloyd's hard k-means; ``beta = 0`` gives k copies of the mean.

    Args:
        x: ``(B, N, C)`` feature vectors.
        k: number of centers.
        beta: stiffness (>= 0, inf allowed).
        iters: number of E+M iterations (>= 1).
        init: ``"pca"`` (:func:`pca_init`), ``"spaced"`` (the points at evenly spaced indices) or a tensor
            ``(k, C)`` / ``(B, k, C)`` of starting centers.
        return_history: also return the state after every iteration (for plots).

    Returns:
        :class:`ClusterResult` (centers ``(B, k, C)``, assign and squared distances ``(B, N, k)`` of a final
        E-step), and the list of per-iteration results if ``return_history``.
    """
    _check_features(x, "soft_kmeans: x")
    if iters < 1:
        raise ValueError(f"soft_kmeans: iters must be >= 1; got {iters}")
    b, n, c = x.shape
    if isinstance(init, str):
        if init == "pca":
            centers = pca_init(x, k)
        elif init == "spaced":
            idx = ((torch.arange(k, device=x.device) + 0.5) * n / k).long().clamp_max(n - 1)
            centers = x[:, idx].detach()
        else:
            raise ValueError(f"soft_kmeans: init must be 'pca', 'spaced' or a tensor; got {init!r}")
    else:
        if init.shape[-2:] != (k, c) or init.dim() not in (2, 3):
            raise ValueError(f"soft_kmeans: init tensor must be (k, C) or (B, k, C) = (.., {k}, {c}); got "
                             f"{tuple(init.shape)}")
        centers = init.to(x.dtype).expand(b, k, c)
    history = []
    for _ in range(iters):
        d = sq_distances(x, centers)
        w = soft_assign(d, beta)  # E-step, Eq. 2
        centers = torch.einsum("bnk,bnc->bkc", w, x) / w.sum(dim=1).unsqueeze(-1).clamp_min(1e-12)  # M-step, Eq. 3
        if return_history:
            history.append(ClusterResult(centers=centers, assign=w, distances=d))
    d = sq_distances(x, centers)
    result = ClusterResult(centers=centers, assign=soft_assign(d, beta), distances=d)
    return (result, history) if return_history else result
