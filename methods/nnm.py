"""NNM (Dang et al. 2021): SCAN's pair plus a second strong view of the anchor, its nearest neighbour inside
the batch and its nearest neighbour in the whole dataset (refreshed after every epoch)."""
import torch

from losses.scan import NNMLoss
from methods.base import VIEW_KINDS, ClusteringMethod
from utils.config import Key
from utils.distributed import gather


@torch.no_grad()
def nearest_other(features, chunk=2048):
    """Index of each row's nearest other row by L2, in chunks (memory O(chunk N)). features [N, D]."""
    out = []
    for start in range(0, len(features), chunk):
        d = torch.cdist(features[start:start + chunk], features)
        rows = torch.arange(len(d))
        d[rows, rows + start] = float('inf')
        out.append(d.argmin(1))
    return torch.cat(out)


def global_neighbor_probs(prediction, device='cpu'):
    """NNM's dataset-level neighbours from an in-order pass: G[h, i] = probabilities of i's nearest other
    sample (backbone features, L2) under head h, searched and returned on `device`. Returns [H, N, C]."""
    return prediction['probs'].to(device)[:, nearest_other(prediction['features'].to(device))]


@torch.no_grad()
def weak_features(model, x, frozen_backbone):
    """Backbone features of weak views in eval mode (BatchNorm running statistics, which it leaves as they were)."""
    model.backbone.eval()
    features = model(x, forward_pass='backbone')
    model.backbone.train(not frozen_backbone)
    return features


class NNM(ClusteringMethod):
    loss = NNMLoss
    views = ('anchor', 'neighbor', 'second')
    # the in-batch neighbours from the backbone features of: the strong anchor view (published) or its weak view
    # (the evaluation transform, one extra forward pass without gradients in eval mode)
    settings = {'local_neighbor_view': Key('strong', str, ('strong', 'weak'))}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.global_probs = None  # [H, N, C], from the second epoch on, on the model's device
        self.device = torch.device('cpu')

    def build(self, model):
        self.device = next(model.parameters()).device  # the global neighbours are searched and kept there
        super().build(model)

    def batch_views(self):
        views = super().batch_views()
        if self.cfg.local_neighbor_view == 'weak':  # one extra forward pass without gradients
            views['weak'] = VIEW_KINDS['weak']
        return views

    def step_context(self, model, batch, features, device):
        features = features['anchor']
        if 'weak' in batch:
            features = weak_features(model, batch['weak'].to(device, non_blocking=True),
                                     self.cfg.update_cluster_head_only)
        return gather(features.detach().float())

    def inputs(self, logits, head, index, context):
        glob = None if self.global_probs is None else self.global_probs[head, index.to(self.global_probs.device)]
        return {'anchors': logits['anchor'], 'neighbors': logits['neighbor'], 'second': logits['second'],
                'features': context, 'global_probs': glob}

    def end_epoch(self, train_predictions):
        self.global_probs = global_neighbor_probs(train_predictions(), self.device)

    def state_dict(self):
        return {'global_probs': None if self.global_probs is None else self.global_probs.cpu()}

    def load_state_dict(self, checkpoint):
        glob = checkpoint.get('global_probs')
        self.global_probs = None if glob is None else glob.to(self.device)
