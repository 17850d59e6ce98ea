"""SCAN's strong augmentation ('ours'): flip, random crop, 4 of 14 RandAugment-style
operations with uniformly random magnitudes, normalise, Cutout with one square hole."""
import random

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps


def _shear(img, axis, v):
    coeffs = (1, v, 0, 0, 1, 0) if axis == 0 else (1, 0, 0, v, 1, 0)
    return img.transform(img.size, Image.AFFINE, coeffs)


def _translate(img, axis, v):
    shift = v * img.size[axis]
    coeffs = (1, 0, shift, 0, 1, 0) if axis == 0 else (1, 0, 0, 0, 1, shift)
    return img.transform(img.size, Image.AFFINE, coeffs)


# name -> (operation(img, magnitude), magnitude range or None)
OPERATIONS = {
    'identity': (lambda img, v: img, None),
    'autocontrast': (lambda img, v: ImageOps.autocontrast(img), None),
    'equalize': (lambda img, v: ImageOps.equalize(img), None),
    'rotate': (lambda img, v: img.rotate(v), (-30, 30)),
    'solarize': (lambda img, v: ImageOps.solarize(img, int(v)), (0, 256)),
    'color': (lambda img, v: ImageEnhance.Color(img).enhance(v), (0.05, 0.95)),
    'contrast': (lambda img, v: ImageEnhance.Contrast(img).enhance(v), (0.05, 0.95)),
    'brightness': (lambda img, v: ImageEnhance.Brightness(img).enhance(v), (0.05, 0.95)),
    'sharpness': (lambda img, v: ImageEnhance.Sharpness(img).enhance(v), (0.05, 0.95)),
    'shear_x': (lambda img, v: _shear(img, 0, v), (-0.3, 0.3)),
    'shear_y': (lambda img, v: _shear(img, 1, v), (-0.3, 0.3)),
    'translate_x': (lambda img, v: _translate(img, 0, v), (-0.3, 0.3)),
    'translate_y': (lambda img, v: _translate(img, 1, v), (-0.3, 0.3)),
    'posterize': (lambda img, v: ImageOps.posterize(img, int(v)), (4, 8.99)),
}


class RandAugment:
    """Apply `n` operations drawn at random (with replacement), each with a uniform random magnitude."""

    def __init__(self, n=4):
        self.n = int(n)

    def __call__(self, img):
        for name in random.choices(list(OPERATIONS), k=self.n):
            op, bounds = OPERATIONS[name]
            img = op(img, random.uniform(*bounds) if bounds else None)
        return img


class Cutout:
    """Zero one random square of side `length` (clipped at the border) in a [C, H, W] tensor."""

    def __init__(self, n_holes=1, length=16, random=False):
        self.n_holes, self.length = int(n_holes), int(length)

    def __call__(self, x):
        h, w = x.shape[-2:]
        mask = torch.ones(h, w, dtype=x.dtype)
        for _ in range(self.n_holes):
            cy, cx = np.random.randint(h), np.random.randint(w)
            mask[max(0, cy - self.length // 2):cy + self.length // 2, max(0, cx - self.length // 2):cx + self.length // 2] = 0
        return x * mask
