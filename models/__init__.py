"""Backbones by name, and the models built on them."""
import inspect

from easydict import EasyDict

from models.files import holds_projection
from models.models import ClusteringModel, ContrastiveModel, MLPHead, SideBySide, projection_head
from models.pretrained import LIBRARIES, library_backbone, load_backbone_weights, names_weights
from models.resnet50 import resnet50
from models.resnet_cifar import resnet18_cifar, resnet18_stl
from models.small_cnn import small_cnn
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


ENTRY_KEYS = ('backbone', 'backbone_weights', 'backbone_kwargs', 'normalize')


def backbone_entries(cfg):
    """`backbones:` as one config per backbone: each entry's backbone, backbone_weights, backbone_kwargs and
    normalize ({mean, std}: for weights that bring none, e.g. a file for a built-in backbone) over the config's."""
    subs = []
    for i, entry in enumerate(cfg.backbones):
        if not isinstance(entry, dict) or not isinstance(entry.get('backbone'), str):
            raise UserError(f'backbones[{i}] must be a mapping with backbone: NAME (and backbone_weights, '
                            f'backbone_kwargs, normalize); got {entry!r}')
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise UserError(f"backbones[{i}] has '{unknown[0]}'; an entry takes {', '.join(ENTRY_KEYS)}")
        if entry['backbone'] not in BACKBONES:
            raise UserError(f"backbones[{i}]: unknown backbone '{entry['backbone']}'; valid: {', '.join(BACKBONES)}")
        subs.append(EasyDict({**cfg, 'backbones': None, 'backbone_weights': None, 'backbone_kwargs': {},
                              'normalize': None, **entry}))
    if len(subs) < 2:
        raise UserError(f'backbones: lists {len(subs)} backbone(s); give two or more, or one as backbone: NAME')
    return subs


def backbone_label(cfg):
    """The backbone's name for messages and reports: 'a + b' for backbones side by side."""
    return ' + '.join(e['backbone'] for e in cfg.backbones) if cfg.get('backbones') else cfg.backbone


def side_by_side(cfg, load_weights):
    """get_backbone for `backbones:`: models.models.SideBySide of each entry's backbone (with load_weights, its
    weights, and its normalisation: the entry's normalize, else what its weights expect). Its preprocessing leaves
    the pixels in [0, 1] (mean 0, std 1): each backbone normalises its own input."""
    parts, norms = [], []
    for i, sub in enumerate(backbone_entries(cfg)):
        if load_weights and not (sub.backbone_weights or names_weights(sub)):
            raise UserError(f'backbones[{i}] ({sub.backbone}) names no weights: give it backbone_weights: PATH, or '
                            'backbone_kwargs {pretrained: true} (timm) / {weights: NAME} (torchvision)')
        part = get_backbone(sub, load_weights)
        norm = sub.normalize or part['preprocessing']
        if load_weights and not norm:
            raise UserError(f'backbones[{i}] ({sub.backbone}): its weights bring no normalisation; give the entry '
                            'normalize: {mean: [...], std: [...]}')
        parts.append(part)
        norms.append(norm)
    channels = cfg.channels or 3
    module = SideBySide([p['backbone'] for p in parts], [p['dim'] for p in parts], norms, channels)
    preprocessing = None
    if load_weights:
        preprocessing = {'mean': [0.0] * channels, 'std': [1.0] * channels, 'input_size': None,
                         'source': 'pixels in [0, 1]: each of backbones normalises its own input'}
    return {'backbone': module, 'dim': sum(module.dims), 'preprocessing': preprocessing}


def get_backbone(cfg, load_weights=False):
    """{'backbone': nn.Module, 'dim': D, 'preprocessing': ...}. Without `load_weights` the architecture alone (the
    stages after the pretext load its model file into it). With it (the pretext stage) the pretrained weights the
    config names: `backbone_weights: PATH`, else the library's own (backbone_kwargs `pretrained: true` for timm,
    `weights: NAME` for torchvision); 'preprocessing' is then what those weights expect ({mean, std, input_size,
    source}: timm's pretrained_cfg for the model's name and tag, torchvision's weights.transforms()), and None
    for built-in backbones and for untrained ones. With `backbones:` (a list) several side by side (side_by_side)."""
    if cfg.get('backbones'):
        return side_by_side(cfg, load_weights)
    name = cfg.backbone
    kwargs = dict(cfg.get('backbone_kwargs') or {})
    path = cfg.get('backbone_weights') if load_weights else None
    named = load_weights and names_weights(cfg)
    if isinstance(name, str) and name.startswith(LIBRARIES):
        # the library checks its own kwargs; a file given as well replaces the named weights (offline use)
        backbone = library_backbone(name, cfg.channels or 3, load_weights=named and not path, **kwargs)
    else:
        backbone = {**built_in_backbone(cfg, name, kwargs), 'preprocessing': None}
    if path:
        if named:
            print(f'backbone_weights given: {path} is loaded instead of the weights backbone_kwargs name')
        load_backbone_weights(backbone['backbone'], path, name)
    if not (path or named):
        backbone['preprocessing'] = None  # trained from scratch: nothing to follow
    return backbone


def built_in_backbone(cfg, name, kwargs):
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


def get_contrastive_model(cfg, backbone=None):
    """The pretext model on `backbone` (get_backbone's dict; by default the architecture of the config's)."""
    return ContrastiveModel(backbone or get_backbone(cfg), **(cfg.get('model_kwargs') or {}))


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
    state_dict) holds one and cfg.heads_on is 'projection' (or, for a clustering file, whenever it holds one). The
    heads' form: a clustering state_dict's own (its first head's layers), else cfg.cluster_head and its kwargs."""
    backbone = get_backbone(cfg)
    projection = None
    clustering = state is not None and any(k.startswith('cluster_head.') for k in state)
    if state is not None and holds_projection(state) and (cfg.get('heads_on') == 'projection' or clustering):
        projection = projection_head(backbone['dim'], **projection_kwargs(state))
    head, head_kwargs = cfg.get('cluster_head') or 'linear', cfg.get('cluster_head_kwargs')
    if clustering:
        first = min(int(k.split('.')[1]) for k in state if k.startswith('cluster_head.'))
        head_kwargs = MLPHead.kwargs_of(state, f'cluster_head.{first}.')
        head = 'linear' if head_kwargs is None else 'mlp'
    model = ClusteringModel(backbone, cfg.num_classes, cfg.get('num_heads') or 1, projection, head, head_kwargs)
    if clustering and 'logit_scale' in state:
        model.set_logit_scale(state['logit_scale'])
    normalized = 'input_normalized' in state if clustering else cfg.get('heads_on') == 'backbone_normalized'
    if normalized:  # a clustering file keeps it; a new model takes it from heads_on
        model.normalise_input()
    return model


__all__ = ['BACKBONES', 'ClusteringModel', 'ContrastiveModel', 'backbone_label', 'contrastive_model_for',
           'get_backbone', 'get_contrastive_model', 'get_clustering_model']
