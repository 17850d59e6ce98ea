"""Saving and loading: atomic writes, safe loading of downloaded files, resume."""
import os
import pickle
import tempfile

import numpy as np
import torch

from utils.errors import UserError

PREFIXES = ('module.', '_orig_mod.')  # DataParallel/DDP and torch.compile wrappers


def _atomic(path, write):
    """Write through a temporary file and rename; under torchrun only rank 0 writes."""
    from utils.distributed import is_main
    if not is_main():
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(obj, path):
    """torch.save through a temporary file in the same folder, then rename: never half-written."""
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def atomic_save_npy(array, path):
    def write(tmp):
        with open(tmp, 'wb') as f:
            np.save(f, array)
    _atomic(path, write)


def atomic_write_text(path, text):
    def write(tmp):
        with open(tmp, 'w') as f:
            f.write(text)
    _atomic(path, write)


def _numpy_globals():
    """What SCAN's and NNM's checkpoints pickle besides tensors (numpy scalars in 'head', 'best_loss')."""
    allowed = [np.dtype, np.ndarray]
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            mod = __import__(module, fromlist=['scalar', '_reconstruct'])
            allowed += [mod.scalar, mod._reconstruct]
        except (ImportError, AttributeError):
            pass
    allowed += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]
    return allowed


def load_file(path, what='checkpoint'):
    """Load a checkpoint without running code from it (weights_only plus a numpy allow-list)."""
    if not os.path.isfile(path):
        raise UserError(f'{what} not found: {path}')
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        # torch reports every weights_only failure this way; the reason follows 'WeightsUnpickler error:'
        reason = str(e).split('WeightsUnpickler error:')[-1].strip().splitlines()[0].split('. ')[0].strip()
        if 'global' in reason:  # the file names a function or class outside the allow-list: code could run
            raise UserError(f'refusing to load {what} {path}: it holds more than weights ({reason})') from None
        raise UserError(f'cannot read {what} {path}: {reason}; the file is damaged or not a checkpoint') from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f'cannot read {what} {path}: {first}; the file is damaged or not a checkpoint') from None


def strip_prefixes(state_dict):
    """Drop 'module.' / '_orig_mod.' prefixes left by DataParallel, DDP and torch.compile."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def load_weights(model, state_dict, what, strict=True):
    """Load a state_dict; a mismatch is a UserError that names the first few differing keys."""
    state_dict = strip_prefixes(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}' for k, v in own.items()
              if k in state_dict and hasattr(state_dict[k], 'shape') and state_dict[k].shape != v.shape]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if shapes:
            parts.append('shape mismatch: ' + '; '.join(shapes[:3]))
        if strict and missing:
            parts.append(f'{len(missing)} missing keys (e.g. {", ".join(missing[:3])})')
        if strict and unexpected:
            parts.append(f'{len(unexpected)} unexpected keys (e.g. {", ".join(unexpected[:3])})')
        raise UserError(f'{what} does not fit this model (wrong backbone or class count?): ' + ', '.join(parts))
    model.load_state_dict(state_dict, strict=False)
    return missing, unexpected


def load_pretext_model(model, path):
    """Load a pretext model.pth.tar (SCAN's bare state_dict, or {'model': state_dict}) into `model`."""
    state = load_file(path, 'pretext model')
    state = strip_prefixes(state.get('model', state))
    if not any(k.startswith('contrastive_head.') for k in state):
        raise UserError(f'{path} is not a pretext model (no contrastive_head.*); give the pretext stage\'s model.pth.tar')
    load_weights(model, state, f'pretext model {path}')
