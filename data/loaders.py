"""Batches for training and evaluation, on either augmentation path."""
import torch

from data.batch_augment import BatchAugment
from data.transforms import TwoViews, augmentation_transform


def eval_loader(dataset, cfg, batch_size=None):
    """In dataset order, no shuffling: feature i belongs to dataset item i."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size or cfg.batch_size, shuffle=False,
                                       num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available())


class DeviceViews:
    """The whole dataset as one uint8 tensor on the device; every step augments `views` copies per sample.

    Yields {'image': [b, views, C, H, W], 'index': [b]} like the DataLoader path. Shuffling
    uses the global torch generator, which the stage seeds per epoch.
    """

    def __init__(self, dataset, aug, batch_size, device, views=2):
        self.images = dataset.uint8_tensor().to(device)
        self.augment = BatchAugment(aug)
        self.batch_size = min(batch_size, len(self.images))
        self.views = views

    def __len__(self):
        return len(self.images) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.images))
        for step in range(len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            x = self.images[index.to(self.images.device)]
            yield {'image': torch.stack([self.augment(x) for _ in range(self.views)], dim=1), 'index': index}


def two_view_batches(dataset, cfg, device):
    """SimCLR training batches: {'image': [b, 2, C, H, W], 'index'} from either augmentation path.

    `dataset` must have been built without a transform.
    """
    if cfg.augment_on_device:
        return DeviceViews(dataset, cfg.augmentation_kwargs, cfg.batch_size, device)
    dataset.transform = TwoViews(augmentation_transform(cfg.augmentation_kwargs))
    return torch.utils.data.DataLoader(dataset, batch_size=min(cfg.batch_size, len(dataset)), shuffle=True,
                                       drop_last=True, num_workers=cfg.num_workers,
                                       pin_memory=torch.cuda.is_available(),
                                       persistent_workers=cfg.num_workers > 0)
