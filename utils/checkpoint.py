"""Saving and loading: atomic writes, safe loading of downloaded files, resume."""
import errno
import os
import pickle
import re
import tempfile

import numpy as np
import torch

from utils.distributed import is_main
from utils.errors import UserError

PREFIXES = ('module.', '_orig_mod.')  # DataParallel/DDP and torch.compile wrappers
CANNOT_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}


def cannot_write(path, reason):
    return UserError(f'cannot write {path}: {reason}; free some space or give a writable root_dir (files already '
                     'written are kept)')


def current_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """write(tmp) into a temporary file of the same folder (a name of its own: processes never share one), then rename
    it to `path`; under torchrun only rank 0 writes. The file gets the mode open()
    would give it (0666 less the umask), not the temporary file's 0600."""
    if not is_main():
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    except OSError as e:
        if e.errno in CANNOT_WRITE:
            raise cannot_write(path, e.strerror) from None
        raise
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        os.remove(tmp)
        # on a full disk torch.save raises RuntimeError('[enforce fail at inline_container.cc:672] . unexpected
        # pos ...') and np.save OSError('... requested and ... written') without an errno
        short = (isinstance(e, RuntimeError) and 'inline_container' in str(e)) or (
            isinstance(e, OSError) and e.errno is None)
        if short or getattr(e, 'errno', None) in CANNOT_WRITE:
            reason = 'the write failed (is the disk full?)' if short else e.strerror
            raise cannot_write(path, reason) from None
        raise
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def first_non_finite(obj, key=''):
    """The key path ('model.backbone.bn.running_var') of the first floating tensor in nested dicts/lists that holds
    a NaN or an infinity; None when every value is finite."""
    if torch.is_tensor(obj):
        return key if obj.is_floating_point() and not torch.isfinite(obj).all() else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for name, value in items:
        found = first_non_finite(value, f'{key}.{name}' if key else str(name))
        if found is not None:
            return found
    return None


def atomic_save(obj, path):
    """torch.save through a temporary file in the same folder, then rename: never half-written, and never with a
    NaN or an infinity in it (the file already there is kept)."""
    bad = first_non_finite(obj)
    if bad is not None:
        kept = (f'the last good {os.path.basename(path)} is kept' if os.path.isfile(path)
                else f'no good {os.path.basename(path)} was written before')
        raise UserError(f'not saving {path}: {bad} holds NaN or infinite values (the training diverged); lower the '
                        f'learning rate; {kept}')
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_save_npy(array, path):
    def write(tmp):
        with open(tmp, 'wb') as f:
            np.save(f, array)
    atomic_write(path, write)


def atomic_write_text(path, text):
    def write(tmp):
        with open(tmp, 'w') as f:
            f.write(text)
    atomic_write(path, write)


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
        raise UserError(f'{what} not found: {path}; check the path, or run the stage that writes it first')
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            loaded = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        # torch reports every weights_only failure this way; a function or class outside the allow-list (code that
        # could run) is named 'GLOBAL module.name' somewhere in the message, other reasons follow
        # 'WeightsUnpickler error:'
        named = re.search(r'GLOBAL ([\w.]+)', str(e))
        if named:
            raise UserError(f'refusing to load {what} {path}: it holds more than weights (it names '
                            f'{named.group(1)}, which could run code); load only files you trust') from None
        reason = str(e).split('WeightsUnpickler error:')[-1].strip().splitlines()[0].split('. ')[0].strip()
        raise UserError(f'cannot read {what} {path}: {reason[:80]}; the file is damaged or not a checkpoint: download '
                        'or copy it again') from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f'cannot read {what} {path} ({type(e).__name__}): the file is damaged or not a checkpoint; '
                        'download or copy it again') from None
    bad = first_non_finite(loaded)
    if bad is not None:
        raise UserError(f'{what} {path} is unusable: {bad} holds NaN or infinite values (saved by a run that '
                        'diverged); train it again with a lower learning rate')
    return loaded


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
        raise UserError(f'{what} does not fit this model ({", ".join(parts)}); give the config whose backbone and '
                        'number of clusters the file was trained with')
    model.load_state_dict(state_dict, strict=False)
    return missing, unexpected


def restore(state, **objects):
    """Continue a run from its checkpoint `state` (DINO's restart_from_checkpoint): each keyword names a
    checkpoint entry and the object to load it into; modules go through load_weights (prefixes stripped,
    mismatches named), anything else through its own load_state_dict; None objects are skipped.
    Returns the number of finished epochs."""
    for key, obj in objects.items():
        if obj is None:
            continue
        if isinstance(obj, torch.nn.Module):
            load_weights(obj, state[key], f'checkpoint ({key})')
        else:
            obj.load_state_dict(state[key])
    return state['epoch']
