"""TURTLE (Gadetsky, Jiang and Brbic, ICML 2024): each head is a task encoder whose labelling of the images a linear
classifier on the features should learn best (losses/turtle.py). Mined neighbours are not used: the anchors of each
batch are the images.

Per step, before the loss, every head gets its inner learner: a linear classifier on the anchors' features fitted
to the head's current labelling with inner_steps Adam steps (inner_lr). Cold start (the paper's default: a new
classifier each step) begins it at zero here, not at random as the authors' code does, so every process of a
torchrun job fits the same one; warm_start: true keeps each
head's classifier and its optimiser from step to step (and in the checkpoint). The heads' inner classifiers are one
linear layer per space whose outputs are the heads' side by side (step_context): exactly one classifier per head, in
one pass over the features, its gradient in closed form (losses.turtle.fit_linear), its two matrix products per
step in bfloat16 under amp: bf16. The heads are
weight-normalised while they train (weight_norm: true, the paper's task encoder;
models.ClusteringModel.normalise_heads); the model file holds their plain weights. Epochs and heads are selected by
the hard labels' agreement with the mined val neighbours (val_losses), which sharper labels alone do not raise.

With several backbones side by side (`backbones:`, TURTLE's representation spaces) the head is one linear layer on
their concatenated features, its logits the sum of one per space as the paper's task encoder (normalised as one
weight here, per space in the paper), and every space gets its own inner classifier: the labelling must be linearly
separable in each of them, the loss the sum of the spaces' (losses/turtle.py).
"""
import torch
import torch.nn as nn

from losses.turtle import TURTLELoss, fit_linear
from methods.base import ClusteringMethod
from utils.distributed import gather


def spaces(model, dim):
    """The widths of the representation spaces the heads see: those of backbones side by side (models.SideBySide)
    when the heads sit on their features, else one of `dim`."""
    dims = getattr(getattr(model, 'backbone', None), 'dims', None)
    return [dim] if dims is None or hasattr(model, 'contrastive_head') else list(dims)


class TURTLE(ClusteringMethod):
    loss = TURTLELoss
    views = ('anchor',)  # no mined neighbour is read
    model_selection = 'agreement'  # its labellings sharpen as they train, which alone lowers SCAN's val loss
    kwargs = {'entropy_weight': 10.0, 'inner_steps': 10, 'inner_lr': 0.001, 'warm_start': False, 'weight_norm': True}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.inner, self.saved = None, None

    def build(self, model):
        if self.cfg.criterion_kwargs['weight_norm']:  # the paper's task encoder ("crucial" in the authors' code)
            model.normalise_heads()
        super().build(model)

    def build_loss(self, cfg):
        return TURTLELoss(cfg.criterion_kwargs['entropy_weight'])

    def learners(self, heads, device, spaces):
        """One (linear classifier, Adam) per representation space (`spaces`: their widths) for all heads at once: its
        outputs are the heads' classes side by side, fresh at zero each step, or kept with warm_start."""
        kw = self.cfg.criterion_kwargs
        if self.inner is not None and kw['warm_start']:
            return self.inner
        self.inner = []
        for dim in spaces:
            classifier = nn.Linear(dim, sum(head.out_features for head in heads)).to(device)
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
        """Per head, per space, the logits of the inner classifier fitted to the head's labelling of the batch. The
        heads share one classifier per space whose outputs are theirs side by side: a head's loss reaches only its own
        columns and Adam is per parameter, so this is one classifier per head in a single pass over the features (the
        fit reads the batch's features, not the heads' few outputs: five heads cost about what one does)."""
        x = gather(features['anchor'].detach().float())  # the anchors of the global batch
        widths = spaces(model, x.shape[1])
        heads = model.cluster_head
        with torch.no_grad():
            labels = torch.cat([head(x).float().softmax(1) for head in heads], 1)
        sizes = [head.out_features for head in heads]
        predicted = []
        for part, (classifier, optimizer) in zip(x.split(widths, 1), self.learners(heads, device, widths)):
            fit_linear(classifier, optimizer, part, labels, self.cfg.criterion_kwargs['inner_steps'], sizes,
                       torch.bfloat16 if self.cfg.get('amp') == 'bf16' else None)
            with torch.no_grad():
                predicted.append(classifier(part).split(sizes, 1))
        return [list(per_head) for per_head in zip(*predicted)]

    def inputs(self, logits, head, index, context):
        return {'labels': logits['anchor'], 'predicted': context[head]}


    def state_dict(self):
        if not self.cfg.criterion_kwargs['warm_start'] or self.inner is None:
            return {'inner': self.saved}
        return {'inner': [{'classifier': c.state_dict(), 'optimizer': o.state_dict()} for c, o in self.inner]}

    def load_state_dict(self, checkpoint):
        self.saved = checkpoint.get('inner')
        if self.saved and isinstance(self.saved[0], list):  # one classifier per head, as versions before 2026-12
            print('note: the checkpoint keeps one inner classifier per head (an earlier version); they start afresh')
            self.saved = None
