"""Datasets by name. Every item is {'image', 'index', 'target'} with target -1 when unlabelled."""
import inspect

import numpy as np

from data.base import ImageDataset, SubsetDataset
from data.cifar import CIFAR10, CIFAR20
from data.digits import Digits
from data.folder import ImageFolder, ImageNetSubset
from data.stl import STL10
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


__all__ = ['DATASETS', 'ImageDataset', 'build_dataset', 'get_dataset', 'same_data']
