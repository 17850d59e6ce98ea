"""The memory-bank methods' shared part (instance discrimination, AND, SNCA): a bank of L2-normalised
features for all N samples, updated after every step.

Device-agnostic (it lives where its tensor lives) and chunked: nothing builds an N x N matrix, so
N = 1.28M x 128 fits; only a batch's [b, N] logits, which the losses need, are ever materialised.
"""
import torch
import torch.nn.functional as F

from evaluation.knn import weighted_knn_predict
from methods.base import PretextMethod


class MemoryBank:
    """features [N, d] (rows L2-normalised), updated v_i <- normalise(m v_i + (1 - m) f_i)."""

    def __init__(self, n, dim, device='cpu', momentum=0.5, generator=None):
        # uniform in [-1/sqrt(d/3), 1/sqrt(d/3)], then normalised: the usual instance-discrimination init
        std = 1.0 / (dim / 3) ** 0.5
        init = torch.rand(n, dim, generator=generator) * 2 * std - std
        self.features = F.normalize(init, dim=1).to(device)
        self.momentum = float(momentum)

    def __len__(self):
        return len(self.features)

    @torch.no_grad()
    def update(self, index, features):
        index = index.to(self.features.device)
        mixed = self.momentum * self.features[index] + (1 - self.momentum) * features.detach().to(self.features)
        self.features[index] = F.normalize(mixed, dim=1)

    def logits(self, features, temperature):
        """features [b, d] -> similarities to every memory row / t: [b, N]."""
        return features @ self.features.T.to(features) / temperature

    @torch.no_grad()
    def entropy(self, temperature, chunk=4096):
        """Entropy of softmax(v_i V^T / t) over the other memory rows, for every row i: [N], in chunks.

        The row itself is left out: its similarity 1 would dominate, and isolated samples, not
        samples with a sharp neighbourhood, would have the lowest entropy.
        """
        out = []
        for start in range(0, len(self.features), chunk):
            logits = self.features[start:start + chunk] @ self.features.T / temperature
            rows = torch.arange(len(logits), device=logits.device)
            logits[rows, rows + start] = float('-inf')
            logp = logits.log_softmax(1)
            out.append(-(logp.exp() * logp.masked_fill(torch.isinf(logp), 0)).sum(1))
        return torch.cat(out)

    @torch.no_grad()
    def nearest(self, index, chunk=4096):
        """For the rows `index`, their most similar other row in memory: [len(index)]."""
        index = index.to(self.features.device)
        out = []
        for start in range(0, len(index), chunk):
            rows = index[start:start + chunk]
            sims = self.features[rows] @ self.features.T
            sims[torch.arange(len(rows), device=sims.device), rows] = float('-inf')
            out.append(sims.argmax(1))
        return torch.cat(out)

    def knn_predict(self, query, labels, num_classes, k=200, temperature=0.1, exclude_self=False):
        """Weighted kNN of `query` [M, d] against the memory (labels [N])."""
        return weighted_knn_predict(query, self.features, labels, num_classes, k, temperature, exclude_self)

    def state_dict(self):
        return {'features': self.features.cpu(), 'momentum': self.momentum}

    def load_state_dict(self, state):
        self.features = state['features'].to(self.features.device)
        self.momentum = state['momentum']


def select_anchors(bank, round_, rounds, temperature):
    """AND's curriculum: in round r of R, the floor(N r / R) rows with the lowest entropy over the memory
    become anchors, each linked to its nearest other row. Returns neighbours [N] (-1 = not an anchor)."""
    n = len(bank)
    count = n * round_ // rounds
    neighbors = torch.full((n,), -1, dtype=torch.long)
    if count > 0:
        anchors = bank.entropy(temperature).argsort()[:count]
        neighbors[anchors.cpu()] = bank.nearest(anchors).cpu()
    return neighbors


class MemoryMethod(PretextMethod):
    """A pretext method over a memory bank of all N training features: one view per image; its loss takes
    the batch's features f [b, d], the memory V [N, d], the batch's indices [b] and extra_inputs(index)."""
    views = 1
    kwargs = {'temperature': 0.1}
    settings = {'memory_momentum': 0.5}  # the bank's update: v <- normalise(m v + (1 - m) f)

    def __init__(self, cfg, train_set, device):
        super().__init__(cfg, train_set, device)
        self.bank = MemoryBank(len(train_set), cfg.model_kwargs['features_dim'], device, cfg.memory_momentum)

    def extra_inputs(self, index):
        return ()

    def step_loss(self, z, index):
        return self.criterion(z[:, 0], self.bank.features, index, *self.extra_inputs(index))

    def after_step(self, z, index):
        self.bank.update(index, z[:, 0])

    def memory_state(self):
        return {'bank': self.bank.state_dict()}

    def state_dict(self):
        return {**super().state_dict(), 'memory': self.memory_state()}

    def load_state_dict(self, checkpoint):
        super().load_state_dict(checkpoint)
        self.bank.load_state_dict(checkpoint['memory']['bank'])
