"""The contrastive model and the clustering model, with SCAN's module names."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import UserError


class ContrastiveModel(nn.Module):
    """backbone -> projection head (`mlp`: D -> D -> features_dim, or `linear`) -> L2-normalise."""

    def __init__(self, backbone, head='mlp', features_dim=128):
        super().__init__()
        self.backbone = backbone['backbone']
        self.backbone_dim = backbone['dim']
        if head == 'mlp':
            self.contrastive_head = nn.Sequential(nn.Linear(self.backbone_dim, self.backbone_dim), nn.ReLU(),
                                                  nn.Linear(self.backbone_dim, features_dim))
        elif head == 'linear':
            self.contrastive_head = nn.Linear(self.backbone_dim, features_dim)
        else:
            raise UserError(f"model_kwargs.head '{head}' is not one of mlp, linear")

    def forward(self, x, forward_pass='default'):
        """x [b, C, H, W] -> normalised projections [b, features_dim] (or backbone features [b, D])."""
        features = self.backbone(x)
        if forward_pass == 'backbone':
            return features
        return F.normalize(self.contrastive_head(features), dim=1)


class ClusteringModel(nn.Module):
    """backbone + `nheads` linear heads `cluster_head.{h}` (D -> nclusters)."""

    def __init__(self, backbone, nclusters, nheads=1):
        super().__init__()
        self.backbone = backbone['backbone']
        self.backbone_dim = backbone['dim']
        if nheads < 1:
            raise UserError('num_heads must be at least 1')
        self.cluster_head = nn.ModuleList(nn.Linear(self.backbone_dim, nclusters) for _ in range(nheads))

    def forward(self, x, forward_pass='default'):
        """'default': list of H logits [b, C]; 'backbone': features [b, D]; 'head': heads on features x;
        'return_all': {'features', 'output'}."""
        if forward_pass == 'head':
            return [head(x) for head in self.cluster_head]
        features = self.backbone(x)
        if forward_pass == 'backbone':
            return features
        output = [head(features) for head in self.cluster_head]
        if forward_pass == 'return_all':
            return {'features': features, 'output': output}
        return output

    @torch.no_grad()
    def init_head(self, h, centroids, scale):
        """Head h as a nearest-centroid classifier on the backbone features: logits (2 c.f - |c|^2) / scale, whose
        argmax is the centroid nearest in L2 (centroids [C, D]; scale sets how soft the first predictions are)."""
        centroids = centroids.to(self.cluster_head[h].weight)
        self.cluster_head[h].weight.copy_(2 * centroids / scale)
        self.cluster_head[h].bias.copy_(-centroids.pow(2).sum(1) / scale)
