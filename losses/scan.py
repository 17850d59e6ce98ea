"""SCAN's and NNM's clustering losses. Inputs are logits of one head."""
import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-8


def entropy(p):
    """H(p) = -sum_c p_c log max(p_c, 1e-8) over the last dim; p [..., C] probabilities."""
    return -(p * torch.log(p.clamp_min(EPS))).sum(-1)


def consistency(a, b):
    """-mean_i log <a_i, b_i> for probabilities a, b [n, C]."""
    return -torch.log((a * b).sum(1).clamp_min(EPS)).mean()


def cluster_contrast(a, b):
    """Columns of a and b [n, C] (clusters), L2-normalised over the rows, should match column for column:
    cross_entropy(a_hat^T b_hat [C, C], [0..C-1])."""
    logits = F.normalize(a, dim=0).T @ F.normalize(b, dim=0)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


class SCANLoss(nn.Module):
    """SCAN: L = -(1/b) sum_i log <P_i, Q_i> - entropy_weight * H(mean_i P_i).

    Shape: anchors, neighbors [b, C] logits. Returns {'total', 'consistency', 'entropy'}.
    """

    def __init__(self, entropy_weight):
        super().__init__()
        self.entropy_weight = float(entropy_weight)

    def forward(self, anchors, neighbors):
        p, q = anchors.softmax(1), neighbors.softmax(1)
        cons = consistency(p, q)
        ent = entropy(p.mean(0))
        return {'total': cons - self.entropy_weight * ent, 'consistency': cons, 'entropy': ent}


def batch_nearest(features):
    """For each row of features [b, D], the index of the nearest other row (L2)."""
    d = torch.cdist(features.float(), features.float())
    d.fill_diagonal_(float('inf'))
    return d.argmin(1)


class NNMLoss(nn.Module):
    """NNM: SCAN's pair, a second strong view of the anchor, in-batch and dataset-level neighbours.

    Shape: anchors, neighbors, second [b, C] logits (anchor, its mined neighbour, a second strong
    view of the anchor); features [b, D] backbone features of the anchors; global_probs [b, C] the
    stored probabilities of each anchor's dataset-level nearest neighbour, or None (first epoch).
    A = cat(P_a, P_s), B = cat(P_n, P_a[nearest in batch]);
    total = consistency(A, B) + contrast(A, B) [+ consistency(S, G4) + contrast(S, G4)] - w H(mean A),
    with S = cat(A, B), G4 = global_probs repeated 4 times.
    Returns {'total', 'consistency', 'contrast', 'global', 'entropy'}.
    """

    def __init__(self, entropy_weight):
        super().__init__()
        self.entropy_weight = float(entropy_weight)

    def forward(self, anchors, neighbors, second, features, global_probs=None):
        p_a, p_n, p_s = anchors.softmax(1), neighbors.softmax(1), second.softmax(1)
        idx = batch_nearest(features.detach())
        a = torch.cat([p_a, p_s])
        b = torch.cat([p_n, p_a[idx]])
        cons = consistency(a, b)
        contrast = cluster_contrast(a, b)
        glob = torch.zeros((), device=anchors.device)
        if global_probs is not None:
            s = torch.cat([a, b])
            g4 = global_probs.to(s.dtype).repeat(4, 1)
            glob = consistency(s, g4) + cluster_contrast(s, g4)
        ent = entropy(a.mean(0))
        total = cons + contrast + glob - self.entropy_weight * ent
        return {'total': total, 'consistency': cons, 'contrast': contrast, 'global': glob, 'entropy': ent}
