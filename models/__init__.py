"""Backbones by name, and the models built on them."""
import inspect

from models.models import ClusteringModel, ContrastiveModel, projection_head
from models.pretrained import LIBRARIES, library_backbone, load_backbone_weights
from models.resnet50 import resnet50
from models.resnet_cifar import resnet18_cifar, resnet18_stl
from models.small_cnn import small_cnn
from utils.checkpoint import holds_projection
from utils.errors import UserError


class BackboneNames(tuple):
    """The built-in names; `timm/<model>` and `torchvision/<model>` are valid too (checked when built)."""

    def __contains__(self, name):
        return tuple.__contains__(self, name) or (isinstance(name, str) and name.startswith(LIBRARIES))


BUILT_IN = {
    'resnet18': None,  # SCAN's name: the STL variant for stl-10, the CIFAR variant otherwise
    'resnet18_cifar': resnet18_cifar,
    'resnet18_stl': resnet18_stl,
    'resnet50': resnet50,
    'small_cnn': small_cnn,
}
BACKBONES = BackboneNames([*BUILT_IN, 'timm/<model name>', 'torchvision/<model name>'])


def get_backbone(cfg):
    name = cfg.backbone
    kwargs = dict(cfg.get('backbone_kwargs') or {})
    if isinstance(name, str) and name.startswith(LIBRARIES):
        return library_backbone(name, cfg.channels or 3, **kwargs)  # the library checks its own kwargs
    if name not in BUILT_IN:
        raise UserError(f"unknown backbone '{name}'; valid: {', '.join(BACKBONES)}")
    if name == 'resnet18':
        name = 'resnet18_stl' if cfg.train_db_name == 'stl-10' else 'resnet18_cifar'
    fn = BUILT_IN[name]
    accepted = set(inspect.signature(fn).parameters) - {'in_channels'}
    if set(kwargs) - accepted:
        raise UserError(f"backbone_kwargs {sorted(set(kwargs) - accepted)} not understood by '{name}'; "
                        f"valid: {', '.join(sorted(accepted)) or 'none'}")
    return fn(in_channels=cfg.channels or 3, **kwargs)


def get_contrastive_model(cfg):
    """The pretext model; its backbone starts from `backbone_weights` when the config names a file."""
    backbone = get_backbone(cfg)
    if cfg.get('backbone_weights'):
        load_backbone_weights(backbone['backbone'], cfg.backbone_weights, cfg.backbone)
    return ContrastiveModel(backbone, **(cfg.get('model_kwargs') or {}))


def projection_kwargs(state):
    """The projection head a state_dict holds (mlp or linear, its output size), as ContrastiveModel's kwargs."""
    if 'contrastive_head.2.weight' in state:
        return {'head': 'mlp', 'features_dim': state['contrastive_head.2.weight'].shape[0]}
    return {'head': 'linear', 'features_dim': state['contrastive_head.weight'].shape[0]}


def contrastive_model_for(cfg, state):
    """Rebuild the contrastive model from the file itself (its projection head's kind and size)."""
    return ContrastiveModel(get_backbone(cfg), **projection_kwargs(state))


def get_clustering_model(cfg, state=None):
    """The clustering model; its heads sit on the projection head when `state` (a pretext or clustering
    state_dict) holds one and cfg.heads_on is 'projection' (or, for a clustering file, whenever it holds one)."""
    backbone = get_backbone(cfg)
    projection = None
    if state is not None and holds_projection(state) and (
            cfg.get('heads_on') == 'projection' or any(k.startswith('cluster_head.') for k in state)):
        projection = projection_head(backbone['dim'], **projection_kwargs(state))
    return ClusteringModel(backbone, cfg.num_classes, cfg.get('num_heads') or 1, projection)


__all__ = ['BACKBONES', 'ClusteringModel', 'ContrastiveModel', 'contrastive_model_for', 'get_backbone',
           'get_contrastive_model',
           'get_clustering_model']
