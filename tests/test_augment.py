"""The batched augmentation: exact on deterministic settings, independent per sample, same keys as torchvision's."""
import numpy as np
import pytest
import torch
from PIL import Image

from data.batch_augment import BatchAugment
from data.transforms import augmentation_transform
from utils.errors import UserError

NORM = {'mean': [0.5, 0.4, 0.3], 'std': [0.2, 0.25, 0.3]}


def images(b=16, size=8, seed=0):
    return torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def normalised(x):
    return (x.float() / 255 - torch.tensor(NORM['mean']).view(1, 3, 1, 1)) / torch.tensor(NORM['std']).view(1, 3, 1, 1)


def test_normalise_only_is_exact():
    x = images()
    out = BatchAugment({'horizontal_flip': False, 'normalize': NORM})(x)
    assert torch.allclose(out, normalised(x), atol=1e-6)


@pytest.mark.parametrize('flip', [{}, {'horizontal_flip': None}, {'horizontal_flip': True}])
def test_flip_gives_the_image_or_its_mirror_and_both_occur(flip):
    """Left out, null and true all flip (null is what a config that leaves the key out saved)."""
    torch.manual_seed(0)
    x = images(64)
    out = BatchAugment({'normalize': NORM, **flip})(x)
    ref = normalised(x)
    same = (out - ref).abs().flatten(1).max(1).values < 1e-5
    mirrored = (out - ref.flip(-1)).abs().flatten(1).max(1).values < 1e-5
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54


def test_each_sample_draws_its_own_parameters():
    torch.manual_seed(0)
    x = images(1).repeat(32, 1, 1, 1)
    aug = {'random_resized_crop': {'size': 8, 'scale': [0.2, 1.0]}, 'random_affine': {'degrees': 20},
           'color_jitter': {'brightness': 0.4, 'contrast': 0.4, 'saturation': 0.4, 'hue': 0.1},
           'random_grayscale': {'p': 0.2}, 'normalize': NORM}
    out = BatchAugment(aug)(x).flatten(1)
    distinct = torch.cdist(out, out)[~torch.eye(32, dtype=torch.bool)]
    assert bool((distinct > 1e-3).all())


def test_erasing_share_and_grayscale_probability():
    torch.manual_seed(0)
    x = torch.full((2000, 3, 16, 16), 200, dtype=torch.uint8)
    out = BatchAugment({'horizontal_flip': False, 'normalize': NORM,
                        'random_erasing': {'p': 0.5, 'scale': [0.1, 0.1], 'ratio': [1.0, 1.0]}})(x)
    erased = (out == 0).all(1).flatten(1).float().mean(1)
    assert 0.45 < float((erased > 0).float().mean()) < 0.55  # p
    assert float(erased[erased > 0].mean()) == pytest.approx(0.1, abs=0.02)  # area share
    rgb = torch.randint(0, 256, (2000, 3, 4, 4), dtype=torch.uint8)
    grey = BatchAugment({'horizontal_flip': False, 'normalize': {'mean': [0] * 3, 'std': [1] * 3},
                         'random_grayscale': {'p': 0.2}})(rgb)
    is_grey = (grey.max(1).values - grey.min(1).values).flatten(1).max(1).values < 1e-6
    assert 0.17 < float(is_grey.float().mean()) < 0.23


def test_both_paths_accept_the_same_keys_and_shapes():
    aug = {'random_resized_crop': {'size': 12, 'scale': [0.5, 1.0]}, 'random_affine': {'degrees': 10},
           'intensity': [0.8, 1.2], 'gaussian_noise': {'std': 0.05}, 'random_erasing': {'p': 0.5},
           'normalize': NORM}
    pil = augmentation_transform(aug)(Image.fromarray(np.zeros((16, 16, 3), np.uint8)))
    batched = BatchAugment(aug)(images(4, 16))
    assert pil.shape == batched.shape[1:] == (3, 12, 12)
    for build in (augmentation_transform, BatchAugment):
        with pytest.raises(UserError, match="unknown keys \\['blur'\\]"):
            build({'blur': 1, 'normalize': NORM})
