"""The number of clusters, without labels, from the mined neighbours: the partition of the kNN graph with the
highest modularity.

Images of one semantic group are neighbours of each other far more often than chance, so the symmetric graph of
mined neighbours falls into communities. Modularity with resolution g, Q = sum_c [e_c / m - g (d_c / 2m)^2]
(e_c: edges inside community c, d_c: its degree sum, m: all edges), rewards edges kept inside communities against
what random wiring of the same degrees would keep. Louvain (networkx) finds a high-modularity partition; its
communities are then merged greedily, the pair whose merge lowers Q least first, down to k_min, and K is the
number of communities with the highest Q within k_range (partitions above k_max are merged into range first).

Measured side by side on digits (issue 23 note): the eigengap of the normalised graph (17 and 20 clusters on two
pretext models with 10 classes) and k-means partitions scored by modularity at g = 1 (12 and 14) over-split the
digits' handwriting styles; g = 0.5 was chosen on one pretext run (seed 0) and is benchmarked on others
(benchmarks/num_clusters.py).
"""
import networkx as nx
import numpy as np
import scipy.sparse as sp

from utils.errors import UserError

RESOLUTION = 0.5


def knn_graph(indices):
    """Neighbour lists [N, 1 + k] (column 0: the sample itself) -> the symmetric 0/1 kNN graph, sparse [N, N]."""
    n, k = indices.shape[0], indices.shape[1] - 1
    rows = np.repeat(np.arange(n), k)
    graph = sp.csr_matrix((np.ones(n * k), (rows, indices[:, 1:].ravel())), shape=(n, n))
    graph = ((graph + graph.T) > 0).astype(np.float64)
    graph.setdiag(0)
    graph.eliminate_zeros()
    return graph


def modularity_path(graph, communities, k_min, resolution=RESOLUTION):
    """From a partition (a list of index lists), merge the pair of communities that keeps modularity highest until
    k_min remain; returns {number of communities: (modularity, labels [N])}."""
    n = graph.shape[0]
    labels = np.empty(n, dtype=np.int64)
    for c, members in enumerate(communities):
        labels[list(members)] = c
    member = sp.csr_matrix((np.ones(n), (np.arange(n), labels)), shape=(n, len(communities)))
    links = (member.T @ graph @ member).toarray()  # links[a, b]: edge ends between communities a and b
    total = links.sum()  # 2m
    path = {}
    while True:
        degree = links.sum(1)
        q = float(np.trace(links) / total - resolution * np.sum((degree / total) ** 2))
        path[len(links)] = (q, labels.copy())
        if len(links) <= k_min:
            return path
        # merging a and b changes Q by 2 links[a, b] / 2m - 2 g d_a d_b / (2m)^2
        gain = 2 * links / total - 2 * resolution * np.outer(degree, degree) / total ** 2
        np.fill_diagonal(gain, -np.inf)
        a, b = sorted(np.unravel_index(np.argmax(gain), gain.shape))
        links[a] += links[b]
        links[:, a] += links[:, b]
        links = np.delete(np.delete(links, b, 0), b, 1)
        labels[labels == b] = a
        labels[labels > b] -= 1


def estimate_num_clusters(indices, k_range, resolution=RESOLUTION):
    """K in k_range whose partition of the kNN graph has the highest modularity; returns (K, {k: modularity})."""
    k_min, k_max = check_k_range(k_range, len(indices))
    graph = knn_graph(np.asarray(indices))
    communities = nx.community.louvain_communities(nx.from_scipy_sparse_array(graph), resolution=resolution,
                                                   seed=0)  # a fixed seed: the same answer every run
    path = modularity_path(graph, [sorted(c) for c in communities], min(k_min, len(communities)), resolution)
    scores = {k: round(q, 6) for k, (q, _) in sorted(path.items()) if k <= k_max}
    return max(max(scores, key=scores.get), k_min), scores  # fewer communities than k_min: k_min


def check_k_range(k_range, n):
    if (not isinstance(k_range, (list, tuple)) or len(k_range) != 2
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in k_range)
            or not 2 <= k_range[0] <= k_range[1]):
        raise UserError(f'k_range must be [min, max] with 2 <= min <= max, got {k_range!r}')
    if k_range[1] * 2 > n:
        raise UserError(f'k_range {list(k_range)} allows more clusters than {n} images can show; lower its max')
    return k_range
