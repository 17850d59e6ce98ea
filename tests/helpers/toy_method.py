"""A toy clustering method in one file, the way a new method is added (README, "Adding a method"): neighbours'
probability vectors should be close in squared L2, clusters used evenly. tests/test_methods.py registers it."""
import torch
import torch.nn as nn

from losses.scan import entropy
from methods.base import ClusteringMethod


class SquaredDistanceLoss(nn.Module):
    """total = mean_i ||P_i - Q_i||^2 - entropy_weight * H(mean_i P_i); anchors, neighbors [b, C] logits."""

    def __init__(self, entropy_weight):
        super().__init__()
        self.entropy_weight = entropy_weight

    def forward(self, anchors, neighbors):
        p, q = anchors.softmax(1), neighbors.softmax(1)
        distance = (p - q).pow(2).sum(1).mean()
        ent = entropy(p.mean(0))
        return {'total': distance - self.entropy_weight * ent, 'distance': distance, 'entropy': ent}


class Toy(ClusteringMethod):
    loss = SquaredDistanceLoss
    kwargs = {'entropy_weight': 1.0}
    val_calls = 0

    def val_losses(self, probs, neighbors):
        """Its own label-free criterion: the mean squared distance over mined val pairs, per head."""
        Toy.val_calls += 1
        return (probs.unsqueeze(2) - probs[:, neighbors]).pow(2).sum(-1).mean((1, 2))
