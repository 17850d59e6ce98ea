"""Augmentations on PIL images with torchvision: the reference path.

`augmentation_kwargs` keys (SCAN's, plus four optional ones for tiny images):
  random_resized_crop: {size, scale}        horizontal_flip: true|false|auto (auto: data.resolve_flip)
  random_affine: {degrees, translate, scale, shear}
  color_jitter: {brightness, contrast, saturation, hue}, color_jitter_random_apply: {p}
  random_grayscale: {p}                     intensity: [low, high]  (multiplies pixels in [0, 1])
  gaussian_noise: {std}                     normalize: {mean, std}
  random_erasing: {p, scale, ratio}          (after normalising: erased pixels = the mean)
`data/batch_augment.py` implements the same keys on batches on the training device.
"""
import torch

from data.randaugment import Cutout, RandAugment
from utils.errors import UserError
from utils.tv import transforms as T

AUGMENTATION_KEYS = ('random_resized_crop', 'horizontal_flip', 'random_affine', 'color_jitter',
                     'color_jitter_random_apply', 'random_grayscale', 'intensity', 'gaussian_noise',
                     'normalize', 'random_erasing')


def check_augmentation(aug):
    unknown = sorted(set(aug) - set(AUGMENTATION_KEYS))
    if unknown:
        raise UserError(f"augmentation_kwargs: unknown keys {unknown}; valid: {', '.join(AUGMENTATION_KEYS)}")
    if not aug.get('normalize'):
        raise UserError('augmentation_kwargs.normalize: {mean: [...], std: [...]} is required')
    if aug.get('horizontal_flip') not in (None, True, False):
        raise UserError(f"augmentation_kwargs.horizontal_flip must be true, false or auto, got "
                        f"{aug['horizontal_flip']!r}")
    return aug


def flips(aug):
    """Whether the augmentation mirrors images: horizontal_flip true, or left out (null), as SimCLR and SCAN do."""
    return aug.get('horizontal_flip') is not False


class RandomIntensity:
    """Multiply a [C, H, W] tensor in [0, 1] by a factor drawn uniformly from [low, high], then clip."""

    def __init__(self, low, high):
        self.low, self.high = float(low), float(high)

    def __call__(self, x):
        factor = self.low + (self.high - self.low) * torch.rand(())
        return (x * factor).clamp(0, 1)


class GaussianNoise:
    """Add N(0, std^2) noise to a [C, H, W] tensor in [0, 1], then clip."""

    def __init__(self, std):
        self.std = float(std)

    def __call__(self, x):
        return (x + self.std * torch.randn_like(x)).clamp(0, 1)


class Views:
    """`n` independent draws of a transform, stacked: [n, C, H, W]."""

    def __init__(self, transform, n=2):
        self.transform, self.n = transform, n

    def __call__(self, img):
        return torch.stack([self.transform(img) for _ in range(self.n)])


def augmentation_transform(aug):
    """The torchvision pipeline for `augmentation_kwargs` (PIL image -> normalised tensor)."""
    aug = check_augmentation(aug)
    ops = []
    if aug.get('random_resized_crop'):
        ops.append(T.RandomResizedCrop(**aug['random_resized_crop'], antialias=True))
    if flips(aug):
        ops.append(T.RandomHorizontalFlip())
    if aug.get('random_affine'):
        ops.append(T.RandomAffine(**aug['random_affine']))
    if aug.get('color_jitter'):
        p = (aug.get('color_jitter_random_apply') or {}).get('p', 1.0)
        ops.append(T.RandomApply([T.ColorJitter(**aug['color_jitter'])], p=p))
    if aug.get('random_grayscale'):
        ops.append(T.RandomGrayscale(**aug['random_grayscale']))
    ops.append(T.ToTensor())
    if aug.get('intensity'):
        ops.append(RandomIntensity(*aug['intensity']))
    if aug.get('gaussian_noise'):
        ops.append(GaussianNoise(**aug['gaussian_noise']))
    ops.append(T.Normalize(**aug['normalize']))
    if aug.get('random_erasing'):
        ops.append(T.RandomErasing(**aug['random_erasing'], value=0))
    return T.Compose(ops)


class EvalTransform(T.Compose):
    """SCAN's evaluation transform: centre crop, tensor, normalise. Its settings stay readable, so that
    data/loaders.eval_loader can apply the same on a batch held on the device."""

    def __init__(self, crop_size, normalize):
        super().__init__([T.CenterCrop(crop_size), T.ToTensor(), T.Normalize(**normalize)])
        self.crop_size, self.normalize = crop_size, normalize


def val_transform(transformation_kwargs):
    kw = transformation_kwargs
    return EvalTransform(kw['crop_size'], kw['normalize'])


def centre_offsets(height, width, crop):
    """torchvision CenterCrop's top and left offsets of a crop x crop square."""
    return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))


STRONG_KEYS = ('crop_size', 'normalize', 'num_strong_augs', 'cutout_kwargs', 'horizontal_flip')


def check_strong(aug):
    unknown = sorted(set(aug) - set(STRONG_KEYS))
    if unknown:
        raise UserError(f"augmentation_kwargs for strategy 'ours': unknown keys {unknown}; "
                        f"valid: {', '.join(STRONG_KEYS)}")
    for key in ('crop_size', 'normalize'):
        if not aug.get(key):
            raise UserError(f"augmentation_kwargs.{key} is required for strategy 'ours'")
    return aug


def crop_padding(size):
    """SCAN pads 32-pixel images by 4 before the random crop, larger ones not at all."""
    return 4 if size <= 32 else 0


def strong_transform(aug):
    """SCAN's 'ours': flip, random crop (padding 4 for 32 px), RandAugment(num_strong_augs), normalise, Cutout."""
    aug = check_strong(aug)
    size = aug['crop_size']
    ops = [T.RandomHorizontalFlip()] if flips(aug) else []
    ops += [T.RandomCrop(size, padding=crop_padding(size), pad_if_needed=True),
            RandAugment(aug.get('num_strong_augs', 4)), T.ToTensor(), T.Normalize(**aug['normalize'])]
    if aug.get('cutout_kwargs'):
        ops.append(Cutout(**aug['cutout_kwargs']))
    return T.Compose(ops)


# augmentation_strategy -> builder of the torchvision pipeline (SCAN's names)
STRATEGIES = {'simclr': augmentation_transform, 'ours': strong_transform}


def train_transform(strategy, aug):
    if strategy not in STRATEGIES:
        raise UserError(f"augmentation_strategy '{strategy}' is not one of {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy](aug)
