"""What a trained model's features know: linear probes (L3-Net Sec. 3.3), k-means NMI (L3-Net Table 4) and cross-modal
retrieval nDCG (Objects that Sound Table 1), for any features ``(N, D)``."""

from __future__ import annotations

from typing import Any

import torch

from avlib.metrics import ndcg_at_k, random_ndcg_at_k

__all__ = ["linear_probe", "retrieval_ndcg"]


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, c: float = 1.0
) -> float:
    """Test accuracy of a multinomial logistic regression on z-scored frozen features (L3 Sec. 3.3's linear protocol).

    ``train_x (N, D)``, ``train_y (N,)``, ``test_x (M, D)``, ``test_y (M,)``; the z-score statistics come from the
    training features only. ``c`` is the inverse L2 regularisation strength of ``sklearn``'s ``LogisticRegression``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    clf.fit(train_x.double().numpy(), train_y.numpy())
    return float(clf.score(test_x.double().numpy(), test_y.numpy()))


def retrieval_ndcg(feats: dict[str, torch.Tensor], ontology: Any, k: int = 30) -> dict[str, dict[str, float]]:
    """nDCG@k of the four query/database combinations (Objects that Sound Table 1) and their random-ranking values.

    ``feats`` as returned by :func:`clip_features`; relevance ``C - tree distance`` from ``ontology.relevance``.
    Embeddings are L2-normalised (as the paper does for every baseline; a no-op for AVE-Net). A same-modality query
    never retrieves itself. Returns ``{"im-im": {"ndcg": ..., "random": ...}, "im-aud": ..., ...}``.
    """
    rel = ontology.relevance(feats["labels"], feats["labels"])
    out = {}
    for name, q, d in (("im-im", "image", "image"), ("im-aud", "image", "audio"), ("aud-im", "audio", "image"),
                       ("aud-aud", "audio", "audio")):
        same = q == d
        out[name] = {
            "ndcg": ndcg_at_k(feats[q], feats[d], rel, k=k, exclude_self=same, l2_normalize=True),
            "random": random_ndcg_at_k(rel, k=k, exclude_self=same),
        }
    return out
