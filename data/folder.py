"""Image folders: any `root/<class>/*.jpg|png` tree (or a flat, unlabelled folder), and ImageNet subsets."""
import os

import numpy as np
import torch
from PIL import Image

from data.base import IMAGE_EXTENSIONS, FileDataset, convert_array
from utils.errors import UserError

SPLIT_NAMES = {'train', 'test', 'val', 'valid', 'validation'}


def _images_in(folder, skipped=None):
    """The image files directly in folder, sorted; the names of its other files (dot files aside) are added to
    the list `skipped`."""
    files = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))]
    if skipped is not None:
        skipped += [os.path.join(folder, f) for f in files
                    if not f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.')]
    return sorted(os.path.join(folder, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))


def images_under(folder, skipped=None):
    """Every image file under `folder`, recursively, through linked folders too, each real folder once (a link
    cycle ends), sorted by path; other files go to `skipped` as in _images_in."""
    seen, paths = set(), []
    for d, dirs, _ in os.walk(folder, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [x for x in dirs if not x.startswith('.')]
        paths += _images_in(d, skipped)
    return sorted(paths)


_REPORTED = set()  # folders whose skipped files were reported: once per process, not per split or stage


def _report_skipped(folder, skipped):
    if skipped and folder not in _REPORTED:
        _REPORTED.add(folder)
        kinds = sorted({os.path.splitext(f)[1].lower() or '(no extension)' for f in skipped})
        print(f'{folder}: skipped {len(skipped)} file(s) that are not images ({", ".join(kinds)}; e.g. '
              f'{skipped[0]}); images are {", ".join(IMAGE_EXTENSIONS)}')


def _folder(root, path, split):
    """data_root/path/split, or path/split from the working directory (an absolute path is itself)."""
    candidates = [os.path.join(root, path or '', split or '')]
    if path and not os.path.isabs(path):
        candidates.append(os.path.join(path, split or ''))
    for folder in candidates:
        if os.path.isdir(folder):
            return os.path.normpath(folder)
    raise UserError(f'image folder not found: {" or ".join(candidates)}; set db_kwargs.path (from the working '
                    'directory or data_root) and the split (train_split / val_split) so that they name it')


class ImageFolder(FileDataset):
    """`data_root/path/split/<class>/*.jpg`; class = sub-folder name, its own sub-folders (any depth, linked ones
    too) part of it, as torchvision's ImageFolder reads them.

    A folder holding images directly (no class sub-folders), or `labels: false`, gives an
    unlabelled dataset (targets -1): training works, metrics are skipped. With `image_size` every image is
    decoded once, when first needed, resized (shorter side, then the centre square) and kept in memory, so images
    of any size make one uint8 tensor (the fast path). A stage that reads cached features never decodes them.
    """

    def __init__(self, root, split='train', path='', labels=True, image_size=None, channels=None, transform=None,
                 download=False):
        if path is None:
            raise UserError('db_kwargs.path is not set: give the image folder, e.g. db_kwargs.path=DIR')
        folder = _folder(root, path, split)
        classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        if not split and classes and set(c.lower() for c in classes) <= SPLIT_NAMES:
            first = 'train' if 'train' in classes else classes[0]
            raise UserError(f'{folder} holds split folders ({", ".join(classes)}), not classes; set '
                            f'train_split={first} and val_split=... to the folders to train on and to evaluate')
        paths, targets, skipped = [], [], []
        for label, name in enumerate(classes):
            files = images_under(os.path.join(folder, name), skipped)  # sub-folders of a class are that class
            paths += files
            targets += [label if labels else -1] * len(files)
        loose = _images_in(folder, skipped)
        _report_skipped(folder, skipped)
        if loose and paths and labels:
            raise UserError(f'{folder} mixes class folders with loose images; move the images '
                            'into class folders, or give db_kwargs.labels=false to read them all without labels')
        paths += loose
        if not paths:
            raise UserError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) found in {folder}')
        if not labels or loose:
            targets, classes = [-1] * len(paths), []
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise UserError(f'db_kwargs.image_size must be a positive whole number of pixels, got {image_size!r}')
        super().__init__(paths, targets, classes, channels, transform, image_size)
        self._data, self._rows = None, {}  # the whole folder decoded; the images decoded before that

    def _decoded(self, indices):
        """The images at `indices` resized, uint8 [n, size, size, C] (C = 1 when all of them are grey, else 3, the
        grey ones repeated): each file is decoded once, and kept for the calls after."""
        for i in indices:
            if i not in self._rows:
                self._rows[i] = np.asarray(super().load(i))  # [size, size] when grey, else [size, size, 3]
        rows = [self._rows[i] for i in indices]
        if all(r.ndim == 2 for r in rows):
            return np.stack(rows)[..., None]
        return np.stack([np.repeat(r[..., None], 3, axis=2) if r.ndim == 2 else r for r in rows])

    @property
    def data(self):
        """With image_size: all images resized, uint8 [N, size, size, C], decoded on first use; else None."""
        if self._data is None and self.image_size is not None:
            self._data, self._rows = self._decoded(range(len(self))), {}
        return self._data

    def load(self, i):
        if self._data is None:  # not decoded (yet): this one file, resized the same way
            return super().load(i)
        img = self._data[i]
        return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)

    def uint8_tensor(self, indices=None):
        """With image_size, a subset (indices) of a folder not decoded yet decodes those images only."""
        if self.image_size is None:
            return super().uint8_tensor(indices)
        if indices is None or self._data is not None:
            data = self.data if indices is None else self.data[indices]
        else:
            data = self._decoded([int(i) for i in indices])
        data = np.ascontiguousarray(convert_array(data, self.channels))
        return torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()


class ImageNetSubset(FileDataset):
    """`data_root/path/{train,val}/<wnid>/*.JPEG`, restricted to the classes in `subset_file`.

    `subset_file` has one class per line, 'wnid optional name' (SCAN's imagenet_50.txt layout);
    a relative path is looked up from the working directory, then from data_root.
    """

    def __init__(self, root, split='train', path='imagenet', subset_file=None, channels=None, transform=None,
                 download=False):
        if not subset_file:
            raise UserError('imagenet needs db_kwargs.subset_file: a file with one class (wnid [name]) per line')
        list_path = subset_file if os.path.isfile(subset_file) else os.path.join(root, subset_file)
        if not os.path.isfile(list_path):
            raise UserError(f'ImageNet class-list file not found: {subset_file} (looked in . and {root})')
        wnids, names = [], []
        for line in open(list_path):
            if line.strip():
                wnid, _, name = line.strip().partition(' ')
                wnids.append(wnid)
                names.append(name.strip() or wnid)
        folder = _folder(root, path, split)
        paths, targets = [], []
        for label, wnid in enumerate(wnids):
            class_dir = os.path.join(folder, wnid)
            if not os.path.isdir(class_dir):
                raise UserError(f'ImageNet class folder missing: {class_dir} (listed in {list_path})')
            files = images_under(class_dir)
            paths += files
            targets += [label] * len(files)
        super().__init__(paths, targets, names, channels, transform)
