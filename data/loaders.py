"""Batches for training and evaluation, on either augmentation path; under torchrun, each process's share."""
import numpy as np
import torch

from data.batch_augment import BatchAugment, take
from data.batch_randaugment import BatchStrongAugment
from data.transforms import EvalTransform, Views, centre_offsets, train_transform
from utils import distributed
from utils.errors import UserError


# augmentation_strategy -> its batched implementation (data/transforms.STRATEGIES holds the reference ones)
BATCH_STRATEGIES = {'simclr': BatchAugment, 'ours': BatchStrongAugment}


def eval_loader(dataset, cfg, batch_size=None, device=None):
    """In dataset order, no shuffling: feature i belongs to dataset item i. Under torchrun: this process's
    contiguous shard (evaluation.features.forward_in_order gathers the shards back in order). With augment_on_device and
    a `device`, a dataset under the evaluation transform is evaluated from its images held on the device
    (DeviceInOrder), else through a DataLoader."""
    if device is not None and cfg.get('augment_on_device') and DeviceInOrder.fits(dataset):
        return DeviceInOrder(dataset, batch_size or cfg.batch_size, device)
    if distributed.world() > 1:
        dataset = torch.utils.data.Subset(dataset, distributed.shard(len(dataset)))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size or cfg.batch_size, shuffle=False,
                                       num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available())


def device_images(dataset, device):
    """The dataset's images as one uint8 tensor [N, C, H, W] on `device`: decoded and moved once per dataset
    object, then kept with it for every later pass."""
    held = getattr(dataset, '_device_images', None)
    if held is None or held.device != torch.device(device):
        held = dataset.uint8_tensor().to(device)
        dataset._device_images = held
    return held


class DeviceInOrder:
    """eval_loader's batches {'image', 'target', 'index'} in dataset order (this process's shard), the evaluation
    transform (data/transforms.EvalTransform: centre crop, scaling to [0, 1], normalisation) computed on the device
    from the images held there: the same numbers as the DataLoader path, without a host pass per image."""

    def __init__(self, dataset, batch_size, device):
        self.images = device_images(dataset, device)
        self.targets = torch.as_tensor(dataset.targets)
        self.rows = distributed.shard(len(dataset)) if distributed.world() > 1 else range(len(dataset))
        self.batch_size = batch_size
        t = dataset.transform
        self.top, self.left = centre_offsets(*self.images.shape[2:], t.crop_size)
        self.crop = t.crop_size
        self.mean = torch.tensor(t.normalize['mean'], device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(t.normalize['std'], device=device).view(1, -1, 1, 1)

    @staticmethod
    def fits(dataset):
        """Whether the dataset's transform is the evaluation transform and its images stack into one tensor no
        smaller than the crop (a smaller image would be padded: the DataLoader path does that)."""
        t = getattr(dataset, 'transform', None)
        if not isinstance(t, EvalTransform) or not getattr(dataset, 'one_size', False):
            return False
        crop = t.crop_size if isinstance(t.crop_size, int) else None
        return crop is not None and min(dataset.uint8_tensor([0]).shape[2:]) >= crop

    def __len__(self):
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self):
        for start in range(self.rows.start, self.rows.stop, self.batch_size):
            rows = slice(start, min(start + self.batch_size, self.rows.stop))
            x = self.images[rows, :, self.top:self.top + self.crop, self.left:self.left + self.crop]
            yield {'image': (x.float().div(255) - self.mean) / self.std, 'target': self.targets[rows],
                   'index': torch.arange(rows.start, rows.stop)}


class EpochLoader(torch.utils.data.DataLoader):
    """A DataLoader whose DistributedSampler (under torchrun) reshuffles every epoch from the run's seed."""

    def __iter__(self):
        if isinstance(self.sampler, torch.utils.data.DistributedSampler):
            self.sampler.set_epoch(int(torch.randint(2 ** 31, ())))  # the stages seed torch per epoch
        return super().__iter__()


def train_loader(dataset, cfg):
    """Shuffled full batches (a batch of 1 would break BatchNorm); under torchrun each process's share of
    every global batch of batch_size."""
    batch = min(cfg.batch_size, len(dataset))
    sampler = None
    if distributed.world() > 1:
        part = distributed.local_part(batch)
        batch = part.stop - part.start
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=True, drop_last=True)
    return EpochLoader(dataset, batch_size=batch, shuffle=sampler is None, sampler=sampler, drop_last=True,
                       num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available(),
                       persistent_workers=cfg.num_workers > 0)


class ShuffledBatches:
    """`n` items in shuffled batches of `batch_size` (the last partial batch dropped), drawn from the global torch
    generator that the stages seed per epoch; subclasses turn a batch of indices into the stage's batch dict
    (batch(index))."""

    def __init__(self, n, batch_size):
        self.n, self.batch_size = n, min(batch_size, n)

    def __len__(self):
        return self.n // self.batch_size

    def __iter__(self):
        order = self.permutation()
        for step in range(len(self)):
            yield self.batch(order[step * self.batch_size:(step + 1) * self.batch_size])

    def permutation(self):
        return torch.randperm(self.n)


class DeviceBatches(ShuffledBatches):
    """The whole dataset as one uint8 tensor on the device, augmented batch by batch there.

    Shuffling and augmentation parameters use the global torch generator, which the stages seed per
    epoch; every process draws them for the whole global batch and keeps its share, so one process and
    W processes see the same images. Subclasses turn a batch of indices into the dict the DataLoader path
    yields (with this process's share of the indices).
    """

    def __init__(self, dataset, cfg, device):
        if cfg.augmentation_strategy not in BATCH_STRATEGIES:
            raise UserError(f"augmentation_strategy '{cfg.augmentation_strategy}' is not one of "
                            f"{', '.join(BATCH_STRATEGIES)}")
        self.images = device_images(dataset, device)
        super().__init__(len(self.images), cfg.batch_size)
        self.augment = BATCH_STRATEGIES[cfg.augmentation_strategy](cfg.augmentation_kwargs)
        kw = cfg.transformation_kwargs
        self.crop = kw['crop_size']
        self.mean = torch.tensor(kw['normalize']['mean'], device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(kw['normalize']['std'], device=device).view(1, -1, 1, 1)

    def permutation(self):
        """Drawn on the device: the batches' indices never cross from the host, whose copy would wait for the
        device to finish its queued work."""
        return torch.randperm(self.n, device=self.images.device)

    def view(self, index):
        """Augmented images of this process's share of the global batch `index`."""
        params = self.augment.sample(len(index), self.images.shape[1:], self.images.device)
        part = distributed.local_part(len(index))
        return self.augment.apply(self.images[index[part].to(self.images.device)], take(params, part))

    def weak(self, index):
        """The evaluation transform on the device (centre crop and normalisation) of this process's share."""
        x = self.images[local(index).to(self.images.device)]
        top, left = centre_offsets(*x.shape[2:], self.crop)
        return (x[:, :, top:top + self.crop, left:left + self.crop].float().div(255) - self.mean) / self.std


def local(index):
    return index[distributed.local_part(len(index))]


class DeviceViews(DeviceBatches):
    def __init__(self, dataset, cfg, device, views):
        super().__init__(dataset, cfg, device)
        self.views = views

    def batch(self, index):
        return {'image': torch.stack([self.view(index) for _ in range(self.views)], dim=1), 'index': local(index)}


def view_batches(dataset, cfg, device, views):
    """Pretext batches: {'image': [b, views, C, H, W], 'index', ['target']}; `dataset` has no transform yet."""
    if cfg.augment_on_device:
        return DeviceViews(dataset, cfg, device, views)
    dataset.transform = Views(train_transform(cfg.augmentation_strategy, cfg.augmentation_kwargs), views)
    return train_loader(dataset, cfg)


class NeighborPairs(torch.utils.data.Dataset):
    """Item i: {view: image for each of `views` (name -> (source, transform), methods/base.VIEW_KINDS), 'index'}:
    the anchor's own image or one of its mined neighbours (drawn uniformly for each such view), under the strong
    (training) or weak (evaluation) transform, each image augmented independently."""

    def __init__(self, dataset, neighbors, views, strong, weak=None):
        self.dataset, self.neighbors, self.views, self.strong, self.weak = dataset, neighbors, views, strong, weak

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        anchor = self.dataset.get_image(i)
        item = {}
        for name, (source, transform) in self.views.items():
            image = anchor
            if source == 'neighbor':
                image = self.dataset.get_image(int(self.neighbors[i, torch.randint(self.neighbors.shape[1], ())]))
            item[name] = (self.strong if transform == 'strong' else self.weak)(image)
        item['index'] = i
        return item


class DevicePairs(DeviceBatches):
    def __init__(self, dataset, neighbors, views, cfg, device):
        super().__init__(dataset, cfg, device)
        self.neighbors = torch.as_tensor(np.asarray(neighbors)).to(device)
        self.views = views

    def batch(self, index):
        out = {}
        for name, (source, transform) in self.views.items():
            rows = index
            if source == 'neighbor':
                rows = self.neighbors[index, torch.randint(self.neighbors.shape[1], (len(index),), device=index.device)]
            out[name] = self.view(rows) if transform == 'strong' else self.weak(rows)
        out['index'] = local(index)
        return out


def neighbor_batches(dataset, neighbors, views, cfg, device, weak_transform=None):
    """Clustering batches: {view: [b, C, H, W] for each of `views` (name -> (source, transform)), 'index'};
    neighbors [N, K] without self; weak_transform: the evaluation transform of the DataLoader path."""
    if cfg.augment_on_device:
        return DevicePairs(dataset, neighbors, views, cfg, device)
    strong = train_transform(cfg.augmentation_strategy, cfg.augmentation_kwargs)
    return train_loader(NeighborPairs(dataset, neighbors, views, strong, weak_transform), cfg)


class WeakStrong(torch.utils.data.Dataset):
    """Item i: {'image': weak view (the evaluation transform), 'image_augmented': strong view, 'index'}."""

    def __init__(self, dataset, weak, strong):
        self.dataset, self.weak, self.strong = dataset, weak, strong

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        img = self.dataset.get_image(i)
        return {'image': self.weak(img), 'image_augmented': self.strong(img), 'index': i}


class DeviceWeakStrong(DeviceBatches):
    def batch(self, index):
        return {'image': self.weak(index), 'image_augmented': self.view(index), 'index': local(index)}


def weak_strong_batches(dataset, cfg, device, weak_transform):
    """Self-labelling batches: {'image' (weak), 'image_augmented' (strong), 'index'}."""
    if cfg.augment_on_device:
        return DeviceWeakStrong(dataset, cfg, device)
    strong = train_transform(cfg.augmentation_strategy, cfg.augmentation_kwargs)
    return train_loader(WeakStrong(dataset, weak_transform, strong), cfg)
