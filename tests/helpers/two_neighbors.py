"""A clustering method with a view of its own, in one file (README, "Adding a method"): each anchor is pulled
towards two of its mined neighbours, drawn independently. Its batches carry a view the stage has never named,
'neighbor2'; tests/test_methods.py registers it and trains it with tests/helpers/two_neighbors.yml."""
import torch.nn as nn

from losses.scan import consistency, entropy
from methods.base import ClusteringMethod


class TwoNeighborsLoss(nn.Module):
    """total = consistency(P, Q1) + consistency(P, Q2) - entropy_weight * H(mean_i P_i); anchors, first, second
    [b, C] logits of the anchors and of one neighbour each."""

    def __init__(self, entropy_weight):
        super().__init__()
        self.entropy_weight = entropy_weight

    def forward(self, anchors, first, second):
        p = anchors.softmax(1)
        near, far = consistency(p, first.softmax(1)), consistency(p, second.softmax(1))
        ent = entropy(p.mean(0))
        return {'total': near + far - self.entropy_weight * ent, 'first': near, 'second': far, 'entropy': ent}


class TwoNeighbors(ClusteringMethod):
    loss = TwoNeighborsLoss
    views = ('anchor', 'neighbor', 'neighbor2')
    view_kinds = {'neighbor2': ('neighbor', 'strong')}
    seen = []  # the views of each step's logits (for the test)

    def inputs(self, logits, head, index, context):
        TwoNeighbors.seen.append(sorted(logits))
        return {'anchors': logits['anchor'], 'first': logits['neighbor'], 'second': logits['neighbor2']}
