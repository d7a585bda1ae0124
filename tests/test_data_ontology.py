"""The category tree: tree distances and graded nDCG relevance against naive loops."""

from __future__ import annotations

import itertools

import pytest
import torch

from avlib.data import Ontology, SynthOrchestra


def test_tree_distances_of_the_default_instruments():
    onto = SynthOrchestra().ontology
    names = onto.names
    d = {(a, b): onto.tree_distance(names.index(a), names.index(b)) for a in names for b in names}
    assert d["violin", "violin"] == 0
    assert d["violin", "cello"] == 2  # same subfamily (bowed strings)
    assert d["violin", "guitar"] == 4  # same family, other subfamily
    assert d["violin", "drum"] == 6  # different families, through the root
    assert all(d[a, b] == d[b, a] for a, b in itertools.product(names, names))


def test_distance_matches_path_prefix_definition():
    paths = [("a", "x", "p"), ("a", "x", "q"), ("a", "y"), ("b",)]
    onto = Ontology(paths)
    for i, j in itertools.product(range(4), range(4)):
        common = 0
        while common < min(len(paths[i]), len(paths[j])) and paths[i][common] == paths[j][common]:
            common += 1
        assert onto.tree_distance(i, j) == len(paths[i]) + len(paths[j]) - 2 * common


def test_relevance_single_and_multi_label_against_a_naive_loop():
    onto = SynthOrchestra().ontology
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 8, (5,), generator=g)
    db = torch.randint(0, 8, (7,), generator=g)
    rel = onto.relevance(q, db)
    for i in range(5):
        for j in range(7):
            assert rel[i, j] == 20 - onto.tree_distance(int(q[i]), int(db[j]))
    multi_q = torch.rand(4, 8, generator=g) < 0.3
    multi_d = torch.rand(6, 8, generator=g) < 0.3
    multi_d[0] = False  # an item without labels has relevance 0
    rel = onto.relevance(multi_q, multi_d)
    for i in range(4):
        for j in range(6):
            labels_q, labels_d = torch.nonzero(multi_q[i])[:, 0].tolist(), torch.nonzero(multi_d[j])[:, 0].tolist()
            pairs = [(a, b) for a in labels_q for b in labels_d]
            expected = max((20 - onto.tree_distance(a, b) for a, b in pairs), default=0)
            assert rel[i, j] == expected


def test_unlabelled_items_have_zero_relevance():
    onto = SynthOrchestra().ontology
    rel = onto.relevance(torch.tensor([0, -1]), torch.tensor([-1, 0, 3]))
    assert rel.tolist() == [[0.0, 20.0, 20.0 - onto.tree_distance(0, 3)], [0.0, 0.0, 0.0]]


def test_bad_labels_raise():
    onto = Ontology([("a",), ("b",)])
    with pytest.raises(ValueError, match="query_labels"):
        onto.relevance(torch.tensor([0, 2]), torch.tensor([0]))
    with pytest.raises(ValueError, match="query_labels"):
        onto.relevance(torch.tensor([-2]), torch.tensor([0]))
    with pytest.raises(ValueError, match="db_labels"):
        onto.relevance(torch.tensor([0]), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(IndexError):
        onto.tree_distance(0, 5)
    with pytest.raises(ValueError, match="same path"):
        Ontology([("a",), ("a",)])
