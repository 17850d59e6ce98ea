"""Write scikit-learn's digits as an image folder, the way a user's own images arrive: one PNG per image.

    python benchmarks/digits_folder.py OUT [--size 32] [--classes 0 1 2 ...] [--flat]

OUT/<digit>/<index>.png (grey, upscaled from 8x8 with bicubic interpolation), or OUT/<index>.png with --flat
(no labels). Used by the README's "Cluster your own images" example, the K-estimate benchmark and the tests.
"""
import argparse
import os

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write_digits(out, size=32, classes=None, flat=False, limit=None):
    """The digits (those of `classes`, the first `limit` of them) as PNGs under `out`; returns how many."""
    digits = load_digits()
    keep = [i for i, t in enumerate(digits.target) if classes is None or t in classes][:limit]
    for i in keep:
        pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
        img = Image.fromarray(pixels, 'L').resize((size, size), Image.BICUBIC)
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
    args = parser.parse_args(argv)
    n = write_digits(args.out, args.size, args.classes, args.flat)
    print(f'wrote {n} images under {args.out}')


if __name__ == '__main__':
    main()
