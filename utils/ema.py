"""Exponential moving average of a model's weights (self-labelling's use_ema, TEMI's teacher)."""
import copy

import torch


class EMA:
    """shadow <- decay * shadow + (1 - decay) * weights after every step; buffers (BatchNorm statistics)
    are copied. `shadow` is a full model, to evaluate and save in place of the trained one."""

    def __init__(self, model, decay=0.999):
        self.decay = float(decay)
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)
