"""AND, anchor neighbourhood discovery (Huang et al. 2019): instance discrimination in curriculum rounds
r = 0..and_rounds of `epochs` each (the learning rate restarts every round); in round r the share r / R of
samples with the lowest-entropy memory rows become anchors and also claim their nearest neighbour."""
import torch

from losses.memory import ANDLoss
from methods.memory import MemoryMethod, select_anchors


class AND(MemoryMethod):
    loss = ANDLoss
    settings = {**MemoryMethod.settings, 'and_rounds': 4}  # rounds 0..R (0, 1/R, ..., 100 % anchors), `epochs` each

    def __init__(self, cfg, train_set, device):
        super().__init__(cfg, train_set, device)
        self.labels = torch.as_tensor(train_set.targets)
        self.neighbors = torch.full((len(train_set),), -1, dtype=torch.long)  # -1: not an anchor

    def total_epochs(self):
        return self.cfg.epochs * (self.cfg.and_rounds + 1)

    def start_epoch(self, epoch):
        if epoch % self.cfg.epochs:
            return {}
        return self.start_round(epoch // self.cfg.epochs)

    def start_round(self, round_):
        """Pick this round's anchors; returns their share and, with labels, their neighbours' agreement."""
        self.neighbors = select_anchors(self.bank, round_, self.cfg.and_rounds,
                                        self.cfg.criterion_kwargs['temperature'])
        anchors = torch.nonzero(self.neighbors >= 0).flatten()
        report = {'round': round_, 'anchor_share': round(len(anchors) / len(self.neighbors), 4)}
        if len(anchors) and bool((self.labels >= 0).all()):
            agree = self.labels[anchors] == self.labels[self.neighbors[anchors]]
            report['anchor_agreement'] = round(float(agree.float().mean()), 4)
        return report

    def extra_inputs(self, index):
        return (self.neighbors[index.to(self.neighbors.device)],)

    def memory_state(self):
        return {**super().memory_state(), 'neighbors': self.neighbors}

    def load_state_dict(self, checkpoint):
        super().load_state_dict(checkpoint)
        self.neighbors = checkpoint['memory']['neighbors']
