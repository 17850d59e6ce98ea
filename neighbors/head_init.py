"""Where clustering heads start (head_init): each head a nearest-centroid classifier on the train split's features
under the heads, with centroids from
- kmeans: k-means (head h: seed cfg.seed + h, so the heads differ; on more than KMEANS_SAMPLE images, fitted on a
  random sample of that many drawn with the same seed);
- graph: the means of the clusters of the mined neighbors' shared-neighbor graph (the K estimate's partition with
  exactly num_classes clusters, Louvain seed cfg.seed + h; neighbors/num_clusters.graph_clusters); a head whose
  partition does not hold num_classes clusters starts from k-means."""
import numpy as np
import torch

from neighbors.num_clusters import graph_clusters

INITS = {'kmeans': 'k-means', 'graph': 'the clusters of the neighbour graph'}
KMEANS_SAMPLE = 20_000  # k-means fits at most this many train features: on 50,000 1,280-d vectors, 5 heads in 28 s
# instead of 120 s, each head's mean squared distance within 0.04 % of the fit on all


def head_centroids(features, cfg):
    """[(centroids [num_classes, D], softness)] per head, for features [N, D] (float64); the softness is the mean
    squared distance of the features to their nearest centroid."""
    seeds = [cfg.seed + h for h in range(cfg.num_heads)]
    if cfg.head_init == 'graph':
        labellings = graph_clusters(np.load(cfg.topk_neighbors_train_path), cfg.num_classes, cfg.k_median, seeds)
    starts = []
    for h, seed in enumerate(seeds):
        if cfg.head_init == 'graph' and labellings[h].max() + 1 == cfg.num_classes:
            labels = torch.as_tensor(labellings[h])
            centroids = torch.zeros(cfg.num_classes, features.shape[1], dtype=features.dtype).index_add_(
                0, labels, features) / torch.bincount(labels)[:, None]
        else:
            if cfg.head_init == 'graph':
                print(f'note: head {h}: the neighbour graph holds {labellings[h].max() + 1} clusters, not '
                      f'{cfg.num_classes}: the head starts from k-means')
            centroids = kmeans_centroids(features, cfg.num_classes, seed)
        starts.append((centroids, torch.cdist(features, centroids).min(1).values.pow(2).mean().item()))
    return starts


def kmeans_centroids(features, k, seed):
    """k-means centroids [k, D] of features [N, D] (fitted on a sample of KMEANS_SAMPLE when there are more)."""
    from sklearn.cluster import KMeans  # only this option needs scikit-learn's k-means
    sample = features
    if len(features) > KMEANS_SAMPLE:
        sample = features[np.random.default_rng(seed).choice(len(features), KMEANS_SAMPLE, replace=False)]
    return torch.as_tensor(KMeans(k, n_init=3, random_state=seed).fit(sample.numpy()).cluster_centers_)
