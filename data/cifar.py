"""CIFAR-10 and CIFAR-100 with its 20 superclasses, from torchvision's python-pickle layout."""
import os
import pickle

import numpy as np

from data.base import ArrayDataset
from utils.errors import UserError

CIFAR10_FILES = {'folder': 'cifar-10-batches-py', 'torchvision': 'CIFAR10',
           'train': [f'data_batch_{i}' for i in range(1, 6)], 'test': ['test_batch'],
           'meta': 'batches.meta', 'label_key': 'labels', 'names_key': 'label_names',
           'url': 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'}
CIFAR20_FILES = {'folder': 'cifar-100-python', 'torchvision': 'CIFAR100',
           'train': ['train'], 'test': ['test'],
           'meta': 'meta', 'label_key': 'coarse_labels', 'names_key': 'coarse_label_names',
           'url': 'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz'}


def _unpickle(path):
    with open(path, 'rb') as f:
        return pickle.load(f, encoding='latin1')


def ensure_files(root, folder, files, download, fetch, url):
    """Return root/folder when all files are there; else try `fetch()` (a torchvision download) once."""
    path = os.path.join(root, folder)
    missing = [f for f in files if not os.path.isfile(os.path.join(path, f))]
    if not missing:
        return path
    reason = 'downloads are off (download: false in the env file)'
    if download:
        try:
            fetch()
            if all(os.path.isfile(os.path.join(path, f)) for f in files):
                return path
            reason = 'the download did not produce them'
        except Exception as e:  # no network, refused, interrupted
            reason = f'the download failed ({type(e).__name__})'
    raise UserError(f"dataset files missing: {os.path.join(path, missing[0])}; {reason}. "
                    f"Download {url} and unpack it into {root} (data_root in the env file)")


def _load_cifar(spec, root, split, download):
    if split not in ('train', 'test'):
        raise UserError(f"split '{split}' is not one of train, test")
    files = spec[split] + [spec['meta']]

    def fetch():
        from utils.tv import torchvision
        getattr(torchvision.datasets, spec['torchvision'])(root, train=split == 'train', download=True)

    path = ensure_files(root, spec['folder'], files, download, fetch, spec['url'])
    data, labels = [], []
    for name in spec[split]:
        entry = _unpickle(os.path.join(path, name))
        data.append(np.asarray(entry['data'], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry[spec['label_key']])
    classes = _unpickle(os.path.join(path, spec['meta']))[spec['names_key']]
    return np.concatenate(data).transpose(0, 2, 3, 1), np.asarray(labels), classes


class CIFAR10(ArrayDataset):
    def __init__(self, root, split='train', download=True, channels=None, transform=None):
        data, labels, classes = _load_cifar(CIFAR10_FILES, root, split, download)
        super().__init__(data, labels, classes, channels, transform)


class CIFAR20(ArrayDataset):
    """CIFAR-100 labelled with its 20 superclasses (the file's `coarse_labels`), as in SCAN."""

    def __init__(self, root, split='train', download=True, channels=None, transform=None):
        data, labels, classes = _load_cifar(CIFAR20_FILES, root, split, download)
        super().__init__(data, labels, classes, channels, transform)
