"""Datasets by name. Every item is {'image', 'index', 'target'} with target -1 when unlabelled."""
import inspect

import numpy as np
import torch

from data.base import ImageDataset, SizeMismatch, SubsetDataset
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


STATS_SAMPLE = 5000  # images the normalisation statistics are computed from (a fixed random subset)


def image_statistics(dataset):
    """Per-channel mean and std of the pixels in [0, 1] of (up to STATS_SAMPLE of) the images, 4 decimals."""
    indices = subset_indices(len(dataset), STATS_SAMPLE)
    sample = dataset if indices is None else SubsetDataset(dataset, indices)
    try:
        pixels = sample.uint8_tensor()
    except SizeMismatch:  # its advice is about augmentation; here the statistics need equal sizes
        raise UserError('the images differ in size: set db_kwargs.image_size (image_folder), or '
                        'transformation_kwargs.normalize: {mean: [...], std: [...]}') from None
    x = pixels.float().div(255).transpose(0, 1).flatten(1)
    return {'mean': [round(v, 4) for v in x.mean(1).tolist()],
            'std': [round(max(v, 1e-3), 4) for v in x.std(1).tolist()]}


MIRROR_SAMPLE = 1000  # images the mirror test compares (a fixed random subset)
MIRROR_LIMIT = 1.2    # horizontal_flip: auto flips when mirror_ratio is under this


def mirror_ratio(dataset):
    """How unlike the images their mirror images are: over (up to MIRROR_SAMPLE of) the images, the median of the
    distance from an image's left-right mirror to its nearest other image over the distance from the image itself
    to its nearest other image (grey pixels, each image centred and scaled to unit norm). Near 1 when a mirrored
    image looks like any other (photos: 1.00 on CIFAR-10's train and test images), well above when mirroring makes
    what the images never show (handwritten digits: 1.6 to 1.8)."""
    indices = subset_indices(len(dataset), MIRROR_SAMPLE)
    sample = dataset if indices is None else SubsetDataset(dataset, indices)
    grey = sample.uint8_tensor().float().mean(1)  # [n, H, W]
    x = grey - grey.mean((1, 2), keepdim=True)
    x = x / x.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None]
    images, mirrors = x.flatten(1), x.flip(2).flatten(1)
    others = torch.eye(len(x), dtype=torch.bool)  # each image against the others only
    own = torch.cdist(images, images).masked_fill(others, float('inf')).min(1).values
    mirrored = torch.cdist(mirrors, images).masked_fill(others, float('inf')).min(1).values
    return float((mirrored / own.clamp_min(1e-6)).median())


def resolve_flip(aug, train_set):
    """augmentation_kwargs.horizontal_flip: auto -> true when the images' mirror images look like other images
    (mirror_ratio under MIRROR_LIMIT: photos), false when they do not (digits, text)."""
    if aug.get('horizontal_flip') != 'auto':
        return
    try:
        ratio = mirror_ratio(train_set)
    except SizeMismatch:  # images of different sizes: the test needs one size; photos are the common case
        aug['horizontal_flip'] = True
        print('horizontal_flip: auto -> true (the images differ in size; set db_kwargs.image_size to test them)')
        return
    aug['horizontal_flip'] = ratio < MIRROR_LIMIT
    print(f"horizontal_flip: auto -> {str(aug['horizontal_flip']).lower()} (mirrored images are {ratio:.2f}x as far "
          f'from the other images as the images themselves; flipped under {MIRROR_LIMIT})')


def complete_transforms(cfg, train_set, preprocessing=None):
    """Fill what the config leaves to the images: transformation_kwargs.crop_size (the images' size) and
    .normalize (what the pretrained weights expect, `preprocessing` from models.get_backbone; else the train
    split's statistics), and augmentation_kwargs' normalize and crop size (the evaluation transform's). A crop
    larger than the images is refused (warned about when the images may differ in size); one under half their
    size is warned about. horizontal_flip: auto is decided from the images (resolve_flip)."""
    tk = dict(cfg.transformation_kwargs or {})
    width, height = train_set.get_image(0).size
    if tk.get('crop_size') is None:
        tk['crop_size'] = min(width, height)
    crop = tk['crop_size']
    crop = crop if isinstance(crop, int) else min(crop)
    one_size = train_set.one_size  # then every image has the first one's size
    if crop > min(width, height) and not one_size:
        print(f'warning: transformation_kwargs.crop_size {crop} is larger than the first image ({width}x{height})')
    elif crop > min(width, height):
        raise UserError(f'transformation_kwargs.crop_size {tk["crop_size"]} is larger than the images '
                        f'({width}x{height}); set it to at most {min(width, height)} (or set db_kwargs.image_size)')
    if crop < min(width, height) / 2:
        print(f'warning: transformation_kwargs.crop_size {crop} keeps only the centre of the {width}x{height} '
              'images (it crops, it does not resize); for image folders set db_kwargs.image_size instead')
    if tk.get('normalize') in (None, 'auto'):
        if preprocessing:
            tk['normalize'] = {'mean': preprocessing['mean'], 'std': preprocessing['std']}
            where = f"of the weights ({preprocessing['source']})"
        else:
            tk['normalize'], where = image_statistics(train_set), 'from the train images'
        print(f"normalisation {where}: mean {tk['normalize']['mean']}, std {tk['normalize']['std']}")
    if preprocessing and preprocessing.get('input_size') and preprocessing['input_size'] != crop:
        print(f"note: the weights were trained on {preprocessing['input_size']}-pixel images, these are {crop} "
              '(db_kwargs.image_size sets it; larger is slower and gains nothing on small images)')
    cfg.transformation_kwargs = tk
    if cfg.get('augmentation_kwargs') is not None:
        aug = dict(cfg.augmentation_kwargs)
        if aug.get('normalize') in (None, 'auto'):
            aug['normalize'] = tk['normalize']
        resolve_flip(aug, train_set)
        rrc = aug.get('random_resized_crop')
        if isinstance(rrc, dict) and rrc.get('size') is None:
            aug['random_resized_crop'] = {**rrc, 'size': tk['crop_size']}
        if cfg.get('augmentation_strategy') == 'ours' and aug.get('crop_size') is None:
            aug['crop_size'] = tk['crop_size']
        cfg.augmentation_kwargs = aug
    return cfg


def complete_from_train(cfg):
    """complete_transforms from the config's train split when the config leaves the crop size or the normalisation
    to the images (for the tools that read a model and its config: eval.py, feature_extract.py)."""
    tk = cfg.transformation_kwargs or {}
    if tk.get('crop_size') is None or tk.get('normalize') in (None, 'auto'):
        complete_transforms(cfg, get_dataset(cfg, 'train'))
    return cfg


def outside_image_size(cfg):
    """The size images from outside the config's dataset (eval.py --predict, feature_extract.py --db FOLDER) are
    resized to (shorter side, then the centre square), as the training images were: db_kwargs.image_size, else
    the evaluation crop (a no-op on images of the training size)."""
    size = (cfg.db_kwargs or {}).get('image_size') or cfg.transformation_kwargs['crop_size']
    return size if isinstance(size, int) else min(size)


def check_classes(cfg, dataset):
    """num_classes against a labelled dataset's class count (more only with overclustering)."""
    if dataset.has_labels and dataset.classes:
        n = len(dataset.classes)
        if cfg.num_classes < n or (cfg.num_classes > n and not cfg.overclustering):
            raise UserError(f'num_classes is {cfg.num_classes} but {cfg.train_db_name} has {n} classes; '
                            f'set num_classes={n} (or overclustering=true for more clusters than classes)')


def clustering_data(cfg, clusters=None):
    """A clustering or self-labelling run's data: (the evaluation transform, the train set without a transform
    (the training batches add theirs), the val set under the evaluation transform); the transforms completed
    from the images, num_classes checked against the classes unless it is 'auto'. `clusters`: the clustering
    model's number of clusters (self-labelling), which num_classes takes when it is unset or auto."""
    if clusters is not None and cfg.num_classes is None:
        cfg.num_classes = 'auto'
    if cfg.num_classes is None:
        raise UserError("'num_classes' is required: set it in the config file or pass num_classes=VALUE "
                        '(or num_classes=auto to estimate it)')
    train_set = get_dataset(cfg, 'train')
    complete_transforms(cfg, train_set)
    evaluation = val_transform(cfg.transformation_kwargs)
    val_set = get_dataset(cfg, 'val', evaluation)
    if cfg.num_classes != 'auto':  # an estimated number of clusters may differ from the labels' classes
        check_classes(cfg, train_set)
    elif clusters is not None:
        cfg.num_classes = clusters
    return evaluation, train_set, val_set


__all__ = ['DATASETS', 'ImageDataset', 'build_dataset', 'get_dataset', 'same_data', 'complete_transforms',
           'check_classes', 'clustering_data']
