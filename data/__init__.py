"""Datasets by name. Every item is {'image', 'index', 'target'} with target -1 when unlabelled."""
import inspect

import numpy as np

from data.base import ImageDataset, SubsetDataset
from data.cifar import CIFAR10, CIFAR20
from data.digits import Digits
from data.folder import ImageFolder, ImageNetSubset
from data.stl import STL10
from data.transforms import val_transform
from utils.errors import UserError

DATASETS = {
    'cifar-10': CIFAR10,
    'cifar-20': CIFAR20,
    'stl-10': STL10,
    'imagenet': ImageNetSubset,
    'image_folder': ImageFolder,
    'digits': Digits,
}


def build_dataset(name, root, split, db_kwargs=None, channels=None, download=True, transform=None):
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; valid: {', '.join(DATASETS)}")
    cls = DATASETS[name]
    kwargs = dict(db_kwargs or {})
    accepted = set(inspect.signature(cls.__init__).parameters) - {'self', 'root', 'split', 'channels',
                                                                   'transform', 'download'}
    unknown = set(kwargs) - accepted
    if unknown:
        raise UserError(f"db_kwargs {sorted(unknown)} not understood by '{name}'; "
                        f"valid: {', '.join(sorted(accepted)) or 'none'}")
    return cls(root, split=split, channels=channels, transform=transform, download=download, **kwargs)


def subset_indices(n, size, seed=0):
    """A fixed random subset of `size` of n items (sorted), the same for every stage and run seed."""
    if size is None or size >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def get_dataset(cfg, which, transform=None):
    """The 'train' or 'val' dataset of a config (`<which>_db_name`, `<which>_split`, `<which>_subset`)."""
    dataset = build_dataset(cfg[f'{which}_db_name'], cfg.data_root, cfg[f'{which}_split'], cfg.db_kwargs,
                            cfg.channels, cfg.download, transform)
    indices = subset_indices(len(dataset), cfg.get(f'{which}_subset'))
    return dataset if indices is None else SubsetDataset(dataset, indices)


def same_data(cfg):
    """True when the val split is the train split (then kNN monitoring leaves each sample out)."""
    return (cfg.train_db_name == cfg.val_db_name and cfg.train_split == cfg.val_split
            and cfg.get('train_subset') == cfg.get('val_subset'))


def check_classes(cfg, dataset):
    """num_classes against a labelled dataset's class count (more only with overclustering)."""
    if dataset.has_labels and dataset.classes:
        n = len(dataset.classes)
        if cfg.num_classes < n or (cfg.num_classes > n and not cfg.overclustering):
            raise UserError(f'num_classes is {cfg.num_classes} but {cfg.train_db_name} has {n} classes; '
                            f'set num_classes={n} (or overclustering=true for more clusters than classes)')


def clustering_data(cfg):
    """A clustering or self-labelling run's data: (the evaluation transform, the train set without a transform
    (the training batches add theirs), the val set under the evaluation transform); num_classes checked."""
    if cfg.num_classes is None:
        raise UserError("'num_classes' is required: set it in the config file or pass num_classes=VALUE")
    evaluation = val_transform(cfg.transformation_kwargs)
    train_set = get_dataset(cfg, 'train')
    val_set = get_dataset(cfg, 'val', evaluation)
    check_classes(cfg, train_set)
    return evaluation, train_set, val_set


__all__ = ['DATASETS', 'ImageDataset', 'build_dataset', 'get_dataset', 'same_data', 'check_classes', 'clustering_data']
