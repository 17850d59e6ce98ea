"""The number of clusters, without labels, from the mined neighbours: the eigengap of the kNN graph.

Images of one semantic group are neighbours of each other far more often than of the rest, so the symmetric
graph of mined neighbours is close to K loosely joined blocks. Its normalised adjacency D^-1/2 A D^-1/2 then has
K eigenvalues near 1 and a drop after them (von Luxburg, "A tutorial on spectral clustering", 2007, section 8.3):
K is where the drop between consecutive eigenvalues is largest within k_range.
"""
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh

from utils.errors import UserError


def knn_graph(indices):
    """Neighbour lists [N, 1 + k] (column 0: the sample itself) -> the symmetric 0/1 kNN graph, sparse [N, N]."""
    n, k = indices.shape[0], indices.shape[1] - 1
    rows = np.repeat(np.arange(n), k)
    graph = sp.csr_matrix((np.ones(n * k), (rows, indices[:, 1:].ravel())), shape=(n, n))
    graph = ((graph + graph.T) > 0).astype(np.float64)
    graph.setdiag(0)
    graph.eliminate_zeros()
    return graph


def graph_spectrum(indices, count):
    """The `count` largest eigenvalues of the normalised adjacency of the kNN graph, in descending order."""
    graph = knn_graph(indices)
    degree = np.asarray(graph.sum(1)).ravel()
    scale = sp.diags(1 / np.sqrt(np.maximum(degree, 1)))
    adjacency = scale @ graph @ scale
    count = min(count, graph.shape[0] - 2)
    v0 = np.random.default_rng(0).standard_normal(graph.shape[0])  # fixed start: the same answer every run
    values = eigsh(adjacency, k=count, which='LA', v0=v0, return_eigenvectors=False)
    return np.sort(values)[::-1]


def estimate_num_clusters(indices, k_range):
    """K in [k_min, k_max] with the largest eigengap; returns (K, {k: gap after the k-th eigenvalue})."""
    k_min, k_max = check_k_range(k_range, len(indices))
    values = graph_spectrum(np.asarray(indices), k_max + 1)
    gaps = {k: float(values[k - 1] - values[k]) for k in range(k_min, min(k_max, len(values) - 1) + 1)}
    return max(gaps, key=gaps.get), gaps


def check_k_range(k_range, n):
    if (not isinstance(k_range, (list, tuple)) or len(k_range) != 2
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in k_range)
            or not 2 <= k_range[0] <= k_range[1]):
        raise UserError(f'k_range must be [min, max] with 2 <= min <= max, got {k_range!r}')
    if k_range[1] + 3 > n:
        raise UserError(f'k_range {list(k_range)} allows more clusters than {n} images can show; lower its max')
    return k_range
