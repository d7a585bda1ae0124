"""Scoring mask-based separation of two-source mixtures by BSS Eval (SDR / SIR / SAR), with its bounds.

Held-out mixtures are pairs of solo clips of different categories (:func:`mixture_pairs`). Every estimator is
scored the same way (:func:`bss_scores`: BSS Eval v3, :func:`avlib.metrics.bss_eval_sources`, each estimate matched
to the source it was asked for, no permutation search): the model's estimates, the **mixture** itself as the
estimate of each source (the lower bound) and the **ideal masks** computed from the true sources and applied
exactly as the model's masks are (log-frequency grid, inverse warp, mixture phase): the ideal ratio mask clipped to
[0, 1] (the best a sigmoid can give on the ratio target) and the ideal binary mask (Sound of Pixels' target).
"""

from __future__ import annotations

import torch
from torch import Tensor

from avlib.audio import SeparationSTFT
from avlib.metrics import bss_eval_sources

__all__ = ["binary_mask", "bss_scores", "ideal_estimates", "mixture_pairs", "ratio_mask"]


def ratio_mask(own: Tensor, mix: Tensor, eps: float = 1e-6) -> Tensor:
    """Eq. 8's target ``M = |A| / |A_mix|`` on magnitudes of the same shape, clipped to [0, 1]: where the sources'
    phases cancel, ``|A| > |A_mix|``, which a sigmoid cannot output; ``eps`` keeps silent bins at 0."""
    return (own / (mix + eps)).clamp(0.0, 1.0)


def binary_mask(own: Tensor, other: Tensor) -> Tensor:
    """Sound of Pixels' binary target ``1[|A| >= |A_other|]`` (float) on magnitudes of the same shape."""
    return (own >= other).to(own.dtype)


def mixture_pairs(labels: Tensor) -> Tensor:
    """Disjoint pairs of items of different categories, greedily in order: each unpaired item takes the next unpaired
    one of another category (items left without one are dropped).

    Args:
        labels: ``(n,)`` category of each item (-1 = unknown, then any item pairs with any other).

    Returns:
        ``(M, 2)`` long item indices.
    """
    labels = [int(v) for v in labels.tolist()]
    free, pairs = list(range(len(labels))), []
    while free:
        i = free.pop(0)
        j = next((j for j in free if labels[j] != labels[i] or labels[i] < 0), None)
        if j is not None:
            free.remove(j)
            pairs.append((i, j))
    if not pairs:
        raise ValueError("mixture_pairs: no two items of different categories to mix")
    return torch.tensor(pairs, dtype=torch.long)


@torch.no_grad()
def ideal_estimates(stft: SeparationSTFT, sources: Tensor) -> dict[str, Tensor]:
    """The bounds' estimates for two-source mixtures.

    Args:
        stft: the separation frontend (its device is used).
        sources: ``(M, 2, N)`` each mixture's two sources at ``stft.sample_rate``; the mixture is their sum.

    Returns:
        ``mixture``, ``ideal_ratio`` and ``ideal_binary``, each ``(M, 2, N)`` on the CPU.
    """
    if sources.ndim != 3 or sources.shape[1] != 2:
        raise ValueError(f"ideal_estimates: sources must be (M, 2, N); got {tuple(sources.shape)}")
    m, _, n = sources.shape
    dev = stft.warp.device
    src = sources.to(dev, torch.float32)
    mix_spec = stft.stft(src.sum(1))  # (M, F, T)
    own = stft.to_log_frequency(stft.stft(src.flatten(0, 1)).abs()).unflatten(0, (m, 2))  # (M, 2, F', T)
    mix = stft.to_log_frequency(mix_spec.abs())[:, None]
    masks = {"ideal_ratio": ratio_mask(own, mix, stft.eps), "ideal_binary": binary_mask(own, own.flip(1))}
    out = {"mixture": src.sum(1, keepdim=True).expand(m, 2, n).cpu()}
    for name, mask in masks.items():
        est = stft.apply_mask(mask.flatten(0, 1), mix_spec.repeat_interleave(2, dim=0), n)
        out[name] = est.unflatten(0, (m, 2)).cpu()
    return out


def bss_scores(est: Tensor, ref: Tensor, chunk: int = 32) -> dict[str, float]:
    """Mean SDR, SIR and SAR (dB) over every mixture and source, BSS Eval v3 (:func:`avlib.metrics.bss_eval_sources`,
    filter length 512, as ``mir_eval.separation.bss_eval_sources``) with estimate ``s`` scored against reference
    ``s`` (no permutation search: the visual query says which source an estimate is for). Evaluated ``chunk``
    mixtures at a time (the decomposition's Gram matrices take ``chunk`` x 8 MiB).

    Args:
        est: ``(M, S, N)`` estimates.
        ref: ``(M, S, N)`` true sources.
    """
    if est.shape != ref.shape or est.ndim != 3:
        raise ValueError(f"bss_scores: est and ref must share shape (M, S, N); got {tuple(est.shape)}, "
                         f"{tuple(ref.shape)}")
    if chunk < 1:
        raise ValueError(f"bss_scores: chunk must be >= 1; got {chunk}")
    parts = [bss_eval_sources(est[i : i + chunk], ref[i : i + chunk], compute_permutation=False)
             for i in range(0, est.shape[0], chunk)]
    return {k: float(torch.cat([p[k] for p in parts]).mean()) for k in ("sdr", "sir", "sar")}
