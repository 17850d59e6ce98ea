"""horizontal_flip: auto, decided from the images (data.resolve_flip): off for images whose mirror images the folder
never shows, on for a folder that holds its images' mirrors too; anything but true, false or auto is refused."""
import numpy as np
import pytest

from data import MIRROR_LIMIT, mirror_ratio, resolve_flip
from data.base import ArrayDataset
from data.transforms import check_augmentation
from utils.errors import UserError


def strokes(n, seed=0, mirrored=False):
    """n 16x16 grey images of one bright bar in the left half, each at its own place (and, with `mirrored`, the
    mirror image of each as well)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 16, 16, 1), np.uint8)
    for img, (row, col) in zip(images, zip(rng.integers(0, 12, n), rng.integers(0, 5, n))):
        img[row:row + 4, col:col + 3] = 255
    if mirrored:
        images = np.concatenate([images, images[:, :, ::-1]])
    return ArrayDataset(images, np.zeros(len(images)), [])


def test_one_sided_images_are_not_flipped_and_mirrored_ones_are():
    one_sided, both = strokes(200), strokes(200, mirrored=True)
    assert mirror_ratio(one_sided) > 2 * MIRROR_LIMIT  # a bar on the left mirrors to one on the right: unseen
    assert mirror_ratio(both) < MIRROR_LIMIT  # each image's mirror is in the folder: as near as the images
    for dataset, expected in ((one_sided, False), (both, True)):
        aug = {'horizontal_flip': 'auto', 'normalize': {'mean': [0.5], 'std': [0.5]}}
        resolve_flip(aug, dataset)
        assert check_augmentation(aug)['horizontal_flip'] is expected


def test_given_flip_is_kept_and_a_wrong_value_refused():
    aug = {'horizontal_flip': False}
    resolve_flip(aug, strokes(20, mirrored=True))
    assert aug['horizontal_flip'] is False
    with pytest.raises(UserError, match='horizontal_flip must be true, false or auto'):
        check_augmentation({'horizontal_flip': 'yes', 'normalize': {'mean': [0.5], 'std': [0.5]}})
