"""Clustering metrics, in one place for every stage and eval.py. Labels are used only to report."""
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def contingency(pred, targets, num_clusters, num_classes):
    """counts[c, k] = number of samples in cluster c with label k, [num_clusters, num_classes] (an empty cluster or
    class keeps its row or column, which sklearn's contingency_matrix drops: the Hungarian mapping needs them)."""
    counts = np.zeros((num_clusters, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(pred), np.asarray(targets)), 1)
    return counts


def hungarian_mapping(pred, targets, num_clusters, num_classes):
    """The one-to-one cluster -> class mapping with the most agreements (unmatched clusters map to -1)."""
    counts = contingency(pred, targets, num_clusters, num_classes)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = np.full(num_clusters, -1, dtype=np.int64)
    mapping[rows] = cols
    return mapping


def cluster_metrics(pred, targets, probs=None, num_classes=None):
    """ACC (Hungarian), NMI, ARI, top-5 accuracy after matching, and majority-vote accuracy.

    pred [N] cluster ids, targets [N] labels (all >= 0), probs [N, C] optional (for top-5).
    With more clusters than classes (over-clustering) `acc` counts samples of unmatched
    clusters as wrong and `majority_acc` maps every cluster to its most frequent class.
    """
    pred, targets = np.asarray(pred), np.asarray(targets)
    num_classes = num_classes or int(targets.max()) + 1
    num_clusters = max(int(pred.max()) + 1, probs.shape[1] if probs is not None else 0, num_classes)
    mapping = hungarian_mapping(pred, targets, num_clusters, num_classes)
    out = {'acc': float((mapping[pred] == targets).mean()),
           'nmi': float(normalized_mutual_info_score(targets, pred)),
           'ari': float(adjusted_rand_score(targets, pred))}
    if probs is not None:
        # rank clusters by probability, read each as its matched class
        top = np.argsort(-np.asarray(probs), axis=1)[:, :5]
        out['top5'] = float((mapping[top] == targets[:, None]).any(1).mean())
    if num_clusters > num_classes:
        majority = contingency(pred, targets, num_clusters, num_classes).argmax(1)
        out['majority_acc'] = float((majority[pred] == targets).mean())
    return out
