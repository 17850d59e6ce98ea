"""BYOL (Grill et al., NeurIPS 2020), the momentum-teacher pretext: the online network (backbone, projection head
and a predictor) predicts, for each of an image's two views, the teacher's projection of the other view. The
teacher is an exponential moving average of the online backbone and projection head and gets no gradient; no
negatives are needed.

    loss = mean_b sum_(v, v') [2 - 2 cos(predictor(z_v), t_v')]       (v' the other view)

z are the online network's L2-normalised projections of the global batch (as SimCLR's), t the teacher's. The
predictor is features_dim -> predictor_dim -> features_dim with BatchNorm and ReLU between, trained with the
model by the stage's optimiser. The teacher follows t <- m t + (1 - m) online after every step (m:
teacher_momentum, constant; BatchNorm statistics copied) and computes its projections in training mode, as
BYOL's target network does. Every process computes the same loss on the gathered batch, so the predictor stays
the same on all of them under torchrun. The teacher and the predictor are saved in the checkpoint; the model
written (pretext/model.pth.tar) is the online one.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from methods.base import PretextMethod
from utils.ema import EMA


class BYOLLoss(nn.Module):
    def forward(self, p, t):
        """p: predictions [B, 2, d], t: the teacher's projections [B, 2, d] -> {'total', 'cosine'}."""
        cos = (F.normalize(p, dim=-1) * t.flip(1)).sum(-1)  # view 0 predicts the teacher's view 1, and back
        return {'total': (2 - 2 * cos).sum(1).mean(), 'cosine': cos.mean()}


class BYOL(PretextMethod):
    loss = BYOLLoss
    kwargs = {'predictor_dim': 512, 'teacher_momentum': 0.99}

    def build_loss(self, cfg):
        return BYOLLoss()

    def build(self, model):
        d, hidden = self.cfg.model_kwargs['features_dim'], self.cfg.criterion_kwargs['predictor_dim']
        device = next(model.parameters()).device
        self.predictor = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, d)).to(device)
        self.model, self.teacher = model, EMA(model, self.cfg.criterion_kwargs['teacher_momentum'])
        self.teacher.shadow.train()
        return self.predictor

    def training_step(self, net, images, index):
        z, _ = self.projections(net, images, index)
        with torch.no_grad():
            t, _ = self.projections(self.teacher.shadow, images, index)
        p = self.predictor(z.flatten(0, 1)).view_as(z)
        return self.criterion(p, t), ()

    def after_step(self):
        self.teacher.update(self.model)

    def state_dict(self):
        return {**super().state_dict(), 'predictor': self.predictor.state_dict(),
                'teacher': self.teacher.shadow.state_dict()}

    def load_state_dict(self, checkpoint):
        super().load_state_dict(checkpoint)
        self.predictor.load_state_dict(checkpoint['predictor'])
        self.teacher.shadow.load_state_dict(checkpoint['teacher'])
