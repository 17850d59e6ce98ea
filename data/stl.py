"""STL-10 from its binary layout (stl10_binary/*.bin, images stored column-major)."""
import os

import numpy as np
import torch
from PIL import Image

from data.base import ImageDataset, convert_array
from data.cifar import ensure_files
from utils.errors import UserError

SPLITS = {'train': ['train'], 'test': ['test'], 'unlabeled': ['unlabeled'],
          'train+unlabeled': ['train', 'unlabeled']}
URL = 'http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz'


def _images(path):
    """Memory-mapped [N, 96, 96, 3] view of an X file (the 100k unlabeled images stay on disk)."""
    raw = np.memmap(path, dtype=np.uint8, mode='r')
    return raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)


class STL10(ImageDataset):
    """Splits: train, test, unlabeled, train+unlabeled (unlabelled images have target -1)."""

    def __init__(self, root, split='train', download=True, channels=None, transform=None):
        super().__init__(channels, transform)
        if split not in SPLITS:
            raise UserError(f"STL-10 split '{split}' is not one of {', '.join(SPLITS)}")
        files = [f'{p}_X.bin' for p in SPLITS[split]] + [f'{p}_y.bin' for p in SPLITS[split] if p != 'unlabeled']

        def fetch():
            from utils.tv import torchvision
            torchvision.datasets.STL10(root, split=split, download=True)

        path = ensure_files(root, 'stl10_binary', files, download, fetch, URL)
        self.parts, targets = [], []
        for part in SPLITS[split]:
            images = _images(os.path.join(path, f'{part}_X.bin'))
            self.parts.append(images)
            if part == 'unlabeled':
                targets.append(np.full(len(images), -1, dtype=np.int64))
            else:
                targets.append(np.fromfile(os.path.join(path, f'{part}_y.bin'), dtype=np.uint8).astype(np.int64) - 1)
        self.targets = np.concatenate(targets)
        names = os.path.join(path, 'class_names.txt')
        self.classes = (open(names).read().split() if os.path.isfile(names)
                        else ['airplane', 'bird', 'car', 'cat', 'deer', 'dog', 'horse', 'monkey', 'ship', 'truck'])
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def load(self, i):
        part = int(np.searchsorted(self.offsets, i, side='right') - 1)
        return Image.fromarray(np.ascontiguousarray(self.parts[part][i - self.offsets[part]]))

    def uint8_tensor(self, indices=None):
        data = np.concatenate([convert_array(np.asarray(p), self.channels) for p in self.parts])
        data = data if indices is None else data[indices]
        return torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2).contiguous()
