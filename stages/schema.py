"""The config keys of each stage, their defaults and valid choices (SCAN's names where it has them).

A method's own settings are its criterion_kwargs and its top-level keys (Method.settings), declared with their
defaults in its module (methods/) and added to its stage's keys here; the `setup` choices are the method
registries' names.
"""
import os

import methods
from data import DATASETS
from evaluation.selection import SELECTIONS
from models import BACKBONES
from models.models import HEADS
from neighbors.num_clusters import MEDIANS
from utils.config import REQUIRED, Key
from utils.stages import STAGES


def _setups(stage):
    return lambda: tuple(methods.REGISTRIES[stage])


def method_settings(stage):
    """The top-level keys the stage's methods declare as their own (Method.settings), any setup's: a config
    may set one for a setup that ignores it, as SCAN's configs do. Two methods declaring a key agree on it."""
    keys = {}
    for name, method in methods.REGISTRIES[stage].items():
        for key, spec in method.settings.items():
            spec = spec if isinstance(spec, Key) else Key(spec)
            assert keys.setdefault(key, spec) == spec, f'{name} declares {key} unlike another {stage} method'
    return keys


ENV = {
    'root_dir': Key(REQUIRED, str),       # outputs: <root_dir>/<name>/{pretext,scan,selflabel}/
    'data_root': Key(REQUIRED, str),      # datasets are looked up here; no paths in code
    'download': True,                      # let torchvision download CIFAR/STL when they are missing
}

COMMON = {
    'name': Key(None, str),               # output folder under root_dir; default: run_name()
    'train_db_name': Key(REQUIRED, str, DATASETS),
    'val_db_name': Key(REQUIRED, str, DATASETS),
    'train_split': 'train',
    'val_split': 'test',
    'train_subset': Key(None, int, minimum=1),  # train on a fixed random subset of this many images
    'val_subset': Key(None, int, minimum=1),
    'db_kwargs': {},                      # image_folder: {path, labels}; imagenet: {path, subset_file}
    'channels': Key(3, int, (1, 3)),      # images are converted to this many channels
    # clusters: a number, or auto: the clustering stage estimates it from the train split's mined neighbours
    # (neighbors/num_clusters.py, within k_range); the self-label stage and eval.py read it from the clustering model
    'num_classes': Key(None, (int, str)),
    'backbone': Key(REQUIRED, str, BACKBONES),
    # the library's or built-in backbone's keyword arguments; a file that sets them replaces a base file's
    'backbone_kwargs': Key({}, dict, replace=True),
    # a pretrained backbone's weights file (any layout of models/pretrained.py); read by the pretext stage
    'backbone_weights': Key(None, str),
    # several pretrained backbones side by side, in place of backbone (setup: pretrained): a list of
    # {backbone, backbone_weights, backbone_kwargs, normalize}; their features are concatenated (models.SideBySide)
    'backbones': Key(None, list),
    # evaluation transform {crop_size, normalize: {mean, std}}; left out: the images' size and the train split's
    # statistics (augmentation_kwargs without normalize or crop size take these)
    'transformation_kwargs': Key({}, dict),
    'epochs': Key(REQUIRED, int, minimum=1),
    'max_steps': Key(None, int, minimum=1),  # fewer epochs when epochs x (images // batch_size) steps exceed it
    # a length in optimiser steps instead: about this many, in whole epochs, no fewer than min_epochs and no more
    # than epochs (stages/run.cap_epochs)
    'steps': Key(None, int, minimum=1),
    'min_epochs': Key(None, int, minimum=1),
    'batch_size': Key(REQUIRED, int, minimum=1),
    'num_workers': Key(2, int, minimum=0),
    'optimizer': Key('sgd', str, ('sgd', 'adam', 'adamw')),
    'optimizer_kwargs': Key(REQUIRED, dict),
    'scheduler': Key('constant', str, ('constant', 'cosine', 'step')),
    'scheduler_kwargs': {},
    'seed': 0,
    'device': Key('auto', str, ('auto', 'cpu', 'cuda')),
    'gpus': Key(None, str),
    # speed (docs/speed.md): none of them changes what is learnt beyond float rounding
    'amp': Key('none', str, ('none', 'bf16', 'fp16')),  # mixed precision of the forward pass
    'channels_last': False,               # NHWC memory format (faster convolutions on recent GPUs)
    'compile': False,                     # torch.compile the training model
    'sync_bn': False,                     # under torchrun: BatchNorm statistics over the global batch
    # the feature cache of a frozen trunk (stages/feature_cache.py) on disk, memory-mapped: float16 halves its size
    'feature_cache_dtype': Key('float32', str, ('float32', 'float16')),
}

PRETEXT = {
    **COMMON,
    **method_settings('pretext'),
    'setup': Key('simclr', str, _setups('pretext')),
    'model_kwargs': {'head': 'mlp', 'features_dim': 128},
    'criterion': Key(None, str, _setups('pretext')),  # SCAN's configs name it; = setup
    'criterion_kwargs': {},               # the method's keyword arguments (defaults in its module)
    'augmentation_strategy': Key('simclr', str, ('simclr',)),
    'augmentation_kwargs': Key(REQUIRED, dict),
    'augment_on_device': False,           # batched augmentation on the training device (fast path)
    'num_neighbors': Key(20, int, minimum=1),  # K mined per train sample (written as K + 1 columns)
    'num_val_neighbors': 5,
    'mining_features': Key('head', str, ('head', 'backbone')),
    'exact_search_max': 100000,           # above this many images: the approximate faiss index, its recall reported
                                          # (benchmarks/scale.py measures both searches side by side)
    'knn_k': 100,                         # weighted-kNN monitoring (labels used only for the report)
    'knn_temperature': 0.1,
    'knn_every': Key(1, int, minimum=0),  # epochs between kNN reports; 0 = only at the end
}

# The stages after the pretext take these from the pretext run's config.yml when the config leaves them at
# their default and refuse a value that contradicts it.
AFTER_PRETEXT = {
    'backbone': Key(None, str, BACKBONES),
    'backbone_kwargs': Key({}, dict, replace=True),
    'backbones': Key(None, list),
    'transformation_kwargs': Key(None, dict),
}
OPTIONAL_AFTER_PRETEXT = ('backbones',)  # unset in the pretext run too: one backbone

CLUSTERING = {
    **COMMON,
    **AFTER_PRETEXT,
    **method_settings('clustering'),
    'setup': Key('scan', str, _setups('clustering')),
    'criterion': Key(None, str, _setups('clustering')),  # SCAN's configs name it; it must equal setup
    'criterion_kwargs': {},
    'k_range': [2, 20],
    # the K estimate's size bounds are shares of the median size of: the clusters as small ones merge (features
    # trained on these images, where a class falls into sub-style fragments) or the communities first found (frozen
    # pretrained features, where classes join in pairs); unset: communities after a pretext with setup: pretrained
    'k_median': Key(None, str, MEDIANS),
    'overclustering': False,              # allow num_classes above the dataset's class count
    'num_heads': Key(1, int, minimum=1),
    # freeze the backbone (eval mode, no gradients); unset: true after a pretext with setup: pretrained
    'update_cluster_head_only': Key(None, bool),
    # with the trunk frozen: compute what the heads see of each image once, and train the heads on those vectors;
    # unset: true when the trunk is frozen
    'cache_features': Key(None, bool),
    'head_init': Key('random', str, ('random', 'kmeans', 'graph')),  # k-means or neighbour-graph centroids
    # the heads: linear (SCAN's) or TEMI's MLP (models.models.MLPHead; cluster_head_kwargs hidden_dim 512,
    # bottleneck_dim 256, nlayers 2 by default)
    'cluster_head': Key('linear', str, tuple(HEADS)),
    'cluster_head_kwargs': Key({}, dict),
    # the heads' input: the backbone features (SCAN, NNM), the same L2-normalised, or the pretext's L2-normalised
    # projection, trained on (after a pretext with setup: pretrained, a backbone's: the projection head is untrained)
    'heads_on': Key('backbone', str, ('backbone', 'backbone_normalized', 'projection')),
    'num_neighbors': Key(20, int, minimum=1),  # the neighbour of each anchor is drawn from its first K mined ones
    'augmentation_strategy': Key('ours', str, ('simclr', 'ours')),
    'augmentation_kwargs': Key(REQUIRED, dict),
    'augment_on_device': False,
    # the head and epoch kept: the best by a label-free criterion on the val split's mined neighbours, or the last
    # epoch's (evaluation/selection.py); unset: the method's own (TURTLE: agreement, the others: val_loss)
    'model_selection': Key(None, str, SELECTIONS),
    'scan_folder': 'scan',                # <root_dir>/<name>/<scan_folder>/: keep SCAN and NNM runs side by side
}

SELFLABEL = {
    **COMMON,
    **AFTER_PRETEXT,
    **method_settings('selflabel'),
    'setup': Key('selflabel', str, _setups('selflabel')),
    'overclustering': False,
    'num_heads': Key(1, int, (1,)),        # SCAN's configs name it: self-labelling trains one head
    'criterion_kwargs': {},
    'augmentation_strategy': Key('ours', str, ('simclr', 'ours')),
    'augmentation_kwargs': Key(REQUIRED, dict),
    'augment_on_device': False,
    # the model written: the epoch (0 = the clustering model itself) best by a label-free criterion, or the last
    # (evaluation/selection.py); unset: the method's own
    'model_selection': Key(None, str, SELECTIONS),
    # freeze the trunk and train the head alone on what it sees of each image, computed once (no augmentation);
    # unset: true after a pretext with setup: pretrained
    'cache_features': Key(None, bool),
    'use_ema': False,
    'ema_alpha': 0.999,
    'scan_folder': 'scan',                # where the clustering model is read from
    'selflabel_folder': 'selflabel',      # <root_dir>/<name>/<selflabel_folder>/
}

SCHEMAS = dict(zip(STAGES, (PRETEXT, CLUSTERING, SELFLABEL)))

# keys that may change between an interrupted run and its resumption
RESUME_MAY_DIFFER = ('root_dir', 'data_root', 'download', 'device', 'gpus', 'num_workers', 'amp', 'channels_last',
                     'compile', 'sync_bn')


def run_name(cfg):
    """`name`; else an image folder's own name (db_kwargs.path's last part); else train_db_name."""
    path = (cfg.get('db_kwargs') or {}).get('path') if cfg.train_db_name == 'image_folder' else None
    return cfg.get('name') or (os.path.basename(os.path.abspath(path)) if path else None) or cfg.train_db_name


def add_paths(cfg):
    """SCAN's derived paths: <root_dir>/<name>/{pretext,scan,selflabel}/..."""
    base = os.path.join(cfg.root_dir, run_name(cfg))
    for stage in STAGES.values():
        folder = os.path.join(base, cfg.get(f'{stage.folder}_folder') or stage.folder)
        cfg[f'{stage.folder}_dir'] = folder
        cfg[f'{stage.folder}_checkpoint'] = os.path.join(folder, 'checkpoint.pth.tar')
        cfg[f'{stage.folder}_model'] = os.path.join(folder, 'model.pth.tar')
    cfg.topk_neighbors_train_path = os.path.join(cfg.pretext_dir, 'topk-train-neighbors.npy')
    cfg.topk_neighbors_val_path = os.path.join(cfg.pretext_dir, 'topk-val-neighbors.npy')
    return cfg
