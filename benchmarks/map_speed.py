"""How long report.html's map takes on many images: evaluation.map.map_2d on N cached D-dimensional features (a
mixture of 10 Gaussian clusters, as a clustered folder's features are), timed alone on this machine, plus the page's
data and the static PNG (thumbnails aside: those cost one small decode per drawn image).

    python benchmarks/map_speed.py [--n 50000] [--dim 1280]

Writes benchmarks/results/map_speed.{json,md} and replaces the block 'map-speed' of docs/results.md (--render: from
the saved JSON). Run it alone on the machine.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from accuracy import machine, publish  # noqa: E402
from evaluation.map import DRAWN, FIT, map_2d, palette, save_map_png  # noqa: E402


def features(n, dim, k=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, dim)).astype(np.float32)
    labels = rng.integers(0, k, n)
    return centres[labels] + rng.normal(0, 1.5, (n, dim)).astype(np.float32), labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=50000)
    parser.add_argument('--dim', type=int, default=1280)
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--readme', default=None, help='its block\'s page (default: found)')
    parser.add_argument('--render', action='store_true', help='only write the line again from the saved JSON')
    args = parser.parse_args(argv)
    if args.render:
        return publish('map-speed', 'map_speed', None, markdown, args.results, args.readme)
    x, labels = features(args.n, args.dim)
    t0 = time.time()
    coords = map_2d(x)
    embed = time.time() - t0
    t0 = time.time()
    with tempfile.TemporaryDirectory() as folder:
        unit = (coords - coords.min(0)) / np.maximum(coords.max(0) - coords.min(0), 1e-9)
        save_map_png(unit, labels, [f'cluster {c}' for c in range(10)], palette(10), os.path.join(folder, 'map.png'))
    png = time.time() - t0
    result = {'n': args.n, 'dim': args.dim, 'fit': min(FIT, args.n), 'drawn': min(DRAWN, args.n),
              'embed_seconds': round(embed, 1), 'png_seconds': round(png, 1), 'machine': machine()}
    publish('map-speed', 'map_speed', result, markdown, args.results, args.readme)


def markdown(result):
    return (f"report.html's map of {result['n']:,} cached {result['dim']:,}-d features (benchmarks/map_speed.py): "
            f"PCA to 50 dimensions and t-SNE (openTSNE) on {result['fit']:,} of them, the rest placed into that map, "
            f"in {result['embed_seconds']:.0f} s; the static PNG of every point {result['png_seconds']:.0f} s; the "
            f"page draws {result['drawn']:,}. {result['machine']}.")


if __name__ == '__main__':
    main()
