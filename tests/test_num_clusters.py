"""num_classes: auto: the number of clusters from the mined neighbours (neighbors/num_clusters.py)."""
import igraph
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from utils.errors import UserError
from neighbors.num_clusters import (RESOLUTION, estimate_num_clusters, graph_clusters, knn_graph, louvain, merge_small,
                                modularity_path, shared_neighbor_graph, split_large)


def planted_neighbors(groups, size, k, noise, seed=0):
    """Neighbour lists [N, 1 + k] where each neighbour is from the sample's own group, except a `noise` share drawn
    from anywhere."""
    rng = np.random.default_rng(seed)
    n = groups * size
    group = np.arange(n) // size
    out = np.empty((n, k + 1), dtype=np.int64)
    out[:, 0] = np.arange(n)
    for i in range(n):
        same = rng.choice(np.delete(np.arange(group[i] * size, (group[i] + 1) * size), i % size), k, replace=False)
        anywhere = rng.choice(n, k)
        out[i, 1:] = np.where(rng.random(k) < noise, anywhere, same)
    return out


def nested_neighbors(pairs, size, k, cross, seed=0):
    """Neighbour lists [N, 1 + k] of pairs of sub-groups: each neighbour is from the sample's own sub-group, or with
    probability `cross` from its sibling. Returns the lists and the sub-group of each sample."""
    rng = np.random.default_rng(seed)
    sub = np.arange(pairs * 2 * size) // size
    out = np.empty((len(sub), k + 1), dtype=np.int64)
    out[:, 0] = np.arange(len(sub))
    for i in range(len(sub)):
        own = np.delete(np.arange(sub[i] * size, (sub[i] + 1) * size), i % size)
        sibling = np.arange((sub[i] ^ 1) * size, ((sub[i] ^ 1) + 1) * size)
        out[i, 1:] = np.where(rng.random(k) < cross, rng.choice(sibling, k), rng.choice(own, k, replace=False))
    return out, sub


@pytest.mark.parametrize('groups', [3, 5, 8])
def test_planted_groups_are_found(groups):
    k, report = estimate_num_clusters(planted_neighbors(groups, 60, 10, noise=0.1), [2, 12])
    assert k == groups and report['cluster_sizes'] == [60] * groups


def test_k_range_bounds_the_estimate():
    indices = planted_neighbors(8, 40, 10, noise=0.05)
    assert estimate_num_clusters(indices, [2, 5])[0] == 5  # merged down to k_max by modularity
    assert estimate_num_clusters(indices, [10, 20])[0] == 10  # fewer communities than k_min: k_min


@pytest.mark.parametrize('chunk', [7, 65536])  # counted a few rows at a time, or all at once
def test_shared_neighbor_weights_are_jaccard_overlaps(chunk):
    indices = planted_neighbors(3, 20, 5, noise=0.3, seed=2)
    graph = shared_neighbor_graph(indices, chunk).toarray()
    adjacency = knn_graph(indices).toarray()
    lists = [set(row) for row in indices.tolist()]
    for i in range(len(indices)):
        for j in range(len(indices)):
            expected = len(lists[i] & lists[j]) / len(lists[i] | lists[j]) if adjacency[i, j] else 0.0
            assert graph[i, j] == pytest.approx(expected)


def cliques(sizes):
    """Labels and a dense 0/1 graph in which each community is a clique (self-links are removed by the caller)."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    graph = (labels[:, None] == labels[None, :]).astype(np.float64)
    return labels, graph


def test_a_small_community_joins_the_one_it_is_linked_to():
    # communities 0, 1, 2 of 10 nodes, 3 of 3 nodes tied to community 1 by most of its cross edges
    labels, graph = cliques([10, 10, 10, 3])
    graph[30:33, 10:13] = graph[10:13, 30:33] = 1  # 9 links to community 1
    graph[30, 0] = graph[0, 30] = 1  # 1 link to community 0
    np.fill_diagonal(graph, 0)
    merged, bound = merge_small(sp.csr_matrix(graph), labels, 0.5, 2)
    assert merged.tolist() == [0] * 10 + [1] * 10 + [2] * 10 + [1] * 3 and bound == 5.0
    assert merge_small(sp.csr_matrix(graph), labels, 0.2, 2)[0].tolist() == labels.tolist()  # 3 >= 0.2 * 10
    assert merge_small(sp.csr_matrix(graph), labels, 0.5, 4)[0].tolist() == labels.tolist()  # k_min reached


def test_a_small_community_is_not_pulled_into_the_largest_by_its_size():
    # community 0 (20 nodes, dense) gets 4 of the small community's links, community 1 (10 nodes) 3: a larger share
    # of community 1's links (3 / 93 against 4 / 384), so the small one joins community 1
    labels, graph = cliques([20, 10, 10, 3])
    graph[40, 0:4] = graph[0:4, 40] = 1
    graph[41, 20:23] = graph[20:23, 41] = 1
    np.fill_diagonal(graph, 0)
    merged, _ = merge_small(sp.csr_matrix(graph), labels, 0.5, 2)
    assert merged.tolist() == [0] * 20 + [1] * 10 + [2] * 10 + [1] * 3


def test_a_fixed_reference_does_not_rise_as_communities_merge():
    # sizes 12, 12, 8, 8, 4; the 4 is tied to the first 8, the second 8 to the second 12. Median 8: the 4 (under
    # 0.7 * 8) merges; the median taken again is 12, and the second 8 (under 8.4) merges too. With the reference
    # fixed at the first median, only the 4 does.
    labels, graph = cliques([12, 12, 8, 8, 4])
    graph[40:44, 24:27] = graph[24:27, 40:44] = 1
    graph[32:40, 12:14] = graph[12:14, 32:40] = 1
    np.fill_diagonal(graph, 0)
    again, bound = merge_small(sp.csr_matrix(graph), labels, 0.7, 2)
    assert again.tolist() == [0] * 12 + [1] * 12 + [2] * 8 + [1] * 8 + [2] * 4 and bound == pytest.approx(0.7 * 12)
    fixed, bound = merge_small(sp.csr_matrix(graph), labels, 0.7, 2, reference=8.0)
    assert fixed.tolist() == [0] * 12 + [1] * 12 + [2] * 8 + [3] * 8 + [2] * 4 and bound == pytest.approx(5.6)


def test_with_a_reference_each_cluster_is_split_once():
    indices = planted_neighbors(4, 30, 8, noise=0.02, seed=3)
    graph = shared_neighbor_graph(indices)
    joined = np.arange(120) // 60  # two clusters of two planted groups each
    once, bound = split_large(graph, joined, 0.7, 20, reference=30.0)
    assert once.max() == 3 and bound == pytest.approx(30 / 0.7)
    assert adjusted_rand_score(np.arange(120) // 30, once) > 0.95
    # a reference of 10: every part (30) is over the bound, but the parts of a split are not split again
    assert split_large(graph, joined, 0.7, 20, reference=10.0)[0].max() == 3


def test_two_groups_in_one_cluster_are_split_apart():
    indices = planted_neighbors(5, 30, 8, noise=0.05, seed=2)
    graph = shared_neighbor_graph(indices)
    truth = np.arange(150) // 30
    joined = np.minimum(truth, 3)  # groups 3 and 4 as one cluster of 60: over the median (30) / 0.6
    labels, bound = split_large(graph, joined, 0.6, 20)
    assert labels.max() == 4 and bound == pytest.approx(50.0)
    assert adjusted_rand_score(truth, labels) > 0.95
    assert (split_large(graph, joined, 0.6, 4)[0] == joined).all()  # k_max reached: nothing split
    assert (split_large(graph, joined, 0.5, 20)[0] == joined).all()  # 60 <= 30 / 0.5


def test_modularity_along_the_merge_path_matches_igraph():
    indices = planted_neighbors(4, 30, 6, noise=0.3, seed=1)
    graph = knn_graph(indices)
    G = igraph.Graph.Weighted_Adjacency(graph.toarray(), mode='upper')
    start = np.arange(120) // 15  # 8 communities: halves of the planted groups
    path = modularity_path(graph, start, 2)
    assert sorted(path) == list(range(2, 9))
    for k, (q, labels) in path.items():
        assert q == pytest.approx(G.modularity(labels.tolist(), weights='weight', resolution=RESOLUTION), abs=1e-9)
    # the greedy merges first rejoin the halves of each planted group
    assert len({frozenset(np.flatnonzero(path[4][1] == c)) for c in range(4)}
               & {frozenset(range(i, i + 30)) for i in range(0, 120, 30)}) == 4


def test_graph_is_symmetric_without_self_loops():
    indices = np.array([[0, 1, 2], [1, 0, 0], [2, 2, 1], [3, 0, 1]])
    graph = knn_graph(indices).toarray()
    assert (graph == graph.T).all() and np.diag(graph).sum() == 0
    assert graph[3].tolist() == [1, 1, 0, 0] and graph[2].tolist() == [1, 1, 0, 0]


def test_k_median_names_the_reference():
    indices = planted_neighbors(4, 40, 8, noise=0.05)
    assert [estimate_num_clusters(indices, [2, 12], m)[0] for m in ('clusters', 'communities')] == [4, 4]
    with pytest.raises(UserError, match="k_median must be one of clusters, communities, got 'mean'"):
        estimate_num_clusters(indices, [2, 12], 'mean')


@pytest.mark.parametrize('k_range', [[1, 5], [5, 3], (2,), [2, 'x'], [100, 300]])
def test_bad_k_range(k_range):
    with pytest.raises(UserError, match='k_range'):
        estimate_num_clusters(planted_neighbors(3, 60, 5, 0.0), k_range)


def test_a_range_wider_than_the_images_allow_is_narrowed(capsys):
    k, report = estimate_num_clusters(planted_neighbors(3, 10, 5, 0.0), [2, 20])
    assert k == 3 and report['k_range'] == [2, 15]  # 30 images: max 15, and the report says the range used
    assert 'k_range max lowered from 20 to 15' in capsys.readouterr().out


def test_graph_clusters_give_exactly_k_along_the_planted_structure():
    """head_init: graph's partition: Louvain's communities merged down to k (sibling sub-groups joined), or bisected
    up to k when Louvain joined the siblings; with no structure left to split, fewer than k."""
    indices, sub = nested_neighbors(3, 40, 10, cross=0.1)
    assert louvain(shared_neighbor_graph(indices)).max() + 1 == 6
    for labels in graph_clusters(indices, 3, seeds=(0, 1)):
        assert adjusted_rand_score(sub // 2, labels) == 1.0
    indices, sub = nested_neighbors(3, 40, 10, cross=0.2)
    assert louvain(shared_neighbor_graph(indices)).max() + 1 == 3  # the pairs, to be bisected
    assert adjusted_rand_score(sub, graph_clusters(indices, 6)[0]) == 1.0
    flat = planted_neighbors(4, 50, 10, noise=0.05)
    assert adjusted_rand_score(np.arange(200) // 50, graph_clusters(flat, 6)[0]) == 1.0  # 4: no group splits


def test_the_estimate_says_how_sure_it_is():
    """Over other Louvain seeds and a finer resolution: clear groups give one K everywhere; the words name the
    partitions, and an unsure estimate says to give num_classes."""
    from neighbors.num_clusters import SPREAD, spread_words
    k, report = estimate_num_clusters(planted_neighbors(5, 60, 10, noise=0.1), [2, 12], spread=SPREAD)
    spread = report['k_spread']
    assert k == 5 and spread['k'] == [5] * 6 and spread['range'] == [5, 5]
    assert spread['partitions'][0] == [0, 0.5] and len(spread['partitions']) == len(SPREAD) + 1
    assert spread_words(report) == ('all 6 partitions of the neighbour graph (Louvain seeds 0-2, resolutions 0.5, '
                                    '0.75) give K = 5')
    unsure = {'k_spread': {**spread, 'k': [7, 5, 9, 7, 8, 6], 'range': [5, 9]}}
    assert spread_words(unsure).startswith('unsure: 6 partitions') and 'give K from 5 to 9; give num_classes=K' in \
        spread_words(unsure)
    assert 'k_spread' not in estimate_num_clusters(planted_neighbors(5, 60, 10, noise=0.1), [2, 12])[1]
