"""TURTLE (Gadetsky, Jiang and Brbic, ICML 2024): each head is a task encoder whose labelling of the images a linear
classifier on the features should learn best (losses/turtle.py). Mined neighbours are not used: the anchors of each
batch are the images.

Per step, before the loss, every head gets its inner learner: a linear classifier on the anchors' features fitted
to the head's current labelling with inner_steps Adam steps (inner_lr). Cold start (the paper's default: a new
classifier each step) begins it at zero here, not at random as the authors' code does, so every process of a
torchrun job fits the same one (on a CIFAR-10 train folder the two starts differed by 0.01); warm_start: true keeps each
head's classifier and its optimiser from step to step (and in the checkpoint). The heads are weight-normalised while
they train (weight_norm: true, the paper's task encoder; models.ClusteringModel.normalise_heads); the model file
holds their plain weights.
"""
import torch
import torch.nn as nn

from losses.turtle import TURTLELoss, fit_linear
from methods.base import ClusteringMethod
from utils.distributed import gather


class TURTLE(ClusteringMethod):
    loss = TURTLELoss
    kwargs = {'entropy_weight': 10.0, 'inner_steps': 10, 'inner_lr': 0.001, 'warm_start': False, 'weight_norm': True}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.inner, self.saved = None, None

    def build(self, model):
        if self.cfg.criterion_kwargs['weight_norm']:  # the paper's task encoder ("crucial" in the authors' code)
            model.normalise_heads()

    def build_loss(self, cfg):
        return TURTLELoss(cfg.criterion_kwargs['entropy_weight'])

    def learners(self, heads, device):
        """One (linear classifier, Adam) per head: fresh at zero each step, or kept with warm_start."""
        kw = self.cfg.criterion_kwargs
        if self.inner is not None and kw['warm_start']:
            return self.inner
        self.inner = []
        for head in heads:
            classifier = nn.Linear(head.in_features, head.out_features).to(device)
            nn.init.zeros_(classifier.weight)
            nn.init.zeros_(classifier.bias)
            self.inner.append((classifier, torch.optim.Adam(classifier.parameters(), lr=kw['inner_lr'])))
        if self.saved is not None:  # resumed with warm_start: the checkpoint's classifiers
            for (classifier, optimizer), state in zip(self.inner, self.saved):
                classifier.load_state_dict(state['classifier'])
                optimizer.load_state_dict(state['optimizer'])
            self.saved = None
        return self.inner

    def step_context(self, model, batch, features, device):
        x = gather(features[0].detach().float())  # the anchors of the global batch
        predicted = []
        for head, (classifier, optimizer) in zip(model.cluster_head, self.learners(model.cluster_head, device)):
            with torch.no_grad():
                labels = head(x).float().softmax(1)
            with torch.enable_grad():
                fit_linear(classifier, optimizer, x, labels, self.cfg.criterion_kwargs['inner_steps'])
            with torch.no_grad():
                predicted.append(classifier(x))
        return predicted

    def inputs(self, logits, head, index, context):
        return {'labels': logits[0], 'predicted': context[head]}

    def state_dict(self):
        if not self.cfg.criterion_kwargs['warm_start'] or self.inner is None:
            return {'inner': self.saved}
        return {'inner': [{'classifier': c.state_dict(), 'optimizer': o.state_dict()} for c, o in self.inner]}

    def load_state_dict(self, checkpoint):
        self.saved = checkpoint.get('inner')
