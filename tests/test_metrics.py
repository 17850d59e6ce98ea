import itertools

import numpy as np
import pytest

from evaluation.metrics import cluster_metrics


def test_permuted_labels_are_perfect():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    perm = rng.permutation(10)
    m = cluster_metrics(perm[labels], labels)
    assert m['acc'] == 1.0 and m['nmi'] == pytest.approx(1.0) and m['ari'] == pytest.approx(1.0)


@pytest.mark.parametrize('seed', range(5))
def test_hungarian_equals_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    k = 4
    labels, pred = rng.integers(0, k, 60), rng.integers(0, k, 60)
    best = max(np.mean(np.asarray(perm)[pred] == labels) for perm in itertools.permutations(range(k)))
    assert cluster_metrics(pred, labels)['acc'] == pytest.approx(best)


def test_top5_and_overclustering():
    labels = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([3, 3, 1, 1, 0, 2])  # 4 clusters, 3 classes: cluster 0 and 2 both hold class 2
    m = cluster_metrics(pred, labels)
    assert m['acc'] == pytest.approx(5 / 6) and m['majority_acc'] == 1.0
    probs = np.eye(4)[pred] * 0.9 + 0.025
    assert cluster_metrics(pred, labels, probs)['top5'] == 1.0
    assert 'majority_acc' not in cluster_metrics(labels, labels)
