"""Label-free model selection: how well a clustering of the val split agrees with its mined neighbours, without
labels. Every stage that picks a head or an epoch ranks its candidates by one of these."""
import torch

from losses.scan import EPS, entropy


def head_losses(probs, neighbors, entropy_weight=1.0):
    """Each head's SCAN loss on mined pairs, for label-free head selection; pair-wise: memory O(N K C), never N x N.

    probs [H, N, C], neighbors [N, K] (without the samples themselves). Returns [H].
    """
    anchors = probs.unsqueeze(2)  # [H, N, 1, C]
    partners = probs[:, neighbors]  # [H, N, K, C]
    similarity = (anchors * partners).sum(-1)  # [H, N, K]
    consistency = -torch.log(similarity.clamp_min(EPS)).mean((1, 2))
    return consistency - entropy_weight * entropy(probs.mean(1))


def neighbor_agreement(labels, neighbors):
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


def minus_agreement(probs, neighbors):
    """Minus each head's neighbor_agreement of its hard labels: probs [H, N, C], neighbors [N, K] -> [H]."""
    return torch.tensor([-neighbor_agreement(p.argmax(1), neighbors) for p in probs])


# model_selection (both training stages): how a head and an epoch are picked without labels. Each criterion maps the
# val split's per-head probabilities [H, N, C] and its mined neighbors [N, K] to [H], lowest best:
# - val_loss: SCAN's loss on the mined pairs (entropy weight 1);
# - agreement: the hard labels' agreement with the neighbours beyond chance, which sharper predictions alone do not
#   raise (TURTLE's labellings sharpen as they train, lowering SCAN's loss by itself).
# 'last' keeps the last epoch (its head picked by val_loss).
CRITERIA = {'val_loss': head_losses, 'agreement': minus_agreement}
SELECTIONS = (*CRITERIA, 'last')
