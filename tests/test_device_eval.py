"""Evaluation batches on the device (data/loaders.DeviceInOrder): the same numbers as the DataLoader path of the
evaluation transform, in dataset order, from images moved to the device once."""
import numpy as np
import torch
from easydict import EasyDict

from data.base import ArrayDataset, FileDataset
from data.loaders import DeviceInOrder, device_images, eval_loader
from data.transforms import val_transform

NORMALIZE = {'mean': [0.4, 0.5, 0.6], 'std': [0.2, 0.25, 0.3]}


def dataset(height, width, crop, n=23):
    images = np.random.default_rng(0).integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    return ArrayDataset(images, np.arange(n) % 4, ['a', 'b', 'c', 'd'],
                        transform=val_transform({'crop_size': crop, 'normalize': NORMALIZE}))


def batches(loader):
    items = list(loader)
    return torch.cat([b['image'] for b in items]), torch.cat([torch.as_tensor(b['target']) for b in items])


def test_device_batches_equal_the_dataloader_path():
    cfg = EasyDict(augment_on_device=True, batch_size=5, num_workers=0)
    for height, width, crop in ((16, 16, 16), (15, 20, 10), (21, 18, 16)):  # odd margins: torchvision's rounding
        ds = dataset(height, width, crop)
        fast = eval_loader(ds, cfg, device=torch.device('cpu'))
        assert isinstance(fast, DeviceInOrder) and len(fast) == 5
        reference = eval_loader(ds, cfg)  # no device: the DataLoader over PIL images
        (x, y), (x_ref, y_ref) = batches(fast), batches(reference)
        assert x.shape == (23, 3, crop, crop) and torch.equal(y, y_ref)
        assert torch.allclose(x, x_ref, atol=1e-6), (height, width, crop)


def test_the_dataloader_path_stays_where_the_device_path_does_not_apply(tmp_path):
    cfg = EasyDict(augment_on_device=True, batch_size=5, num_workers=0)
    small = dataset(8, 8, 10)  # CenterCrop pads an image smaller than the crop
    assert not isinstance(eval_loader(small, cfg, device=torch.device('cpu')), DeviceInOrder)
    files = FileDataset([], [], [], transform=small.transform)  # images of any size: no single tensor
    assert not isinstance(eval_loader(files, cfg, device=torch.device('cpu')), DeviceInOrder)
    cfg.augment_on_device = False
    assert not isinstance(eval_loader(dataset(16, 16, 16), cfg, device=torch.device('cpu')), DeviceInOrder)


def test_images_move_to_the_device_once_per_dataset():
    ds = dataset(16, 16, 16)
    calls = []
    real = ds.uint8_tensor
    ds.uint8_tensor = lambda indices=None: calls.append(indices) or real(indices)
    first = device_images(ds, torch.device('cpu'))
    assert device_images(ds, torch.device('cpu')) is first and calls == [None]
