"""Backbones by name, and the models built on them."""
import inspect

from models.models import ClusteringModel, ContrastiveModel
from models.resnet50 import resnet50
from models.resnet_cifar import resnet18_cifar, resnet18_stl
from models.small_cnn import small_cnn
from utils.errors import UserError

BACKBONES = {
    'resnet18': None,  # SCAN's name: the STL variant for stl-10, the CIFAR variant otherwise
    'resnet18_cifar': resnet18_cifar,
    'resnet18_stl': resnet18_stl,
    'resnet50': resnet50,
    'small_cnn': small_cnn,
}


def get_backbone(cfg):
    name = cfg.backbone
    if name not in BACKBONES:
        raise UserError(f"unknown backbone '{name}'; valid: {', '.join(BACKBONES)}")
    if name == 'resnet18':
        name = 'resnet18_stl' if cfg.train_db_name == 'stl-10' else 'resnet18_cifar'
    fn = BACKBONES[name]
    kwargs = dict(cfg.get('backbone_kwargs') or {})
    accepted = set(inspect.signature(fn).parameters) - {'in_channels'}
    if set(kwargs) - accepted:
        raise UserError(f"backbone_kwargs {sorted(set(kwargs) - accepted)} not understood by '{name}'; "
                        f"valid: {', '.join(sorted(accepted)) or 'none'}")
    return fn(in_channels=cfg.channels or 3, **kwargs)


def get_contrastive_model(cfg):
    return ContrastiveModel(get_backbone(cfg), **(cfg.get('model_kwargs') or {}))


def contrastive_model_for(cfg, state):
    """Rebuild the projection head from the file itself (mlp or linear, its output size)."""
    if 'contrastive_head.2.weight' in state:
        kwargs = {'head': 'mlp', 'features_dim': state['contrastive_head.2.weight'].shape[0]}
    else:
        kwargs = {'head': 'linear', 'features_dim': state['contrastive_head.weight'].shape[0]}
    return ContrastiveModel(get_backbone(cfg), **kwargs)


def get_clustering_model(cfg):
    return ClusteringModel(get_backbone(cfg), cfg.num_classes, cfg.num_heads)


__all__ = ['BACKBONES', 'ClusteringModel', 'ContrastiveModel', 'contrastive_model_for', 'get_backbone',
           'get_contrastive_model',
           'get_clustering_model']
