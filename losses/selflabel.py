"""Self-labelling losses: cross-entropy on confident pseudo-labels (SCAN), or on pseudo-labels
chosen beforehand (per-cluster selection)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from losses.scan import entropy


class ConfidenceBasedCE(nn.Module):
    """Cross-entropy of strong-view logits against the weak view's confident predictions.

    Args:
        threshold: a sample counts when max softmax(weak) > threshold.
        apply_class_balancing: weight class c by n_confident / count_c (counts inside the mask).
    Shape:
        weak, strong: [b, C] logits (weak is treated as a constant).
    Returns {'total': scalar or None when no sample is confident, 'confident': number of confident samples}.
    """

    def __init__(self, threshold, apply_class_balancing):
        super().__init__()
        self.threshold = float(threshold)
        self.apply_class_balancing = bool(apply_class_balancing)

    def forward(self, weak, strong):
        probs = weak.detach().softmax(1)
        confidence, target = probs.max(1)
        mask = confidence > self.threshold
        n = int(mask.sum())
        if n == 0:
            return {'total': None, 'confident': 0}
        loss = balanced_cross_entropy(strong[mask], target[mask], weak.shape[1], self.apply_class_balancing)
        return {'total': loss, 'confident': n}


def balanced_cross_entropy(logits, target, num_classes, balance):
    """Mean cross-entropy of logits [n, C] against target [n], each class weighted by n / count_c when `balance`
    (counts inside the n samples), so that every cluster weighs the same."""
    per_sample = F.cross_entropy(logits, target, reduction='none')
    if not balance:
        return per_sample.mean()
    counts = torch.bincount(target, minlength=num_classes).to(per_sample.dtype)
    w = (len(target) / counts.clamp_min(1))[target]  # only classes present are looked up
    return (w * per_sample).sum() / w.sum()


class SelectedCE(nn.Module):
    """Cross-entropy of strong-view logits against pseudo-labels chosen before the epoch.

    Args:
        apply_class_balancing: weight class c by n_used / count_c (counts among the batch's used samples).
        entropy_weight: minus this times the entropy of the batch's mean strong-view prediction (all samples),
            SCAN's term against clusters merging; 0 leaves the cross-entropy alone.
    Shape:
        strong: [b, C] logits; target: [b] pseudo-labels; use: [b] bool, the samples that count.
    Returns {'total': scalar or None when no sample of the batch is used, 'confident': number used}.
    """

    def __init__(self, apply_class_balancing, entropy_weight):
        super().__init__()
        self.apply_class_balancing = bool(apply_class_balancing)
        self.entropy_weight = float(entropy_weight)

    def forward(self, strong, target, use):
        n = int(use.sum())
        if n == 0:
            return {'total': None, 'confident': 0}
        loss = balanced_cross_entropy(strong[use], target[use].to(strong.device), strong.shape[1],
                                      self.apply_class_balancing)
        if self.entropy_weight:
            loss = loss - self.entropy_weight * entropy(strong.softmax(1).mean(0))
        return {'total': loss, 'confident': n}
