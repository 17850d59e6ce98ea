"""Backbones from timm and torchvision by name (`backbone: timm/<model>`, `backbone: torchvision/<model>`), and the
loader of the weight files users bring (`backbone_weights: PATH`).

The loader reads the file with weights_only=True and finds the backbone's tensors in it, whatever the layout
(SPEC section 7): a plain state dict (torchvision, timm, released DINO/DINOv2 backbones), a training checkpoint that
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


def kwargs_error(backbone, e):
    return UserError(f'backbone_kwargs not understood by {backbone}: {e} (the override backbone_kwargs={{}} clears '
                     'those of the config file)')


def timm_backbone(name, in_channels=3, **kwargs):
    from utils.tv import torchvision  # noqa: F401  timm imports torchvision: the CPU workaround comes first
    import timm
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **kwargs)
    except RuntimeError as e:
        if 'Unknown model' not in str(e):
            raise
        raise UserError(f"timm has no model '{name}'; list them with "
                        "python -c \"import timm; print(timm.list_models('*resnet*'))\"") from None
    except TypeError as e:
        raise kwargs_error(f'timm/{name}', e) from None
    return {'backbone': model, 'dim': model.num_features}


def torchvision_backbone(name, in_channels=3, **kwargs):
    from utils.tv import torchvision
    if in_channels != 3:
        raise UserError(f"torchvision/{name} takes 3-channel images; set channels: 3 (grey images are converted)")
    if name not in torchvision.models.list_models(torchvision.models):
        raise UserError(f"torchvision has no model '{name}'; valid: "
                        f"{', '.join(torchvision.models.list_models(torchvision.models))}")
    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except TypeError as e:
        raise kwargs_error(f'torchvision/{name}', e) from None
    for attr in CLASSIFIERS:
        last = getattr(model, attr, None)
        if isinstance(last, nn.Sequential):  # e.g. EfficientNet, ViT: (dropout, linear)
            linears = [m for m in last if isinstance(m, nn.Linear)]
            if linears:
                setattr(model, attr, nn.Identity())
                return {'backbone': model, 'dim': linears[0].in_features}
        if isinstance(last, nn.Linear):
            setattr(model, attr, nn.Identity())
            return {'backbone': model, 'dim': last.in_features}
    raise UserError(f'torchvision/{name}: no classifier layer ({", ".join(CLASSIFIERS)}) to take the features '
                    'before; use a timm model instead')


def library_backbone(name, in_channels=3, **kwargs):
    library, _, model = name.partition('/')
    if not model:
        raise UserError(f"backbone '{name}' names no model: write {library}/<model name>")
    return (timm_backbone if library == 'timm' else torchvision_backbone)(model, in_channels, **kwargs)


def read_weights(path):
    """The tensors of a weights file, {key: tensor}, from the first nested dict that holds them."""
    if not os.path.isfile(path):
        raise UserError(f'backbone_weights: no such file: {path}')
    try:
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
        raise UserError(f'the file does not fit the model: ' + (f'shapes differ: {_first(wrong)}; ' if wrong else '')
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
