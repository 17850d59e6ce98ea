"""SCAN's self-labelling loss: cross-entropy on confident pseudo-labels (SPEC section 3)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ConfidenceBasedCE(nn.Module):
    """Cross-entropy of strong-view logits against the weak view's confident predictions.

    Args:
        threshold: a sample counts when max softmax(weak) > threshold.
        apply_class_balancing: weight class c by n_confident / count_c (counts inside the mask).
    Shape:
        weak, strong: [b, C] logits (weak is treated as a constant).
    Returns {'total': scalar or None when no sample is confident, 'confident': number of confident samples}.
    """

    def __init__(self, threshold=0.99, apply_class_balancing=True):
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
        target = target[mask]
        if self.apply_class_balancing:
            counts = torch.bincount(target, minlength=weak.shape[1]).float()
            weight = n / counts.clamp_min(1)  # only classes present in the mask are ever looked up
        else:
            weight = torch.ones(weak.shape[1], device=weak.device)
        per_sample = F.cross_entropy(strong[mask], target, reduction='none')
        w = weight[target].to(per_sample.dtype)
        return {'total': (w * per_sample).sum() / w.sum(), 'confident': n}
