"""SNCA (Wu et al. 2018): supervised neighbourhood components analysis over a memory bank. It uses labels:
its neighbours are an upper bound of what clustering can reach, not a clustering result."""
import torch

from losses.memory import SNCALoss
from methods.memory import MemoryMethod
from utils.errors import UserError


class SNCA(MemoryMethod):
    loss = SNCALoss
    supervised = True

    def __init__(self, cfg, train_set, device):
        if not train_set.has_labels:
            raise UserError('setup snca is supervised: it needs a labelled train split')
        super().__init__(cfg, train_set, device)
        self.labels = torch.as_tensor(train_set.targets)

    def extra_inputs(self, index):
        return self.labels[index.to(self.labels.device)], self.labels
