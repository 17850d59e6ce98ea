"""What every stage script does around its training loop: errors, run folders, resume."""
import json
import os
import socket
import sys
import time

import torch

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, one run per folder is then up to the user
    fcntl = None

from methods import get_method
from stages.schema import AFTER_PRETEXT, ENV, OPTIONAL_AFTER_PRETEXT, RESUME_MAY_DIFFER, SCHEMAS, add_paths
from utils import distributed
from utils.checkpoint import CANNOT_WRITE, atomic_save, cannot_write, load_file
from utils.common import get_device, keep_freed_memory, seed_all
from utils.config import load_config, read_yaml, save_config, to_plain
from utils.errors import UserError, one_line
from utils.logger import write_json
from utils.optim import check_optimizer


def run_cli(main_fn):
    """Call a stage; a UserError becomes one line on stderr and exit code 2."""
    keep_freed_memory()
    try:
        return main_fn()
    except UserError as e:
        print(f'error: {one_line(e)}', file=sys.stderr)
        raise SystemExit(2)
    except OSError as e:
        if e.errno not in CANNOT_WRITE:
            raise
        print(f'error: {cannot_write(e.filename or "the output", e.strerror)}', file=sys.stderr)
        raise SystemExit(2)
    except KeyboardInterrupt:
        print('interrupted; the last finished epoch is in checkpoint.pth.tar (continue with --resume)',
              file=sys.stderr)
        raise SystemExit(130)
    finally:
        distributed.shutdown()


def prepare(args, stage):
    """The first lines of every stage ('pretext', 'clustering', 'selflabel'): the resolved config (with SCAN's
    paths, the method's criterion_kwargs checked and completed, the backbone and evaluation transform of the
    pretext run where the config leaves them out), the method class, the device; seeds everything. Every
    mistake in the config is a UserError here, before anything is written."""
    schema = SCHEMAS[stage]
    cfg = add_paths(load_config(args, ENV, schema, stage, {s: SCHEMAS[s] for s in SCHEMAS if s != stage}))
    cfg.stage = stage  # error messages name keys as this stage takes them (utils.stages.override)
    if 'criterion' in schema:  # the loss is the setup's; SCAN's configs name it twice
        if cfg.criterion not in (None, cfg.setup):
            raise UserError(f"criterion '{cfg.criterion}' differs from setup '{cfg.setup}'; drop criterion or "
                            'make them equal')
        cfg.criterion = cfg.setup
    if isinstance(cfg.num_classes, str) and cfg.num_classes != 'auto':
        raise UserError(f"num_classes must be a number or auto, got {cfg.num_classes!r}")
    check_optimizer(cfg)
    method = get_method(stage, cfg.setup)
    cfg.criterion_kwargs = method.resolve_kwargs(cfg.setup, cfg.criterion_kwargs)
    if 'model_selection' in schema and cfg.model_selection is None:
        cfg.model_selection = method.model_selection
    if stage != 'pretext':
        inherit_pretext_settings(cfg)
    device = distributed.init(get_device(cfg))  # joins torchrun's processes when launched by torchrun
    seed_all(cfg.seed)  # the same seed in every process: shuffling and augmentation stay in step
    return cfg, method, device


def inherit_pretext_settings(cfg):
    """Backbone, backbone_kwargs, backbones and transformation_kwargs: the pretext run's (its config.yml) where the
    config leaves them out (or their entries unset or auto); a value that contradicts it is a UserError naming both.
    The frozen-backbone settings follow the pretext's setup (follow_frozen_backbone)."""
    path = os.path.join(cfg.pretext_dir, 'config.yml')
    saved = read_yaml(path, 'pretext run config') if os.path.isfile(path) else {}
    follow_frozen_backbone(cfg, saved.get('setup') == 'pretrained')
    size, mine = (saved.get('db_kwargs') or {}).get('image_size'), (cfg.get('db_kwargs') or {}).get('image_size')
    if size is not None and mine != size:  # the neighbours (and cached features) are those of images of that size
        raise UserError(f'db_kwargs.image_size is {mine} here but {size} in the pretext run ({path}): its neighbours '
                        f'and features are of {size}-pixel images; give db_kwargs.image_size={size}')
    for key, spec in AFTER_PRETEXT.items():
        mine, theirs = to_plain(cfg[key]), saved.get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict) and mine:  # what mine leaves open (auto) is theirs
            mine = cfg[key] = {**theirs, **{k: v for k, v in mine.items() if v not in (None, 'auto')}}
        if mine == spec.default and theirs is not None:
            cfg[key] = theirs
        elif mine != spec.default and theirs is not None and mine != theirs:
            raise UserError(f'{key} is {mine!r} here but {theirs!r} in the pretext run ({path}): the pretext '
                            f'model was trained with that one; drop {key} from the config or make them equal')
        elif cfg[key] is None and key not in OPTIONAL_AFTER_PRETEXT:
            raise UserError(f"'{key}' is not set and there is no pretext run config ({path}) to take it from; "
                            f'set {key} in the config, or run simclr.py first')


def follow_frozen_backbone(cfg, pretrained):
    """After a pretext stage that trained nothing (setup: pretrained) the backbone holds the pretrained weights and
    the projection head is random: the heads sit on the backbone, which stays frozen, and train on its cached
    features. update_cluster_head_only and cache_features left unset follow from that (false after a trained
    pretext); an explicit false fine-tunes the backbone. The K estimate's k_median left unset is 'communities' on
    such features, 'clusters' on trained ones (neighbors/num_clusters.py)."""
    if pretrained and cfg.get('heads_on') == 'projection':
        print('heads_on: backbone (the pretext run is a pretrained backbone: its projection head was never trained)')
        cfg.heads_on = 'backbone'
    if 'update_cluster_head_only' in cfg and cfg.update_cluster_head_only is None:
        cfg.update_cluster_head_only = pretrained
    if cfg.get('cache_features') is None:
        cfg.cache_features = bool(cfg.get('update_cluster_head_only', pretrained))
    if 'k_median' in cfg and cfg.k_median is None:
        cfg.k_median = 'communities' if pretrained else 'clusters'


def training_model(model, cfg, device):
    """The module the training loop calls: `model` in channels_last memory format, with SyncBatchNorm and
    DistributedDataParallel under torchrun, compiled with `compile: true`. It shares `model`'s parameters, so
    checkpoints and evaluation keep using `model`."""
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, cfg, device)
    return torch.compile(net) if cfg.compile else net


def trainable(model):
    """The parameters the optimiser updates: those a frozen trunk leaves trainable."""
    return [p for p in model.parameters() if p.requires_grad]


def config_for_checkpoint(cfg, stage):
    return {k: to_plain(cfg[k]) for k in SCHEMAS[stage] if k in cfg}


_HELD_LOCKS = {}  # run folder -> its open lock file, held until this process exits


def lock_run_folder(folder):
    """One run per output folder: an exclusive flock on <folder>/.run.lock for the life of this process. The
    kernel drops it when the process ends, however it ends, so a killed run never blocks --resume."""
    key = os.path.realpath(folder)
    if fcntl is None or not distributed.is_main() or key in _HELD_LOCKS:
        return
    os.makedirs(folder, exist_ok=True)
    handle = open(os.path.join(folder, '.run.lock'), 'a+')
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or 'another process'
        handle.close()
        raise UserError(f'{folder} is in use by another run ({holder}); wait for it to end, or give this run '
                        'another root_dir or name') from None
    handle.seek(0)
    handle.truncate()
    handle.write(f'pid {os.getpid()} on {socket.gethostname()}\n')
    handle.flush()
    _HELD_LOCKS[key] = handle
    for name in os.listdir(folder):  # what a run killed inside a save left; no other run writes here now
        if name.startswith('.') and name.endswith('.tmp'):
            os.remove(os.path.join(folder, name))


def cap_epochs(cfg, num_images):
    """A run's length in optimiser steps, as whole epochs, so that one config suits a folder of 200 images and one
    of 50,000:
    - `steps`: about that many steps, ceil(steps / steps per epoch) epochs, at least `min_epochs` and at most
      `epochs`;
    - `max_steps`: at most about that many steps, so that epochs sized for a small folder do not make a large one
      take hours.
    Call before start_run: config.yml, the schedule and --resume all see the epochs kept."""
    if cfg.get('steps') and cfg.get('max_steps'):
        raise UserError('give steps (a length with min_epochs and epochs as its bounds) or max_steps (a cap), not both')
    per_epoch = max(1, num_images // cfg.batch_size)  # batch_size is the global batch (all processes together)
    if cfg.get('steps'):
        epochs = min(cfg.epochs, max(cfg.get('min_epochs') or 1, -(-cfg.steps // per_epoch)))
        print(f"steps {cfg.steps}: {epochs} epochs of {per_epoch} step{'s' if per_epoch > 1 else ''} (between "
              f"min_epochs {cfg.get('min_epochs') or 1} and epochs {cfg.epochs})")
        cfg.epochs = epochs
    elif cfg.get('max_steps') and per_epoch * cfg.epochs > cfg.max_steps:
        epochs = -(-cfg.max_steps // per_epoch)
        print(f'max_steps {cfg.max_steps}: {epochs} epochs of {per_epoch} steps instead of {cfg.epochs}')
        cfg.epochs = epochs


def config_changes(old, new, prefix=''):
    """[(dotted key, old value, new value)] of the leaves that differ between two config dicts (a key missing on one
    side is None there)."""
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f'{prefix}{key}.')
        elif a != b:
            changes.append((f'{prefix}{key}', a, b))
    return changes


def short(value, width=40):
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + '...'


def start_run(folder, cfg, stage, checkpoint_path, resume):
    """Prepare a run folder. Returns the checkpoint to continue from, or None for a fresh start.

    Without --resume an existing checkpoint is never touched: that is an error. With
    --resume, the checkpoint's config must equal this one (bar paths and devices). A folder another run is
    writing into is refused (lock_run_folder).
    """
    lock_run_folder(folder)
    state = None
    if os.path.isfile(checkpoint_path):
        if not resume:
            raise UserError(f'{folder} already holds a run (checkpoint.pth.tar); pass --resume to continue that '
                            'run, or name=NEW to start another one in its own folder')
        state = load_file(checkpoint_path, 'checkpoint')
        saved = state.get('config', {})
        now = config_for_checkpoint(cfg, stage)
        changed = [c for c in config_changes(saved, now) if c[0].split('.')[0] not in RESUME_MAY_DIFFER]
        if changed:
            diffs = ', '.join(f'{key} ({short(old)} -> {short(new)})' for key, old, new in changed[:4])
            more = f' and {len(changed) - 4} more' if len(changed) > 4 else ''
            raise UserError(f'cannot resume {checkpoint_path}: the config changed in {diffs}{more}; restore those '
                            'values, or give name=NEW to start another run in its own folder')
    os.makedirs(folder, exist_ok=True)
    save_config(cfg, os.path.join(folder, 'config.yml'))  # rank 0 only, as every write
    return state


def save_checkpoint(path, cfg, stage, **state):
    atomic_save({**state, 'config': config_for_checkpoint(cfg, stage)}, path)


def write_metrics(folder, result, t_start, rerun):
    """<folder>/metrics.json: `result` and 'seconds', the stage's time since t_start. A call that trained nothing
    (`rerun`: --resume of a finished run, or mine-only over a finished pretext run) keeps the run's own 'seconds'
    and adds its own as 'rerun_seconds'. Returns what was written."""
    path = os.path.join(folder, 'metrics.json')
    seconds = round(time.time() - t_start, 1)
    earlier = {}
    if rerun and os.path.isfile(path):
        with open(path) as f:
            earlier = json.load(f)
    if 'seconds' in earlier:
        result = {**result, 'seconds': earlier['seconds'], 'rerun_seconds': seconds}
    else:
        result = {**result, 'seconds': seconds}
    write_json(path, result)
    return result
