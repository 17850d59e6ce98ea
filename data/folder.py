"""Image folders: any `root/<class>/*.jpg|png` tree (or a flat, unlabelled folder), and ImageNet subsets."""
import os

from data.base import IMAGE_EXTENSIONS, FileDataset
from utils.errors import UserError


def _images_in(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f)))


def _folder(root, path, split):
    folder = os.path.join(root, path or '', split or '')
    if not os.path.isdir(folder):
        raise UserError(f'image folder not found: {folder}; set data_root in the env file and '
                        'db_kwargs.path / the split so that they name it')
    return os.path.normpath(folder)


class ImageFolder(FileDataset):
    """`data_root/path/split/<class>/*.jpg`; class = sub-folder name.

    A folder holding images directly (no class sub-folders), or `labels: false`, gives an
    unlabelled dataset (targets -1): training works, metrics are skipped.
    """

    def __init__(self, root, split='train', path='', labels=True, channels=None, transform=None, download=False):
        folder = _folder(root, path, split)
        classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        paths, targets = [], []
        for label, name in enumerate(classes):
            files = _images_in(os.path.join(folder, name))
            paths += files
            targets += [label if labels else -1] * len(files)
        loose = _images_in(folder)
        if loose and paths and labels:
            raise UserError(f'{folder} mixes class folders with loose images; move the images '
                            'into class folders or set db_kwargs.labels: false')
        paths += loose
        if not paths:
            raise UserError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) found in {folder}')
        if not labels or loose:
            targets, classes = [-1] * len(paths), []
        super().__init__(paths, targets, classes, channels, transform)


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
            files = _images_in(class_dir)
            paths += files
            targets += [label] * len(files)
        super().__init__(paths, targets, names, channels, transform)
