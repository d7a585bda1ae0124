"""A category tree for graded relevance between clips (nDCG with ontology distance).

Objects that Sound (Arandjelović & Zisserman, 2018, Appendix A.2) scores cross-modal retrieval with nDCG@30, where the
relevance of a database item to a query is ``C - d`` with ``d`` the smallest tree distance between their labels in the
AudioSet ontology and ``C = 20``. SynthOrchestra's categories live in a small tree of the same kind:
``music → family (strings, winds, percussion, keyboard) → subfamily (bowed, plucked, ...) → instrument``, so two violins
are more relevant to each other than a violin and a guitar, which are more relevant than a violin and a drum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from avlib.metrics import label_relevance


class Ontology:
    """A rooted tree whose leaves are the categories ``0 … K-1``.

    Args:
        paths: one path per category, from just below the root to the category's own name,
            e.g. ``("strings", "bowed", "violin")``. Node names are identified by their full path prefix, so two
            subfamilies called ``"pitched"`` under different families stay different nodes.
        root: the name of the root node.
    """

    def __init__(self, paths: Sequence[Sequence[str]], root: str = "music") -> None:
        if len(paths) == 0:
            raise ValueError("Ontology needs at least one category path")
        self.root = root
        self.paths: list[tuple[str, ...]] = [tuple(p) for p in paths]
        for k, p in enumerate(self.paths):
            if len(p) == 0:
                raise ValueError(f"Ontology: the path of category {k} is empty")
        if len(set(self.paths)) != len(self.paths):
            raise ValueError("Ontology: two categories have the same path")
        self.names = [p[-1] for p in self.paths]
        self._dist = self._distance_matrix()

    @property
    def num_categories(self) -> int:
        return len(self.paths)

    def _distance_matrix(self) -> np.ndarray:
        k = len(self.paths)
        depth = np.array([len(p) for p in self.paths])
        common = np.zeros((k, k), dtype=np.int64)
        for i, pi in enumerate(self.paths):
            for j, pj in enumerate(self.paths):
                n = 0
                for a, b in zip(pi, pj, strict=False):
                    if a != b:
                        break
                    n += 1
                common[i, j] = n
        # path length through the deepest common ancestor: d(i, j) = depth_i + depth_j - 2 * depth(lca)
        return depth[:, None] + depth[None, :] - 2 * common

    def tree_distance(self, a: int, b: int) -> int:
        """Number of edges on the tree path between categories ``a`` and ``b`` (0 when equal)."""
        for name, v in (("a", a), ("b", b)):
            if not 0 <= int(v) < self.num_categories:
                raise IndexError(f"tree_distance: category {name}={v} is outside 0..{self.num_categories - 1}")
        return int(self._dist[int(a), int(b)])

    def distance_matrix(self) -> torch.Tensor:
        """``(K, K)`` int64 tensor of pairwise tree distances."""
        return torch.from_numpy(self._dist.copy())

    def relevance(self, query_labels: torch.Tensor, db_labels: torch.Tensor, c: float = 20.0) -> torch.Tensor:
        """Graded relevance ``rel[q, d] = max over label pairs (c - tree_distance)`` (Objects that Sound, App. A.2).

        Args:
            query_labels: ``(Q,)`` int64 category ids (``-1``: unlabelled), or ``(Q, K)`` bool multi-hot labels.
            db_labels: ``(D,)`` int64 or ``(D, K)`` bool, same convention.
            c: the constant ``C`` (20 in the paper). Items without any label get relevance 0.

        Returns:
            ``(Q, D)`` float32 relevance, ``c`` for identical categories and smaller for distant ones (never below 0).
        """
        return label_relevance(query_labels, db_labels, self.distance_matrix(), c=c)
