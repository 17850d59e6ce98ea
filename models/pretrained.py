"""Backbones from timm and torchvision by name (`backbone: timm/<model>`, `backbone: torchvision/<model>`), their
pretrained weights by name (`backbone_kwargs: {pretrained: true}` for timm, `{weights: IMAGENET1K_V1}` for
torchvision: fetched by the library, or read from its cache offline), the preprocessing those weights were trained
with (timm's `pretrained_cfg`, torchvision's `weights.transforms()`), and the loader of the weight files users bring
(`backbone_weights: PATH`).

The loader reads the file (`.safetensors`, or torch.load with weights_only=True) and finds the backbone's tensors
in it, whatever the layout: a plain state dict (torchvision, timm, released DINO/DINOv2 backbones), a training checkpoint that
nests it (`teacher` / `student` (DINO), `state_dict` (MoCo, solo-learn, Lightning), `model`), and key prefixes
(`module.` from DDP, `backbone.`, `encoder_q.` / `base_encoder.` (MoCo v2/v3), `encoder.`), and lukemelas'
EfficientNet names for timm's EfficientNet (lukemelas_layout). The prefix kept is the
one under which the most of the model's keys are found (the first one in the file on a tie: MoCo's query encoder
before its momentum copy). Every tensor of the model must be found with its shape, or nothing is loaded and one
line names the first missing keys and the file's unmatched ones; the file's other tensors (classifier and
projection heads) are left out and counted in a note.
"""
import os

import torch
import torch.nn as nn

from utils.errors import UserError

LIBRARIES = ('timm/', 'torchvision/')
NESTED = ('teacher', 'state_dict', 'model', 'student', 'module')  # checkpoint keys that hold the weights, in order
CLASSIFIERS = ('fc', 'classifier', 'head', 'heads')  # torchvision's last layer, replaced by the identity
# the backbone_kwargs that choose a library's pretrained weights rather than the architecture
WEIGHT_KWARGS = {'timm': 'pretrained', 'torchvision': 'weights'}


def kwargs_error(backbone, e):
    return UserError(f'backbone_kwargs not understood by {backbone}: {e} (the override backbone_kwargs={{}} clears '
                     'those of the config file)')


def weights_unavailable(backbone, what, cache, e):
    """Weights neither cached nor downloadable: one line with the two ways out."""
    return UserError(f'the pretrained weights of {backbone} ({what}) are not in the cache ({cache}) and cannot be '
                     f'downloaded ({type(e).__name__}); run the pretext command once with the network to fill the '
                     'cache, or give backbone_weights=PATH (a weights file)')


def hub_cache():
    import huggingface_hub.constants as hub
    return hub.HF_HUB_CACHE + (' with HF_HUB_OFFLINE set' if hub.HF_HUB_OFFLINE else '')


def timm_backbone(name, in_channels=3, pretrained=False, **kwargs):
    """timm.create_model(name, pretrained=...) without its classifier. With `pretrained`, timm and
    huggingface_hub fetch the weights of the name's tag (`resnet50.a1_in1k`; the default tag without one), from
    the hub cache ($HF_HOME/hub) when they are there, which is all they do with HF_HUB_OFFLINE=1."""
    from utils.tv import torchvision  # noqa: F401  timm imports torchvision: the CPU workaround comes first
    import timm
    from huggingface_hub.errors import HfHubHTTPError
    try:
        model = timm.create_model(name, pretrained=bool(pretrained), num_classes=0, in_chans=in_channels, **kwargs)
    except RuntimeError as e:
        if 'Unknown model' not in str(e):
            raise
        raise UserError(f"timm has no model '{name}'; list the names with ./run.sh python -c \"import utils.tv, timm; "
                        "print(timm.list_models('*resnet*', pretrained=True))\"") from None
    except TypeError as e:
        raise kwargs_error(f'timm/{name}', e) from None
    except (OSError, HfHubHTTPError) as e:  # not cached, and offline or not reachable
        raise weights_unavailable(f'timm/{name}', 'pretrained: true', hub_cache(), e) from None
    return {'backbone': model, 'dim': model.num_features, 'preprocessing': timm_preprocessing(name, model)}


def timm_preprocessing(name, model):
    """The mean, std and input size of the weights of timm's `pretrained_cfg` for this name (its tag)."""
    import timm.data
    config = timm.data.resolve_model_data_config(model)
    return {'mean': [float(v) for v in config['mean']], 'std': [float(v) for v in config['std']],
            'input_size': int(config['input_size'][-1]), 'source': f"timm's pretrained_cfg of {name}"}


def torchvision_weights(name, weights):
    """The torchvision weights enum member for `weights` ('IMAGENET1K_V1', 'DEFAULT', or 'ResNet18_Weights.X'),
    or the default one when `weights` is None; None for a model without pretrained weights."""
    from utils.tv import torchvision
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        return None
    if weights is None or weights == 'DEFAULT':
        return enum.DEFAULT
    member = str(weights).rsplit('.', 1)[-1]
    if member not in enum.__members__:
        raise UserError(f"torchvision/{name} has no weights '{weights}'; valid: {', '.join(enum.__members__)}, DEFAULT")
    return enum[member]


def torchvision_preprocessing(weights):
    transform = weights.transforms()
    size = getattr(transform, 'crop_size', None)
    return {'mean': [float(v) for v in transform.mean], 'std': [float(v) for v in transform.std],
            'input_size': int(size[0]) if size else None,
            'source': f"torchvision's {type(weights).__name__}.{weights.name}.transforms()"}


def torchvision_backbone(name, in_channels=3, weights=None, **kwargs):
    """torchvision.models.get_model(name, weights=...) with its classifier replaced by the identity. Named weights
    are fetched by torch.hub into $TORCH_HOME/hub/checkpoints, or read from there when they are cached."""
    from utils.tv import torchvision
    if in_channels != 3:
        raise UserError(f"torchvision/{name} takes 3-channel images; set channels: 3 (grey images are converted)")
    if name not in torchvision.models.list_models(torchvision.models):
        raise UserError(f"torchvision has no model '{name}'; valid: "
                        f"{', '.join(torchvision.models.list_models(torchvision.models))}")
    chosen = torchvision_weights(name, weights)
    if weights is not None and chosen is None:
        raise UserError(f'torchvision/{name} has no pretrained weights; drop backbone_kwargs.weights')
    try:
        model = torchvision.models.get_model(name, weights=chosen if weights is not None else None, **kwargs)
    except TypeError as e:
        raise kwargs_error(f'torchvision/{name}', e) from None
    except OSError as e:
        cache = os.path.join(torch.hub.get_dir(), 'checkpoints')
        raise weights_unavailable(f'torchvision/{name}', f'weights: {weights}', cache, e) from None
    # a file loaded into the model was trained as torchvision's own weights were: their transforms
    preprocessing = torchvision_preprocessing(chosen) if chosen is not None else None
    for attr in CLASSIFIERS:
        last = getattr(model, attr, None)
        if isinstance(last, nn.Sequential):  # e.g. EfficientNet, ViT: (dropout, linear)
            linears = [m for m in last if isinstance(m, nn.Linear)]
            if linears:
                setattr(model, attr, nn.Identity())
                return {'backbone': model, 'dim': linears[0].in_features, 'preprocessing': preprocessing}
        if isinstance(last, nn.Linear):
            setattr(model, attr, nn.Identity())
            return {'backbone': model, 'dim': last.in_features, 'preprocessing': preprocessing}
    raise UserError(f'torchvision/{name}: no classifier layer ({", ".join(CLASSIFIERS)}) to take the features '
                    'before; use a timm model instead')


def library_backbone(name, in_channels=3, load_weights=False, **kwargs):
    """A timm or torchvision backbone: {'backbone', 'dim', 'preprocessing'}. With `load_weights`, the weights that
    backbone_kwargs name (timm's `pretrained: true`, torchvision's `weights: NAME`) are loaded; without, those
    kwargs are dropped and only the architecture is built (the later stages load the pretext model into it)."""
    library, _, model = name.partition('/')
    if not model:
        raise UserError(f"backbone '{name}' names no model: write {library}/<model name>")
    if not load_weights:
        kwargs.pop(WEIGHT_KWARGS.get(library), None)
    return (timm_backbone if library == 'timm' else torchvision_backbone)(model, in_channels, **kwargs)


def check_input_size(backbone, name, crop):
    """A ViT built for one input size (timm's patch embedding with a strict image size) takes only that size:
    another stops the stage before anything is written, instead of failing in its first forward pass."""
    for trunk in getattr(backbone, 'trunks', ()):  # backbones side by side (models.SideBySide): each of them
        check_input_size(trunk, name, crop)
    embed = getattr(backbone, 'patch_embed', None)
    if embed is None or not getattr(embed, 'strict_img_size', False) or getattr(backbone, 'dynamic_img_size', False):
        return
    size = tuple(embed.img_size)
    crop = (crop, crop) if isinstance(crop, int) else tuple(crop)
    if size != crop:
        raise UserError(f'{name} takes {size[0]}x{size[1]} images and these are {crop[0]}x{crop[1]}: set '
                        f'db_kwargs.image_size={size[0]}, or give the model their size (backbone_kwargs.img_size: '
                        f'{crop[0]}; timm resizes the position embeddings of pretrained weights)')


def names_weights(cfg):
    """True when backbone_kwargs choose a library's pretrained weights (timm/...: pretrained, torchvision/...:
    weights)."""
    library = cfg.backbone.partition('/')[0] if isinstance(cfg.backbone, str) else ''
    return bool(library in WEIGHT_KWARGS and (cfg.get('backbone_kwargs') or {}).get(WEIGHT_KWARGS[library]))


def read_weights(path):
    """The tensors of a weights file, {key: tensor}, from the first nested dict that holds them."""
    if not os.path.isfile(path):
        raise UserError(f'backbone_weights: no such file: {path}')
    try:
        if path.endswith('.safetensors'):
            from safetensors.torch import load_file
            found = load_file(path)
        else:
            found = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # an unpickling error names the first object that is not plain data
        raise UserError(f'backbone_weights {path} cannot be read as plain tensors ({str(e).splitlines()[0]}); '
                        'save the state dict alone (torch.save(model.state_dict(), PATH))') from None
    for _ in range(3):
        if not isinstance(found, dict):
            break
        if any(isinstance(v, torch.Tensor) for v in found.values()):
            return {k: v for k, v in found.items() if isinstance(v, torch.Tensor)}
        inner = next((found[k] for k in NESTED if isinstance(found.get(k), dict)), None)
        if inner is None:
            break
        found = inner
    keys = list(found)[:8] if isinstance(found, dict) else type(found).__name__
    raise UserError(f'backbone_weights {path}: no tensors found (top level: {keys}); expected a state dict or a '
                    f'checkpoint holding one under {", ".join(NESTED)}')


def prefixes(key):
    """'a.b.c.d' -> '', 'a.', 'a.b.', 'a.b.c.' (every dotted prefix a layout may add)."""
    parts = key.split('.')
    return ['.'.join(parts[:i]) + ('.' if i else '') for i in range(len(parts))]


def lukemelas_layout(model_state, weights):
    """lukemelas EfficientNet keys (`_conv_stem`, `_bn0`, `_blocks.N.*`, `_conv_head`, `_bn1`, `_fc`) onto timm's
    EfficientNet: the same tensors in the same forward order under other names, so they are paired in order, each
    pair checked to end in the same name (weight, bias, running_mean, ...) and to have the same shape. None when the
    file is not in that layout or does not pair up with the model."""
    if '_conv_stem.weight' not in weights:
        return None
    source = [k for k in weights if not k.startswith('_fc.')]
    target = list(model_state)
    if len(source) != len(target) or any(a.rsplit('.', 1)[-1] != b.rsplit('.', 1)[-1]
                                         or weights[a].shape != model_state[b].shape for a, b in zip(source, target)):
        return None
    return {b: weights[a] for a, b in zip(source, target)}


def match_weights(model_state, weights):
    """The file's tensors renamed to the model's keys: (state, prefix, unmatched file keys). Raises a UserError
    naming the first missing keys unless every model tensor is found with its shape."""
    paired = lukemelas_layout(model_state, weights)
    if paired is not None:
        return paired, '', [k for k in weights if k.startswith('_fc.')]
    counts, first = {}, {}
    for i, key in enumerate(weights):
        for prefix in prefixes(key):
            if key[len(prefix):] in model_state:
                counts[prefix] = counts.get(prefix, 0) + 1
                first.setdefault(prefix, i)
    if not counts:
        raise UserError(f'no key of the file matches the model: the file has {_first(weights)}, the model '
                        f'{_first(model_state)}')
    prefix = max(counts, key=lambda p: (counts[p], -first[p]))
    state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix) and k[len(prefix):] in model_state}
    missing = [k for k in model_state if k not in state and not k.endswith('num_batches_tracked')]
    wrong = [f'{k} {tuple(state[k].shape)} vs {tuple(v.shape)}' for k, v in model_state.items()
             if k in state and state[k].shape != v.shape]
    unmatched = [k for k in weights if not (k.startswith(prefix) and k[len(prefix):] in model_state)]
    if missing or wrong:
        raise UserError('the file does not fit the model: ' + (f'shapes differ: {_first(wrong)}; ' if wrong else '')
                        + (f'missing: {_first(missing)}; ' if missing else '')
                        + f"unmatched in the file{' (after ' + repr(prefix) + ')' if prefix else ''}: "
                        f'{_first(unmatched)}')
    return state, prefix, unmatched


def _first(keys, n=4):
    keys = list(keys)
    return ', '.join(keys[:n]) + (f' (and {len(keys) - n} more)' if len(keys) > n else '') if keys else 'none'


def load_backbone_weights(backbone, path, name='backbone'):
    """Load a weights file into `backbone` (an nn.Module), all of it or nothing (module docstring)."""
    model_state = backbone.state_dict()
    try:
        state, prefix, unmatched = match_weights(model_state, read_weights(path))
    except UserError as e:
        if str(e).startswith('backbone_weights'):
            raise
        raise UserError(f'backbone_weights {path} for {name}: {e}') from None
    for key in model_state:  # the file leaves BatchNorm's step counters out at times: keep the model's
        state.setdefault(key, model_state[key])
    backbone.load_state_dict(state)
    print(f'loaded {len(model_state)} tensors of {name} from {path}'
          + (f" (keys under '{prefix}')" if prefix else '')
          + (f'; left out {len(unmatched)} of the file ({_first(unmatched, 2)})' if unmatched else ''))
