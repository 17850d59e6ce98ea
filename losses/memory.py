"""Losses over a memory bank (SPEC section 5): instance discrimination, AND and SNCA.

Each takes the batch's L2-normalised features f [b, d], the memory V [N, d] and the batch's dataset
indices [b]; logits are f V^T / temperature, [b, N] (the batch against every sample, never N x N).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class _MemoryLoss(nn.Module):
    def __init__(self, temperature=0.07):
        super().__init__()
        self.temperature = float(temperature)

    def logits(self, features, memory):
        return features @ memory.T.to(features) / self.temperature


class InstDiscLoss(_MemoryLoss):
    """Non-parametric softmax: every sample is its own class, CE(f V^T / t, index). Returns {'loss'}."""

    def forward(self, features, memory, index):
        return {'loss': F.cross_entropy(self.logits(features, memory), index.to(features.device))}


class ANDLoss(_MemoryLoss):
    """Anchor neighbourhood discovery. With p = softmax(f V^T / t): a non-anchor i pays -log p_ii; an anchor
    pays -log(p_ii + p_{i, n(i)}), n(i) its neighbour in memory. neighbors [b]: n(i), or -1 for non-anchors.
    Returns {'loss', 'anchor_share'}."""

    def forward(self, features, memory, index, neighbors):
        logp = self.logits(features, memory).log_softmax(1)
        rows = torch.arange(len(logp), device=logp.device)
        own = logp[rows, index.to(logp.device)]
        neighbors = neighbors.to(logp.device)
        anchor = neighbors >= 0
        with_neighbor = torch.logaddexp(own, logp[rows, neighbors.clamp_min(0)])
        return {'loss': -torch.where(anchor, with_neighbor, own).mean(), 'anchor_share': anchor.float().mean()}


class SNCALoss(_MemoryLoss):
    """Supervised NCA (uses labels): p_i = sum_{j != i, y_j = y_i} exp(s_ij) / sum_{j != i} exp(s_ij),
    s = f V^T / t; loss = -mean log p_i. labels [b], memory_labels [N]. Returns {'loss'}."""

    def forward(self, features, memory, index, labels, memory_labels):
        logits = self.logits(features, memory)
        rows = torch.arange(len(logits), device=logits.device)
        logits[rows, index.to(logits.device)] = float('-inf')  # j != i
        same = memory_labels.to(logits.device).unsqueeze(0) == labels.to(logits.device).unsqueeze(1)
        positive = logits.masked_fill(~same, float('-inf')).logsumexp(1)
        return {'loss': -(positive - logits.logsumexp(1)).mean()}
