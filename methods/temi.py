"""TEMI (Adaloglou et al., BMVC 2023): heads trained on the weighted pointwise mutual information between an image
and a mined neighbour (losses/temi.py) under a teacher, an exponential moving average of the heads (TEMI trains on
frozen features: the teacher sees the student's embeddings, detached).

The student temperature is the model's (its logits are the heads' divided by it, ClusteringModel.set_logit_scale):
the model file's probabilities, which eval.py reports and self-labelling trains on, are the student's. Per step,
before the loss: the teacher follows the heads (t <- m t + (1 - m) s, teacher_momentum), its
probabilities (softmax of logits / teacher_temperature) update each head's prior (the running mean, prior_momentum),
and each pair's weight is the mean over heads of sum_k t_k(anchor) t_k(neighbour). Teacher and priors are in the
checkpoint, so a resumed run continues them.
"""
import torch

from losses.temi import TEMILoss
from methods.base import ClusteringMethod
from utils.distributed import gather
from utils.ema import EMA


class TEMI(ClusteringMethod):
    loss = TEMILoss
    kwargs = {'beta': 0.6, 'student_temperature': 0.1, 'teacher_temperature': 0.04, 'teacher_momentum': 0.996,
              'prior_momentum': 0.9}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.teacher, self.prior, self.saved = None, None, None

    def build(self, model):
        model.set_logit_scale(1 / self.cfg.criterion_kwargs['student_temperature'])
        super().build(model)

    def build_loss(self, cfg):
        return TEMILoss(cfg.criterion_kwargs['beta'], 1.0)  # the model divides by the student temperature (build)

    @torch.no_grad()
    def follow(self, heads):
        """The teacher (EMA.shadow): a copy of the heads at the first step (or the checkpoint's), then their moving
        average."""
        if self.teacher is None:
            self.teacher = EMA(heads, self.cfg.criterion_kwargs['teacher_momentum'])
            if self.saved is not None:  # resumed: the checkpoint's teacher, then this step's update
                self.teacher.shadow.load_state_dict(self.saved)
        self.teacher.update(heads)

    @torch.no_grad()
    def step_context(self, model, batch, features, device):
        kw = self.cfg.criterion_kwargs
        self.follow(model.cluster_head)
        anchors, neighbors = (gather(features[view].detach().float()) for view in ('anchor', 'neighbor'))
        probs = [[(head(x) / kw['teacher_temperature']).softmax(1) for x in (anchors, neighbors)]
                 for head in self.teacher.shadow]
        batch_mean = torch.stack([torch.cat(p).mean(0) for p in probs])  # [H, C]
        m = kw['prior_momentum']
        self.prior = batch_mean if self.prior is None else m * self.prior.to(device) + (1 - m) * batch_mean
        weight = torch.stack([(a * n).sum(1) for a, n in probs]).mean(0)  # [b]
        return {'probs': probs, 'weight': weight}

    def inputs(self, logits, head, index, context):
        teacher_anchors, teacher_neighbors = context['probs'][head]
        return {'anchors': logits['anchor'], 'neighbors': logits['neighbor'], 'teacher_anchors': teacher_anchors,
                'teacher_neighbors': teacher_neighbors, 'prior': self.prior[head], 'weight': context['weight']}

    def state_dict(self):
        teacher = self.teacher.shadow.state_dict() if self.teacher is not None else self.saved
        return {'teacher': teacher, 'prior': self.prior}

    def load_state_dict(self, checkpoint):
        self.saved, self.prior = checkpoint.get('teacher'), checkpoint.get('prior')
