"""SimCLR's NT-Xent loss."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class SimCLRLoss(nn.Module):
    """NT-Xent over two views.

    Args:
        temperature: t in exp(s / t).
        symmetric: every one of the 2b views is an anchor (standard SimCLR); False keeps
            SCAN's variant, where only view 0 anchors (b anchors, 2b - 1 candidates each).
    Shape:
        z: [b, 2, d], rows L2-normalised. Returns {'total'}.
    Loss per anchor i: -log( exp(s_pos / t) / sum_{j != i} exp(s_ij / t) ).
    """

    def __init__(self, temperature, symmetric):
        super().__init__()
        self.temperature = float(temperature)
        self.symmetric = bool(symmetric)

    def forward(self, z):
        if z.dim() != 3 or z.shape[1] != 2:
            raise ValueError(f'SimCLRLoss expects z of shape [b, 2, d], got {tuple(z.shape)}')
        b = z.shape[0]
        views = torch.cat([z[:, 0], z[:, 1]])  # [2b, d]: all first views, then all second views
        logits = views @ views.T / self.temperature  # [2b, 2b]
        logits.fill_diagonal_(float('-inf'))
        idx = torch.arange(b, device=z.device)
        positives = torch.cat([idx + b, idx])  # the other view of the same image
        if not self.symmetric:
            return {'total': F.cross_entropy(logits[:b], positives[:b])}
        return {'total': F.cross_entropy(logits, positives)}
