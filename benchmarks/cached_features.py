"""Clustering epochs on cached features against the same epochs through the frozen backbone on images, timed in one
run.

    python benchmarks/cached_features.py [--weights efficientnet-lite0-57934424.pth] [--epochs 5]

scikit-learn's digits as a folder of 64-pixel PNGs, configs/image_folder.yml with a frozen timm EfficientNet-Lite0
(setup: pretrained; the weights file given, else random weights: the speed does not depend on them), then scan.py
twice with its heads on the backbone and update_cluster_head_only: once on images, once with cache_features. An
epoch's seconds are log.jsonl's (training and the per-epoch evaluation); the table gives the medians and their ratio.
Writes benchmarks/results/cached_features.{json,md} and replaces the block 'cached-features' (docs/results.md). Run it alone.
"""
import argparse
import json
import os
import shutil
import statistics
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import scan  # noqa: E402
import simclr  # noqa: E402
from accuracy import machine, update_readme  # noqa: E402
from digits_folder import write_digits  # noqa: E402
from num_clusters import TEMPLATE  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402

BACKBONE = 'timm/tf_efficientnet_lite0'


def stage_args(folder, root, epochs):
    return ['--config_exp', TEMPLATE, f'db_kwargs.path={folder}', f'root_dir={root}', 'db_kwargs.image_size=64',
            f'backbone={BACKBONE}', 'backbone_kwargs={}', 'num_classes=10', 'clustering.heads_on=backbone',
            'clustering.update_cluster_head_only=true', f'clustering.epochs={epochs}']


def epoch_seconds(run_dir):
    return [r['seconds'] for r in map(json.loads, open(os.path.join(run_dir, 'log.jsonl'))) if r['epoch'] > 0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', default=None, help='a weights file for the backbone (default: random weights)')
    parser.add_argument('--epochs', type=int, default=5)
    parser.add_argument('--out', default=os.path.join(ROOT, 'results', 'benchmarks', 'cached-features'))
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--readme', default=None, help='its block\'s page (default: found)')
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    folder = os.path.join(args.out, 'images', 'digits')
    write_digits(folder, 64)
    weights = args.weights
    if weights is None:
        from models import get_backbone
        from easydict import EasyDict
        torch.manual_seed(0)
        backbone = get_backbone(EasyDict(backbone=BACKBONE, backbone_kwargs={}, channels=3))['backbone']
        weights = os.path.join(args.out, 'random_weights.pth')
        torch.save(backbone.state_dict(), weights)
    runs = {}
    for name, extra in (('images', []), ('cached features', ['clustering.cache_features=true'])):
        root = os.path.join(args.out, 'runs', name.replace(' ', '-'))
        base = stage_args(folder, root, args.epochs)
        simclr.main(base + ['pretext.setup=pretrained', f'backbone_weights={weights}'])
        result = scan.main(base + extra)
        seconds = epoch_seconds(os.path.join(root, 'digits', 'scan'))
        runs[name] = {'median_epoch_seconds': statistics.median(seconds), 'epoch_seconds': seconds,
                      'acc': result['acc']}
    ratio = runs['images']['median_epoch_seconds'] / max(runs['cached features']['median_epoch_seconds'], 1e-4)
    source = f'weights {os.path.basename(args.weights)}' if args.weights else 'random weights'
    lines = [f'scan.py, {BACKBONE} frozen ({source}), digits as 64-pixel images (1,797), {args.epochs} epochs, '
             f'3 heads; {machine()}.', '',
             '| heads trained on | median seconds per epoch | ACC |', '|---|---|---|']
    for name, r in runs.items():
        lines.append(f"| {name} | {r['median_epoch_seconds']:.3f} | {r['acc']:.3f} |")
    lines += ['', f'Cached features: {ratio:.0f} times faster per epoch.']
    text = '\n'.join(lines)
    os.makedirs(args.results, exist_ok=True)
    atomic_write_text(os.path.join(args.results, 'cached_features.json'),
                      json.dumps({'runs': runs, 'ratio': ratio, 'machine': machine()}, indent=2))
    atomic_write_text(os.path.join(args.results, 'cached_features.md'), text + '\n')
    update_readme('cached-features', text, args.readme)
    print(text)


if __name__ == '__main__':
    main()
