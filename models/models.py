"""The contrastive model and the clustering model, with SCAN's module names."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from models.files import fold_weight_norm
from utils.errors import UserError


def projection_head(dim, head='mlp', features_dim=128):
    """SCAN's projection head on D-dim features: `mlp` (D -> D -> features_dim) or `linear`."""
    if head == 'mlp':
        return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, features_dim))
    if head == 'linear':
        return nn.Linear(dim, features_dim)
    raise UserError(f"model_kwargs.head '{head}' is not one of mlp, linear")


class SideBySide(nn.Module):
    """Several backbones on one image (`backbones:`, representation spaces side by side): each normalises the image
    its own way, (x - mean) / std with the statistics its weights were trained with (buffers, so the model file keeps
    them; the data transform leaves the pixels in [0, 1]), and their features are concatenated, [b, sum of D].
    `dims` says which columns are whose (TURTLE's spaces)."""

    def __init__(self, trunks, dims, norms, channels=3):
        super().__init__()
        self.trunks = nn.ModuleList(trunks)
        self.dims = list(dims)
        stats = [(n['mean'], n['std']) if n else ([0.0] * channels, [1.0] * channels) for n in norms]
        self.register_buffer('mean', torch.tensor([m for m, _ in stats], dtype=torch.float32))  # [trunks, C]
        self.register_buffer('std', torch.tensor([s for _, s in stats], dtype=torch.float32))

    def forward(self, x):
        return torch.cat([trunk((x - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1))
                          for trunk, m, s in zip(self.trunks, self.mean, self.std)], 1)


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


MLP_HEAD = {'hidden_dim': 512, 'bottleneck_dim': 256, 'nlayers': 2}  # TEMI's published head (its code's defaults)


class MLPHead(nn.Module):
    """TEMI's clustering head (DINO's projection head without its batch norm): `mlp`, nlayers linear layers with GELU
    between them (D -> hidden_dim ... -> bottleneck_dim; one layer: D -> bottleneck_dim), its output L2-normalised,
    then `last`, a linear layer without bias to the clusters whose rows start at unit length (the logits start as
    cosines). The MLP starts as TEMI's: weights N(0, 0.02) truncated at 2 standard deviations, biases zero. While it
    trains (scan.py) `last` is weight-normalised, its length and direction apart (ClusteringModel.normalise_heads)."""

    def __init__(self, dim, nclusters, hidden_dim=512, bottleneck_dim=256, nlayers=2):
        super().__init__()
        for key, value in (('hidden_dim', hidden_dim), ('bottleneck_dim', bottleneck_dim), ('nlayers', nlayers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f'cluster_head_kwargs.{key} must be a whole number of at least 1, not {value!r}')
        sizes = [dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [nn.GELU()] * (i > 0) + [nn.Linear(a, b)]
        self.mlp = nn.Sequential(*layers)
        for layer in self.mlp[::2]:
            nn.init.trunc_normal_(layer.weight, std=0.02, a=-0.04, b=0.04)
            nn.init.zeros_(layer.bias)
        self.last = nn.Linear(bottleneck_dim, nclusters, bias=False)
        with torch.no_grad():
            self.last.weight.div_(self.last.weight.norm(dim=1, keepdim=True))
        self.in_features, self.out_features = dim, nclusters

    @staticmethod
    def kwargs_of(state, prefix):
        """The MLPHead kwargs of the head whose keys start with `prefix` in a (plain) state_dict, or None when that
        head is a linear one."""
        layers = sorted({int(k[len(prefix) + 4:].split('.')[0]) for k in state if k.startswith(prefix + 'mlp.')})
        if not layers:
            return None
        shapes = [state[f'{prefix}mlp.{i}.weight'].shape for i in layers]
        return {'hidden_dim': shapes[0][0] if len(shapes) > 1 else MLP_HEAD['hidden_dim'],
                'bottleneck_dim': shapes[-1][0], 'nlayers': len(shapes)}

    def forward(self, x):
        return self.last(F.normalize(self.mlp(x), dim=-1))


def linear_head(dim, nclusters, **kwargs):
    """SCAN's head: D -> nclusters."""
    if kwargs:
        raise UserError(f'cluster_head_kwargs {sorted(kwargs)} are for cluster_head: mlp; a linear head takes none')
    return nn.Linear(dim, nclusters)


def mlp_head(dim, nclusters, **kwargs):
    """TEMI's head (MLPHead) with its settings over MLP_HEAD."""
    unknown = sorted(set(kwargs) - set(MLP_HEAD))
    if unknown:
        raise UserError(f'cluster_head_kwargs.{unknown[0]} is not a setting of the MLP head; valid: '
                        f'{", ".join(MLP_HEAD)}')
    return MLPHead(dim, nclusters, **{**MLP_HEAD, **kwargs})


# cluster_head: a head form's name -> its builder (D, nclusters, **cluster_head_kwargs) -> module
HEADS = {'linear': linear_head, 'mlp': mlp_head}


def make_head(kind, dim, nclusters, kwargs=None):
    """One clustering head of the form `kind` (HEADS) with its settings."""
    return HEADS[kind](dim, nclusters, **(kwargs or {}))


class ClusteringModel(nn.Module):
    """backbone + `nheads` heads `cluster_head.{h}` (D -> nclusters): linear ones (SCAN's), or TEMI's MLP heads
    (head='mlp', MLPHead with head_kwargs). With `projection` (the pretext model's projection head, kept as
    `contrastive_head`) the heads sit on its L2-normalised output instead of on the backbone features
    (`heads_on: projection`); after normalise_input() they read the backbone features L2-normalised
    (`heads_on: backbone_normalized`)."""

    def __init__(self, backbone, nclusters, nheads=1, projection=None, head='linear', head_kwargs=None):
        super().__init__()
        self.backbone = backbone['backbone']
        self.backbone_dim = backbone['dim']
        if nheads < 1:
            raise UserError('num_heads must be at least 1')
        dim = self.backbone_dim
        if projection is not None:
            self.contrastive_head = projection
            dim = [m for m in projection.modules() if isinstance(m, nn.Linear)][-1].out_features
        self.cluster_head = nn.ModuleList(make_head(head, dim, nclusters, head_kwargs) for _ in range(nheads))
        # every head's logits times this (set_logit_scale); unset, it is not in the state_dict (SCAN's layout)
        self.register_buffer('logit_scale', None)
        # set: every head reads its input L2-normalised (normalise_input); unset, not in the state_dict
        self.register_buffer('input_normalized', None)
        self.frozen_trunk = False

    def normalise_input(self):
        """Every head reads the features L2-normalised from now on (heads_on: backbone_normalized). A buffer: the
        model file keeps it and get_clustering_model reads it back."""
        self.input_normalized = torch.tensor(1.0)

    def head_input(self, features):
        """What the heads read of the trunk's features [b, D]: themselves, or L2-normalised."""
        return features if self.input_normalized is None else F.normalize(features, dim=-1)

    def set_logit_scale(self, scale):
        """Every head's logits times `scale` from now on: TEMI's 1 / student temperature, so the probabilities every
        stage reads (head selection, eval.py, self-labelling) are those its loss trained. A buffer: the model file
        keeps it and get_clustering_model reads it back."""
        self.logit_scale = torch.tensor(float(scale))

    def head_logits(self, features):
        """Every head's logits [b, C] on what the heads see [b, D]."""
        features = self.head_input(features)
        output = [head(features) for head in self.cluster_head]
        return output if self.logit_scale is None else [o * self.logit_scale for o in output]

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
        """'default': list of H logits [b, C]; 'backbone': the trunk's features [b, D] (what the feature cache
        holds); 'head': heads on trunk features x; 'return_all': {'features' (what the heads read), 'output'}."""
        if forward_pass == 'head':
            return self.head_logits(x)
        features = self.embed(x)
        if forward_pass == 'backbone':
            return features
        output = self.head_logits(features)
        if forward_pass == 'return_all':
            return {'features': self.head_input(features), 'output': output}
        return output

    def normalise_heads(self):
        """Every head's weight (an MLP head's last layer) as g v / |v| per cluster (weight normalisation: its length
        and direction train apart; TURTLE's task encoders, TEMI's last layer). state_dict() then holds g and v, which
        a checkpoint resumes; plain_state() is the layout the other stages read."""
        for head in self.cluster_head:
            layer = head.last if isinstance(head, MLPHead) else head
            if not parametrize.is_parametrized(layer, 'weight'):
                weight_norm(layer)

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
        output = self.model.head_logits(x)
        return {'features': self.model.head_input(x), 'output': output} if forward_pass == 'return_all' else output

    def init_head(self, h, centroids, scale):
        self.model.init_head(h, centroids, scale)
