"""The feature cache: what the clustering heads see of each image, computed once under a frozen trunk
(`cache_features: true`; in the clustering stage with `update_cluster_head_only: true`, in the self-label stage the
trunk is then frozen). The heads train on it through models.models.HeadsOnFeatures and data/feature_batches.py.

With the trunk frozen, what the heads see of an image (its evaluation view, through the backbone and, with
`heads_on: projection`, the projection head) never changes, so the clustering stage computes it once for the train
and val splits and then trains, evaluates and initialises its heads on those vectors: no image forward per step.

The vectors are kept in <pretext folder>/feature_cache/<key>-<dtype>.npy, the key a hash of the trunk's weights, the
images (files' paths, sizes and times, or pixels) and the evaluation transform: every stage over the same frozen
trunk (the pretext stage of `setup: pretrained`, each clustering setup, self-labelling) computes them once between
them. Deleting the folder frees the space; a changed weight, image or transform never reads a stale file.

A stage reads the file memory-mapped (copy on write: nothing is written back), so a million 1,280-d vectors (5 GB
in float32) are paged in as batches touch them rather than loaded whole. `feature_cache_dtype: float16` stores
them in half the space (converted from a float32 file of the same key when there is one); the heads read each
batch as float32. The trunk computes them in the precision of `amp` (bf16: faster than float32 on a GPU or a CPU
with AVX-512 BF16); the file keeps what the first stage to compute it computed, whatever a later stage's amp.
"""
import functools
import hashlib
import os
import time

import numpy as np
import torch

from data import same_data
from data.feature_batches import FeatureSet
from data.loaders import eval_loader
from evaluation.features import extract_features
from models.models import HeadsOnFeatures
from utils.checkpoint import atomic_save_npy
from utils.distributed import is_main
from utils.errors import UserError
from utils.logger import progress
from utils.optim import autocast
from utils.stages import override


def check_cache(cfg, method):
    """The clustering stage's cache_features: only under a frozen trunk, and for methods that need no image view."""
    if cfg.cache_features and not cfg.update_cluster_head_only:
        raise UserError(f"cache_features needs a frozen trunk: give {override(cfg, 'update_cluster_head_only', 'true')}"
                        f" (or {override(cfg, 'cache_features', 'false')} to train the backbone too)")
    if cfg.cache_features and any(transform == 'weak' for _, transform in method.batch_views().values()):
        raise UserError(f"cache_features holds one view per image; setup '{cfg.setup}' with its weak view needs "
                        f"images: give {override(cfg, 'local_neighbor_view', 'strong')} or "
                        f"{override(cfg, 'cache_features', 'false')}")


def cache_key(modules, dataset):
    """A hash of the modules' weights, the dataset's images and labels, and its transform."""
    h = hashlib.sha256()
    for i, module in enumerate(modules):
        for name, tensor in module.state_dict().items():
            h.update(f'{i}.{name}\n'.encode())
            h.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(f'{type(dataset).__name__} {len(dataset)} channels={dataset.channels} {dataset.transform!r}\n'.encode())
    h.update(np.asarray(dataset.targets).tobytes())
    dataset.fingerprint(h)
    return h.hexdigest()[:24]


CPU_FEATURE_BATCH = 32


def trunk_features(model, modules, dataset, cfg, device, store=True):
    """model(x, 'backbone') over `dataset` in order, unnormalised [N, D] (feature_cache_dtype): computed by the frozen
    `modules` (the trunk that produces them) once, then read memory-mapped from pretext_dir/feature_cache (module
    docstring); not written there without `store` (images seen once, e.g. eval.py --predict). A float16 cache is
    made from the float32 one of the same key when that exists (what the trunk would give, without the trunk)."""
    dtype = cfg.get('feature_cache_dtype') or 'float32'
    stem = os.path.join(cfg.pretext_dir, 'feature_cache', cache_key(modules, dataset))
    path = f'{stem}-{dtype}.npy'
    features = read_cache(path, len(dataset), dtype)
    if features is not None:
        return features
    if dtype != 'float32':
        features = read_cache(f'{stem}-float32.npy', len(dataset), 'float32')
    if features is None:
        features = compute_features(model, dataset, cfg, device)
    check_finite(features, dtype)
    features = features.to(getattr(torch, dtype))
    if store and is_main():
        try:
            atomic_save_npy(features.numpy(), path)
        except UserError as e:  # a read-only or full pretext folder: this run goes on without the cache
            print(f'warning: the features are not cached ({e})')
    return features


def read_cache(path, rows, dtype):
    """The cached features at `path` memory-mapped, or None when there is no such file or it is damaged (then
    computed again and rewritten)."""
    if not os.path.isfile(path):
        return None
    try:
        features = np.load(path, mmap_mode='c', allow_pickle=False)
        if features.ndim == 2 and len(features) == rows and features.dtype == np.dtype(dtype):
            return torch.from_numpy(features)
        raise ValueError(f'shape {features.shape} {features.dtype}')
    except (ValueError, OSError, EOFError) as e:
        print(f'warning: feature cache {path} is unreadable ({str(e).splitlines()[0]}); computing the features '
              'again')
    return None


def compute_features(model, dataset, cfg, device):
    """The trunk's features of `dataset` [N, D] float32, in order, in the precision of amp."""
    if cfg.get('channels_last'):  # as training_model does: about 1.8x the throughput of NCHW on this CPU
        model.to(memory_format=torch.channels_last)
    # on a CPU a small batch keeps a convolution's activations in cache: EfficientNet-Lite at 128 pixels extracts
    # far more images per second in batches of 32 than of 256 (on a GPU the config's batch is used)
    batch = min(cfg.batch_size, CPU_FEATURE_BATCH) if torch.device(device).type == 'cpu' else None
    loader = eval_loader(dataset, cfg, batch)
    with autocast(cfg, torch.device(device)):  # amp: bf16 is faster on a GPU or a CPU with AVX-512 BF16
        return extract_features(model, progress(loader, len(loader), f'features of {len(dataset)} images'), device,
                                'backbone', normalize=False)[0]


def check_finite(features, dtype):
    """Stop on features no head can cluster: NaN or infinite values from the trunk (weights that do not suit it), or
    values beyond float16's range when the cache is to hold float16."""
    bad = (~torch.isfinite(features).all(1)).nonzero()
    if len(bad):
        raise UserError(f'the frozen trunk gives NaN or infinite features for {len(bad)} of {len(features)} images '
                        f'(the first: image {int(bad[0])}): its weights are damaged or not this backbone\'s; check '
                        'backbone_weights and backbone')
    largest = float(features.abs().max()) if features.numel() else 0.0
    if dtype == 'float16' and largest > torch.finfo(torch.float16).max:
        raise UserError(f'the frozen trunk\'s features reach {largest:.3g}, beyond float16\'s range: set '
                        'feature_cache_dtype: float32')


def cached(model, dataset, cfg, device, store=True):
    """The features the heads see of `dataset` (evaluation transform, frozen trunk): a FeatureSet."""
    return FeatureSet(trunk_features(model, model.trunk(), dataset, cfg, device, store), dataset)


def heads_input(model, cfg, device, val_set, train_split):
    """What the clustering and self-label heads read: (val, train, wrap). With cache_features, the frozen trunk's
    features of each image, computed once (wrap(model) = HeadsOnFeatures(model) reads them); else the images and
    wrap(model) = model. train_split() gives the train split under the evaluation transform; train() calls it, once,
    only when a stage needs it (the val split itself when val is train)."""
    if not cfg.cache_features:
        return val_set, functools.cache(lambda: val_set if same_data(cfg) else train_split()), lambda m: m
    t0 = time.time()
    val = cached(model, val_set, cfg, device)
    print(f'cached features: {len(val)} val images through the frozen trunk in {time.time() - t0:.1f} s; the heads '
          'train on them')
    return val, functools.cache(lambda: val if same_data(cfg) else cached(model, train_split(), cfg, device)), \
        HeadsOnFeatures
