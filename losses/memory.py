"""Losses over a memory bank: instance discrimination, AND and SNCA.

Each takes the batch's L2-normalised features f [b, d], the memory V [N, d] and the batch's dataset
indices [b]; logits are f V^T / temperature, [b, N] (the batch against every sample, never N x N).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class _MemoryLoss(nn.Module):
    """temperature has no default here: the method's kwargs (methods/instdisc.py, and_.py, snca.py) hold it."""

    def __init__(self, temperature):
        super().__init__()
        self.temperature = float(temperature)

    def logits(self, features, memory):
        return features @ memory.T.to(features) / self.temperature


class InstDiscLoss(_MemoryLoss):
    """Instance discrimination: every sample is its own class.

    nce_k = 0: the non-parametric softmax, CE(f V^T / t, index) over all N rows.
    nce_k > 0: noise-contrastive estimation for large N (only b x (nce_k + 1) scores): with
    P(i|f) = exp(v_i f / t) / Z and uniform noise P_n = 1/N, h = P / (P + nce_k / N); the loss is
    -log h(positive) - sum over nce_k uniform noise rows of log(1 - h). Z is estimated once, on the
    first batch (Z = N * mean exp(score)), and kept as a buffer (it is saved with the checkpoint).
    Returns {'total'}.
    """

    def __init__(self, temperature, nce_k):
        super().__init__(temperature)
        self.nce_k = int(nce_k)
        if self.nce_k:  # NaN until the first batch sets it (a checkpoint is only saved after that)
            self.register_buffer('log_z', torch.tensor(float('nan'), dtype=torch.float64))

    def forward(self, features, memory, index, noise=None):
        index = index.to(features.device)
        if self.nce_k == 0:
            return {'total': F.cross_entropy(self.logits(features, memory), index)}
        n = len(memory)
        if noise is None:
            noise = torch.randint(n, (len(features), self.nce_k), device=features.device)
        rows = torch.cat([index.unsqueeze(1), noise.to(features.device)], dim=1)  # [b, 1 + nce_k]
        scores = (memory.to(features)[rows] @ features.unsqueeze(2)).squeeze(2) / self.temperature
        if torch.isnan(self.log_z):
            self.log_z.fill_(float(torch.logsumexp(scores.detach().flatten(), 0) - math.log(scores.numel()) + math.log(n)))
        log_p = scores - self.log_z.to(scores.dtype)
        log_noise = math.log(self.nce_k / n)
        denominator = torch.logaddexp(log_p, torch.full_like(log_p, log_noise))
        positive = log_p[:, 0] - denominator[:, 0]
        negative = (log_noise - denominator[:, 1:]).sum(1)
        return {'total': -(positive + negative).mean()}


class ANDLoss(_MemoryLoss):
    """Anchor neighbourhood discovery. With p = softmax(f V^T / t): a non-anchor i pays -log p_ii; an anchor
    pays -log(p_ii + p_{i, n(i)}), n(i) its neighbour in memory. neighbors [b]: n(i), or -1 for non-anchors.
    Returns {'total', 'anchor_share'}."""

    def forward(self, features, memory, index, neighbors):
        logp = self.logits(features, memory).log_softmax(1)
        rows = torch.arange(len(logp), device=logp.device)
        own = logp[rows, index.to(logp.device)]
        neighbors = neighbors.to(logp.device)
        anchor = neighbors >= 0
        with_neighbor = torch.logaddexp(own, logp[rows, neighbors.clamp_min(0)])
        return {'total': -torch.where(anchor, with_neighbor, own).mean(), 'anchor_share': anchor.float().mean()}


class SNCALoss(_MemoryLoss):
    """Supervised NCA (uses labels): p_i = sum_{j != i, y_j = y_i} exp(s_ij) / sum_{j != i} exp(s_ij),
    s = f V^T / t; loss = -mean log p_i. labels [b], memory_labels [N]. Returns {'total'}."""

    def forward(self, features, memory, index, labels, memory_labels):
        logits = self.logits(features, memory)
        rows = torch.arange(len(logits), device=logits.device)
        logits[rows, index.to(logits.device)] = float('-inf')  # j != i
        same = memory_labels.to(logits.device).unsqueeze(0) == labels.to(logits.device).unsqueeze(1)
        positive = logits.masked_fill(~same, float('-inf')).logsumexp(1)
        return {'total': -(positive - logits.logsumexp(1)).mean()}
