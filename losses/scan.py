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


def head_losses(probs, neighbors, entropy_weight=1.0):
    """Each head's SCAN loss on mined pairs, for label-free head selection; pair-wise: memory O(N K C), never N x N.

    probs [H, N, C], neighbors [N, K] (without the samples themselves). Returns [H].
    """
    anchors = probs.unsqueeze(2)  # [H, N, 1, C]
    partners = probs[:, neighbors]  # [H, N, K, C]
    similarity = (anchors * partners).sum(-1)  # [H, N, K]
    consistency = -torch.log(similarity.clamp_min(EPS)).mean((1, 2))
    return consistency - entropy_weight * entropy(probs.mean(1))


def neighbour_agreement(labels, neighbors):
    """Cohen's kappa between each sample's cluster and its mined neighbours' clusters: (a - e) / (1 - e), a the
    share of pairs in one cluster, e the share expected by chance from the cluster sizes (sum_c p_c q_c, anchors'
    and partners' shares). Label-free like head_losses, but on hard labels, so sharper predictions alone do not
    raise it; one cluster for everything scores 0. labels [N] ints, neighbors [N, K] (without the samples)."""
    partners = labels[neighbors]  # [N, K]
    agree = (partners == labels.unsqueeze(1)).double().mean()
    n = int(labels.max()) + 1
    p = torch.bincount(labels, minlength=n).double() / labels.numel()
    q = torch.bincount(partners.reshape(-1), minlength=n).double() / partners.numel()
    chance = (p * q).sum()
    return float((agree - chance) / (1 - chance)) if chance < 1 else 0.0


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
