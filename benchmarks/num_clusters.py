"""Benchmark of num_classes: auto: the number of clusters estimated without labels, against the true one.

    python benchmarks/num_clusters.py --seeds 5
        [--photos results/benchmarks/image-folder/folders-pretrained/test/pretext]
        [--pretrained results/benchmarks/cifar10-jpg-pretrained-lite0-lite2/seed2/cifar10-jpg-pretrained/pretext]
        [--out DIR]
    python benchmarks/num_clusters.py --render     # the table again from benchmarks/results/num_clusters.json

For each seed, scikit-learn's digits written as a folder of 32-pixel PNGs (all 10 classes, and a 5-class subset)
goes through the pretext stage of configs/image_folder.yml exactly as the README tells a user, then the estimate
scan.py makes before training its heads. With --photos, the estimate on the photo path's (benchmarks/image_folder.py --pretrained); with --pretrained, on the frozen
Lite0 + Lite2 features of the accuracy profile (a frozen backbone's features, and so the estimate, are the same on
every seed); rows not rerun keep their earlier values.
With --out results/benchmarks/image-folder the digits pretext runs of benchmarks/image_folder.py (the same
template, folder and seeds) are read instead of trained again.
Writes benchmarks/results/num_clusters.{json,md} and replaces the block 'num-clusters' of docs/results.md.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import simclr  # noqa: E402
from accuracy import machine, publish  # noqa: E402
from digits_folder import write_digits  # noqa: E402
from neighbors.num_clusters import estimate_num_clusters  # noqa: E402
from utils.config import read_yaml  # noqa: E402

TEMPLATE = os.path.join(ROOT, 'configs', 'image_folder.yml')
K_RANGE = [2, 20]  # the template's
CASES = {'digits (10 classes)': None, 'digits, classes 0-4': [0, 1, 2, 3, 4]}


def estimate(pretext_dir):
    """The estimate scan.py makes on that pretext run (k_median as it follows from the pretext's setup)."""
    pretrained = read_yaml(os.path.join(pretext_dir, 'config.yml'), 'pretext run config').get('setup') == 'pretrained'
    return estimate_num_clusters(np.load(os.path.join(pretext_dir, 'topk-train-neighbors.npy')), K_RANGE,
                                 'communities' if pretrained else 'clusters')[0]


def run_case(name, classes, seed, out, extra):
    folder = os.path.join(out, 'images', 'digits' if classes is None else 'digits' + ''.join(map(str, classes)))
    if not os.path.isdir(folder):
        write_digits(folder, 32, classes)
    root = os.path.join(out, f'seed{seed}')
    name_dir = os.path.basename(folder)
    pretext_dir = os.path.join(root, name_dir, 'pretext')
    t0 = time.time()
    if not os.path.isfile(os.path.join(pretext_dir, 'topk-train-neighbors.npy')):
        simclr.main(['--config_exp', TEMPLATE, f'db_kwargs.path={folder}', f'root_dir={root}', '--seed', str(seed),
                     *extra])
    return {'case': name, 'seed': seed, 'true_k': 10 if classes is None else len(classes),
            'k': estimate(pretext_dir), 'seconds': round(time.time() - t0, 1)}


OTHERS = {'photos': 'CIFAR-10 (JPEG) test split, photo path (ImageNet EfficientNet-Lite2 features)',
          'pretrained': 'CIFAR-10 (JPEG) train split, ImageNet EfficientNet-Lite0 + Lite2 features side by side'}


def markdown(result):
    rows, others = result['rows'], result['others']
    seeds = sorted({r['seed'] for r in rows})
    lines = [f'num_classes: auto, k_range {result["k_range"]}, seeds {", ".join(map(str, seeds))}; '
             f'{result["machine"]}.', '',
             '| data | true K | estimated K per seed | seeds with the true K |', '|---|---|---|---|']
    for case in CASES:
        mine = [r for r in rows if r['case'] == case]
        if mine:
            hits = sum(r['k'] == r['true_k'] for r in mine)
            lines.append(f"| {case} | {mine[0]['true_k']} | {', '.join(str(r['k']) for r in mine)} | "
                         f'{hits} of {len(mine)} |')
    for name, label in OTHERS.items():
        if others.get(name) is not None:
            lines.append(f'| {label} | 10 | {others[name]} | |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=5)
    parser.add_argument('--out', default=os.path.join(ROOT, 'results', 'benchmarks', 'num-clusters'))
    parser.add_argument('--photos', default=None, help='a pretext run folder with topk-train-neighbors.npy: the '
                        'photo path on the CIFAR-10 JPEG test split')
    parser.add_argument('--pretrained', default=None, help='the same, of the cifar10-jpg-pretrained-lite0-lite2 '
                        'profile (train split)')
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--readme', default=None, help='its block\'s page (default: found)')
    parser.add_argument('--render', action='store_true', help='only write the table again from the saved JSON')
    parser.add_argument('overrides', nargs='*', help='key=value for the pretext stage')
    args = parser.parse_args(argv)
    result = None
    if not args.render:
        seeds = list(range(1, args.seeds + 1))
        rows = [run_case(case, classes, seed, args.out, args.overrides) for case, classes in CASES.items()
                for seed in seeds]
        saved = os.path.join(args.results, 'num_clusters.json')
        others = {}
        if os.path.isfile(saved):  # a CIFAR row not rerun this time keeps its earlier estimate
            with open(saved) as f:
                others = json.load(f).get('others', {})
        for name in OTHERS:
            if getattr(args, name):
                others[name] = estimate(getattr(args, name))
        result = {'rows': rows, 'others': others, 'k_range': K_RANGE, 'machine': machine()}
    publish('num-clusters', 'num_clusters', result, markdown, args.results, args.readme,
            ['configs/image_folder.yml'])


if __name__ == '__main__':
    main()
