"""The number of clusters, without labels, from the mined neighbours: communities of the shared-neighbour graph,
the small ones merged into the community they are most connected to, the large ones split.

1. The graph (PhenoGraph's): images i and j are joined when one is among the other's mined neighbours, with the
   weight |N(i) & N(j)| / |N(i) | N(j)| (N: the neighbour list with the image itself), so an edge backed by many
   shared neighbours counts more than a stray one.
2. Louvain (igraph's, in C; resolution 0.5, a fixed seed) splits it into communities of high modularity,
   Q = sum_c [w_c / W - g (d_c / 2W)^2] (w_c: weight inside c, d_c: its degree, W: all weight).
3. Features separate handwriting styles and poses as well as classes, and such a sub-style shows up as a small
   community that the graph links to nothing in particular. While the smallest community holds fewer than
   MIN_SHARE times the median community size, it is merged into the community whose links go to it the most (as a
   share of that community's degree).
   Then, the same size rule the other way: while the largest cluster holds more than the median size / MIN_SHARE
   (two classes Louvain joined), it is split in two along its own communities. K is the number left, kept within
   k_range (above k_max the pair whose merge keeps modularity highest is merged next, down to k_max; fewer than
   k_min communities give k_min).
4. The median those sizes are shares of (k_median): on features trained on the images themselves, a class falls
   into sub-style fragments, which merge one after another, so the median is taken again after every merge and
   split ('clusters'). On a frozen pretrained backbone's features, photo classes join in pairs (car and truck,
   cat and dog) and differ in size; re-taking the median after each merge let one merge raise the bar for the next
   until real classes are folded. There the bounds are shares of
   the median of the communities Louvain found, fixed, and each cluster over it is split once ('communities').

The same partition, with k_range [K, K], starts the clustering heads (head_init: graph, graph_clusters).

On photos the count follows Louvain's resolution and seed more than the classes, so scan.py also reports the range
of counts over other seeds and a finer resolution (SPREAD); with `num_classes` given nothing is estimated.
"""
import random

import igraph
import numpy as np
import scipy.sparse as sp

from utils.errors import UserError

RESOLUTION = 0.5
MIN_SHARE = 0.7
MEDIANS = ('clusters', 'communities')
# how sure the estimate is: the K of the same rule over other Louvain seeds and a finer resolution, besides the
# estimate's own (seed 0, RESOLUTION); (seed, resolution) pairs
SPREAD = ((1, RESOLUTION), (2, RESOLUTION), (0, 0.75), (1, 0.75), (2, 0.75))


def knn_graph(indices):
    """Neighbour lists [N, 1 + k] (column 0: the sample itself) -> the symmetric 0/1 kNN graph, sparse [N, N]."""
    n, k = indices.shape[0], indices.shape[1] - 1
    rows = np.repeat(np.arange(n), k)
    graph = sp.csr_matrix((np.ones(n * k), (rows, indices[:, 1:].ravel())), shape=(n, n))
    graph = ((graph + graph.T) > 0).astype(np.float64)
    graph.setdiag(0)
    graph.eliminate_zeros()
    return graph


SHARED_CHUNK = 65536  # rows of the shared-neighbour counts computed at a time: memory stays linear in N


def shared_neighbor_graph(indices, chunk=SHARED_CHUNK):
    """The kNN graph with each edge weighted by the Jaccard overlap of the two neighbour lists (self included).
    The overlaps are counted `chunk` rows at a time, only for the graph's edges: time and memory grow as N (all
    pairs sharing a neighbour at once would be N x (k + 1)^2 entries: 5 GB at a million images)."""
    n, width = indices.shape
    member = sp.csr_matrix((np.ones(n * width), (np.repeat(np.arange(n), width), indices.ravel())), shape=(n, n))
    member.data[:] = 1.0  # a repeated index counts once
    member_t = member.T.tocsc()
    size = np.asarray(member.sum(1)).ravel()
    graph = knn_graph(indices).tocsr()
    graph.sort_indices()
    common = np.empty(graph.nnz)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        lo, hi = graph.indptr[start], graph.indptr[stop]
        rows = np.repeat(np.arange(stop - start), np.diff(graph.indptr[start:stop + 1]))
        common[lo:hi] = np.asarray((member[start:stop] @ member_t)[rows, graph.indices[lo:hi]]).ravel()
    rows = np.repeat(np.arange(n), np.diff(graph.indptr))
    graph.data = common / (size[rows] + size[graph.indices] - common)
    return graph


def community_links(graph, labels, k):
    """links[a, b]: the graph's weight between communities a and b (both ends counted on the diagonal)."""
    member = sp.csr_matrix((np.ones(len(labels)), (np.arange(len(labels)), labels)), shape=(len(labels), k))
    return (member.T @ graph @ member).toarray()


def merge(links, labels, a, b):
    """Community b joins a (in place for labels); returns the reduced links."""
    links[a] += links[b]
    links[:, a] += links[:, b]
    labels[labels == b] = a
    labels[labels > b] -= 1
    return np.delete(np.delete(links, b, 0), b, 1)


def merge_small(graph, labels, min_share, k_min, reference=None):
    """While the smallest community holds fewer than min_share times the reference size (and more than k_min
    remain), merge it into the community it is most linked to relative to that community's own degree (the share of
    the partner's links that go to it: raw weight would pull every small community into the largest). The reference
    is `reference`, or when None the median size of the communities left, taken again after every merge. Returns
    (labels, the last bound)."""
    labels = labels.copy()
    links = community_links(graph, labels, labels.max() + 1)
    while len(links) > k_min:
        sizes = np.bincount(labels, minlength=len(links))
        small = int(np.argmin(sizes))
        if sizes[small] >= min_share * (reference or np.median(sizes)):
            break
        share = links[small] / np.maximum(links.sum(1), 1e-12)
        partner = np.where(np.arange(len(links)) == small, -np.inf, share)
        keep, gone = sorted((small, int(np.argmax(partner))))
        links = merge(links, labels, keep, gone)
    return labels, min_share * float(reference or np.median(np.bincount(labels)))


def bisect(graph, labels, c, resolution=RESOLUTION):
    """Split cluster c in two (labels in place; the second part gets a new label): Louvain on its own subgraph, then
    the merges that keep modularity highest down to two parts. False when it is one community: nothing to split."""
    members = np.flatnonzero(labels == c)
    sub = graph[members][:, members]
    parts = louvain(sub, resolution)
    if parts.max() == 0:
        return False
    if parts.max() > 1:
        parts = modularity_path(sub, parts, 2, resolution)[2][1]
    labels[members[parts == 1]] = labels.max() + 1
    return True


def split_large(graph, labels, min_share, k_max, resolution=RESOLUTION, reference=None):
    """While a cluster holds more than the reference size / min_share (the size rule of merge_small the other way
    round: two classes that Louvain joined) and fewer than k_max clusters exist, bisect it. With reference None the
    largest cluster is split while it is over the median size / min_share, the median taken again after every
    split; with a reference each cluster over the bound is split once, largest first (a fixed bound would otherwise
    cut one large class again and again). Returns (labels, the last bound)."""
    labels = labels.copy()
    if reference:
        bound = reference / min_share
        for c in np.argsort(-np.bincount(labels)):  # the clusters as they are now, each once
            if labels.max() + 1 >= k_max or np.count_nonzero(labels == c) <= bound:
                break
            bisect(graph, labels, c, resolution)
        return labels, float(bound)
    while labels.max() + 1 < k_max:
        sizes = np.bincount(labels)
        big = int(np.argmax(sizes))
        if sizes[big] <= np.median(sizes) / min_share or not bisect(graph, labels, big, resolution):
            break
    return labels, float(np.median(np.bincount(labels))) / min_share


def louvain(graph, resolution=RESOLUTION, seed=0):
    """Louvain communities of a sparse symmetric graph as labels [N] (igraph's multilevel method, in C; a fixed
    seed: the same answer every run)."""
    upper = sp.triu(graph, k=1).tocoo()
    g = igraph.Graph(n=graph.shape[0], edges=np.column_stack([upper.row, upper.col]), directed=False)
    igraph.set_random_number_generator(random.Random(seed))
    try:
        parts = g.community_multilevel(weights=upper.data, resolution=resolution)
    finally:
        igraph.set_random_number_generator(random)
    return np.asarray(parts.membership, dtype=np.int64)


def modularity_path(graph, labels, k_min, resolution=RESOLUTION):
    """From a partition, merge the pair of communities that keeps modularity highest until k_min remain;
    returns {number of communities: (modularity, labels [N])}."""
    labels = labels.copy()
    links = community_links(graph, labels, labels.max() + 1)
    total = links.sum()  # 2W
    path = {}
    while True:
        degree = links.sum(1)
        path[len(links)] = (float(np.trace(links) / total - resolution * np.sum((degree / total) ** 2)),
                            labels.copy())
        if len(links) <= k_min:
            return path
        # merging a and b changes Q by 2 links[a, b] / 2W - 2 g d_a d_b / (2W)^2
        gain = 2 * links / total - 2 * resolution * np.outer(degree, degree) / total ** 2
        np.fill_diagonal(gain, -np.inf)
        a, b = sorted(np.unravel_index(np.argmax(gain), gain.shape))
        links = merge(links, labels, a, b)


def estimate_num_clusters(indices, k_range, median='clusters', resolution=RESOLUTION, min_share=MIN_SHARE,
                          spread=()):
    """K within k_range (above), and a report: the sizes of the communities Louvain found and of the clusters left
    after merging and splitting, largest first, and the sizes below which a community was merged (min_size) and
    above which a cluster was split (max_size). median: what the size bounds are shares of, the median size of the
    clusters as they are merged and split ('clusters') or of the communities Louvain found ('communities').
    spread: other (Louvain seed, resolution) pairs (e.g. SPREAD) to run the same rule with; the report's 'k_spread'
    then holds every partition's K, the estimate's first, and their range: how sure the estimate is."""
    k_min, k_max = check_k_range(k_range, len(indices))
    graph = shared_neighbor_graph(np.asarray(indices))
    labels, report = partition(graph, (k_min, k_max), median, resolution, min_share)
    k = max(int(labels.max()) + 1, k_min)
    if spread:
        ks = [k] + [max(int(partition(graph, (k_min, k_max), median, r, min_share, seed=s)[0].max()) + 1, k_min)
                    for s, r in spread]
        report['k_spread'] = {'partitions': [[0, resolution], *map(list, spread)], 'k': ks,
                              'range': [min(ks), max(ks)]}
    return k, report


def spread_words(report):
    """The K estimate's certainty in words, from its report's k_spread ('' without one)."""
    spread = report.get('k_spread')
    if not spread:
        return ''
    low, high = spread['range']
    seeds = sorted({s for s, _ in spread['partitions']})
    resolutions = sorted({r for _, r in spread['partitions']})
    over = (f"{len(spread['k'])} partitions of the neighbour graph (Louvain seeds {seeds[0]}-{seeds[-1]}, resolutions "
            f"{', '.join(f'{r:g}' for r in resolutions)})")
    if low == high:
        return f'all {over} give K = {low}'
    return f'unsure: {over} give K from {low} to {high}; give num_classes=K if you know it'



def partition(graph, k_range, median='clusters', resolution=RESOLUTION, min_share=MIN_SHARE, seed=0):
    """The clusters of the shared-neighbour graph within k_range (steps 2-4 above) as labels [N], and the report of
    estimate_num_clusters."""
    if median not in MEDIANS:
        raise UserError(f"clustering.k_median must be one of {', '.join(MEDIANS)}, got {median!r}")
    k_min, k_max = k_range
    labels = louvain(graph, resolution, seed)
    sizes = np.bincount(labels)
    reference = float(np.median(sizes)) if median == 'communities' else None
    labels, min_size = merge_small(graph, labels, min_share, k_min, reference)
    labels, max_size = split_large(graph, labels, min_share, k_max, resolution, reference)
    if labels.max() + 1 > k_max:
        labels = modularity_path(graph, labels, k_max, resolution)[k_max][1]
    report = {'k_range': [k_min, k_max], 'community_sizes': sorted(sizes.tolist(), reverse=True),
              'min_size': round(min_size, 1), 'max_size': round(max_size, 1),
              'cluster_sizes': sorted(np.bincount(labels).tolist(), reverse=True)}
    return labels, report


def graph_clusters(indices, k, median='clusters', seeds=(0,)):
    """Exactly k clusters of the mined neighbours, one labelling [N] per Louvain seed: the K estimate's partition
    with k_range [k, k], and while fewer than k clusters are left, the largest one that has communities of its own
    bisected (the clustering heads' start with head_init: graph). Fewer than k only when no cluster splits."""
    graph = shared_neighbor_graph(np.asarray(indices))
    found = []
    for seed in seeds:
        labels = partition(graph, (k, k), median, seed=seed)[0]
        while labels.max() + 1 < k and any(bisect(graph, labels, c) for c in np.argsort(-np.bincount(labels))):
            pass  # one bisection per pass, largest cluster that splits first
        found.append(labels)
    return found


def check_k_range(k_range, n):
    """(k_min, k_max); a max above n / 2 (clusters of one image) is lowered to n // 2 with a note, so that the
    template's range suits a folder of a few dozen images."""
    if (not isinstance(k_range, (list, tuple)) or len(k_range) != 2
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in k_range)
            or not 2 <= k_range[0] <= k_range[1]):
        raise UserError(f'clustering.k_range must be [min, max] with 2 <= min <= max, got {k_range!r}: give e.g. '
                        'clustering.k_range=[2,20]')
    if k_range[0] * 2 > n:
        raise UserError(f'k_range {list(k_range)} asks for at least {k_range[0]} clusters of {n} images; '
                        f'give clustering.k_range=[2,{max(n // 2, 2)}] (or num_classes=K)')
    if k_range[1] * 2 > n:
        print(f'note: k_range max lowered from {k_range[1]} to {n // 2}: {n} images cannot show more clusters')
        return k_range[0], n // 2
    return tuple(k_range)
