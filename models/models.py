"""The contrastive model and the clustering model, with SCAN's module names."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from utils.checkpoint import fold_weight_norm
from utils.errors import UserError


def projection_head(dim, head='mlp', features_dim=128):
    """SCAN's projection head on D-dim features: `mlp` (D -> D -> features_dim) or `linear`."""
    if head == 'mlp':
        return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, features_dim))
    if head == 'linear':
        return nn.Linear(dim, features_dim)
    raise UserError(f"model_kwargs.head '{head}' is not one of mlp, linear")


class ContrastiveModel(nn.Module):
    """backbone -> projection head (`mlp`: D -> D -> features_dim, or `linear`) -> L2-normalise."""

    def __init__(self, backbone, head='mlp', features_dim=128):
        super().__init__()
        self.backbone = backbone['backbone']
        self.backbone_dim = backbone['dim']
        self.contrastive_head = projection_head(self.backbone_dim, head, features_dim)

    def forward(self, x, forward_pass='default'):
        """x [b, C, H, W] -> normalised projections [b, features_dim] (or backbone features [b, D])."""
        features = self.backbone(x)
        if forward_pass == 'backbone':
            return features
        return F.normalize(self.contrastive_head(features), dim=1)


class ClusteringModel(nn.Module):
    """backbone + `nheads` linear heads `cluster_head.{h}` (D -> nclusters). With `projection` (the pretext
    model's projection head, kept as `contrastive_head`) the heads sit on its L2-normalised output instead of on
    the backbone features (`heads_on: projection`)."""

    def __init__(self, backbone, nclusters, nheads=1, projection=None):
        super().__init__()
        self.backbone = backbone['backbone']
        self.backbone_dim = backbone['dim']
        if nheads < 1:
            raise UserError('num_heads must be at least 1')
        dim = self.backbone_dim
        if projection is not None:
            self.contrastive_head = projection
            dim = [m for m in projection.modules() if isinstance(m, nn.Linear)][-1].out_features
        self.cluster_head = nn.ModuleList(nn.Linear(dim, nclusters) for _ in range(nheads))
        self.frozen_trunk = False

    def trunk(self):
        """The modules below the heads: the backbone, and the projection head when the heads sit on it."""
        return [self.backbone] + ([self.contrastive_head] if hasattr(self, 'contrastive_head') else [])

    def freeze_trunk(self):
        """No gradients below the heads (update_cluster_head_only, cache_features), and the trunk kept in eval mode
        while the heads train (its BatchNorm statistics stay those of the pretext model)."""
        self.frozen_trunk = True
        for module in self.trunk():
            module.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        if self.frozen_trunk:
            for module in self.trunk():
                module.eval()
        return self

    def embed(self, x):
        """What the heads see: backbone features [b, D], or the normalised projection of them."""
        features = self.backbone(x)
        if hasattr(self, 'contrastive_head'):
            features = F.normalize(self.contrastive_head(features), dim=1)
        return features

    def forward(self, x, forward_pass='default'):
        """'default': list of H logits [b, C]; 'backbone': the heads' input features [b, D]; 'head': heads on
        features x; 'return_all': {'features', 'output'}."""
        if forward_pass == 'head':
            return [head(x) for head in self.cluster_head]
        features = self.embed(x)
        if forward_pass == 'backbone':
            return features
        output = [head(features) for head in self.cluster_head]
        if forward_pass == 'return_all':
            return {'features': features, 'output': output}
        return output

    def normalise_heads(self):
        """Every head's weight as g v / |v| per cluster (weight normalisation: its length and direction train apart;
        TURTLE's task encoders). state_dict() then holds g and v, which a checkpoint resumes; plain_state() is the
        layout the other stages read."""
        for head in self.cluster_head:
            if not parametrize.is_parametrized(head, 'weight'):
                weight_norm(head)

    def plain_state(self):
        """state_dict() with each weight-normalised head's weight written out as cluster_head.{h}.weight (SCAN's
        layout, what selflabel.py and eval.py load)."""
        return fold_weight_norm(self.state_dict())

    @torch.no_grad()
    def init_head(self, h, centroids, scale):
        """Head h as a nearest-centroid classifier on the heads' input features: logits (2 c.f - |c|^2) / scale, whose
        argmax is the centroid nearest in L2 (centroids [C, D]; scale sets how soft the first predictions are)."""
        head = self.cluster_head[h]
        centroids = centroids.to(head.bias)
        if parametrize.is_parametrized(head, 'weight'):
            head.weight = 2 * centroids / scale  # g and v of that weight, in place (the optimiser keeps them)
        else:
            head.weight.copy_(2 * centroids / scale)
        head.bias.copy_(-centroids.pow(2).sum(1) / scale)


class HeadsOnFeatures(nn.Module):
    """The clustering model's heads applied to cached features: model(x, forward_pass) with x [b, D] the vectors the
    heads see, in the clustering model's output forms. It shares the model's parameters (save `model`)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, forward_pass='default'):
        if forward_pass == 'backbone':
            return x
        output = [head(x) for head in self.model.cluster_head]
        return {'features': x, 'output': output} if forward_pass == 'return_all' else output

    def init_head(self, h, centroids, scale):
        self.model.init_head(h, centroids, scale)
