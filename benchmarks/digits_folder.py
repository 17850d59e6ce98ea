"""Write scikit-learn's digits as an image folder, the way a user's own images arrive: one PNG per image.

    python benchmarks/digits_folder.py OUT [--size 32] [--classes 0 1 2 ...] [--flat] [--restyle]

OUT/<digit>/<index>.png (grey, upscaled from 8x8 with bicubic interpolation), or OUT/<index>.png with --flat
(no labels). Used by the README's "Cluster your own images" example, the K-estimate benchmark and the tests.
--restyle renders them as another hand would arrive: dark ink on light paper, strokes thickened by a 3x3 maximum
(before inverting), and Gaussian noise (standard deviation 20 of 255, a fixed seed); the held-out folder of
benchmarks/heldout.py (40 pixels).
"""
import argparse
import os

import numpy as np
from PIL import Image, ImageFilter
from sklearn.datasets import load_digits


def restyled(img, rng):
    """Thick dark strokes on light paper, with noise (see the module's docstring)."""
    ink = np.asarray(img.filter(ImageFilter.MaxFilter(3)), dtype=np.float64)
    return Image.fromarray(np.clip(255 - ink + rng.normal(0, 20, ink.shape), 0, 255).astype(np.uint8), 'L')


def write_digits(out, size=32, classes=None, flat=False, limit=None, restyle=False):
    """The digits (those of `classes`, the first `limit` of them) as PNGs under `out`; returns how many."""
    digits = load_digits()
    keep = [i for i, t in enumerate(digits.target) if classes is None or t in classes][:limit]
    rng = np.random.default_rng(0)
    for i in keep:
        pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
        img = Image.fromarray(pixels, 'L').resize((size, size), Image.BICUBIC)
        if restyle:
            img = restyled(img, rng)
        folder = out if flat else os.path.join(out, str(digits.target[i]))
        os.makedirs(folder, exist_ok=True)
        img.save(os.path.join(folder, f'{i:04d}.png'))
    return len(keep)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out')
    parser.add_argument('--size', type=int, default=32)
    parser.add_argument('--classes', type=int, nargs='+', default=None)
    parser.add_argument('--flat', action='store_true', help='no class folders (an unlabelled folder)')
    parser.add_argument('--restyle', action='store_true', help='dark thick strokes on light paper, with noise')
    args = parser.parse_args(argv)
    n = write_digits(args.out, args.size, args.classes, args.flat, restyle=args.restyle)
    print(f'wrote {n} images under {args.out}')


if __name__ == '__main__':
    main()
