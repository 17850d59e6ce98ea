"""Held-out folders: the README's four commands (the template, K found) against the best recipe written by hand
for the folder (K given), on folders that no setting of the project was chosen on.

    python benchmarks/heldout.py --seeds 2 [--cifar datasets/cifar10-jpg]

- digits, restyled: scikit-learn's digits as dark, thick, noisy strokes on light paper at 40 pixels
  (benchmarks/digits_folder.py --restyle). Template: configs/image_folder.yml with only the path. Expert:
  benchmarks/configs/grey_digits_expert.yml (the digits expert configs on the folder, K = 10).
- CIFAR-10 test photos of classes 0-5 (with --cifar DIR: links to the 6,000 images of DIR/test's first six class
  folders). Template: configs/image_folder_pretrained.yml with the packaged ImageNet EfficientNet-Lite2 file.
  Expert: the same pretext model with K = 6 given (the heads of the CIFAR-10 JPEG profile, whose best row is SCAN
  on the frozen features). The K estimate for such features was chosen on CIFAR-10 train-split folders, and
  the photo path's settings on the train split of the profile; no setting looked at the test split.

Seeds 1..N. A run finished earlier (in --out) is read back, not trained again (its minutes are its own). Writes
benchmarks/results/heldout.{json,md} and replaces the README block 'heldout'. Run it alone on the
machine: the minutes are part of the result.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from accuracy import machine, package_weights, update_readme  # noqa: E402
from digits_folder import write_digits  # noqa: E402
from image_folder import PRETRAINED_TEMPLATE, count_images, four_stages, given_k  # noqa: E402
from num_clusters import TEMPLATE  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402

EXPERT = os.path.join(HERE, 'configs', 'grey_digits_expert.yml')
CIFAR_CLASSES = 6


def link_cifar_classes(source, folder):
    """folder/<class>/ -> source/<class>/ for the first CIFAR_CLASSES class folders of source (sorted)."""
    classes = sorted(d for d in os.listdir(source) if os.path.isdir(os.path.join(source, d)))[:CIFAR_CLASSES]
    os.makedirs(folder, exist_ok=True)
    for c in classes:
        if not os.path.exists(os.path.join(folder, c)):
            os.symlink(os.path.abspath(os.path.join(source, c)), os.path.join(folder, c))
    return classes


def row(data, recipe, seed, k, k_given, clustering, labelled, seconds):
    return {'data': data, 'recipe': recipe, 'seed': seed, 'k': k, 'k_given': k_given,
            'clustering_acc': clustering['acc'], 'selflabel_acc': labelled['acc'],
            'minutes': None if seconds is None else round(sum(seconds.values()) / 60, 1)}


def digits_rows(out, seed):
    folder = os.path.join(out, 'images', 'digits_restyled')
    if not os.path.isdir(folder):
        write_digits(folder, 40, restyle=True)
    data = f'digits, restyled ({count_images(folder):,} images)'
    clustering, labelled, seconds = four_stages(folder, os.path.join(out, f'template-seed{seed}'), seed, [],
                                                resume=True)
    template = row(data, 'template', seed, clustering['num_classes'], False, clustering, labelled, seconds)
    clustering, labelled, seconds = four_stages(folder, os.path.join(out, f'expert-seed{seed}'), seed, [], EXPERT,
                                                resume=True)
    return [template, row(data, 'expert (grey_digits_expert.yml)', seed, 10, True, clustering, labelled, seconds)]


def cifar_rows(out, seed, cifar):
    folder = os.path.join(out, 'images', f'cifar10_test_classes_0-{CIFAR_CLASSES - 1}')
    link_cifar_classes(os.path.join(cifar, 'test'), folder)
    data = f'CIFAR-10 test, classes 0-{CIFAR_CLASSES - 1} ({count_images(folder):,} images)'
    root = os.path.join(out, f'photos-seed{seed}')
    extra = [f"backbone_weights={package_weights('efficientnet_lite2')}"]
    clustering, labelled, seconds = four_stages(folder, root, seed, extra, PRETRAINED_TEMPLATE, resume=True)
    template = row(data, 'template (image_folder_pretrained.yml)', seed, clustering['num_classes'], False,
                   clustering, labelled, seconds)
    clustering, labelled = given_k(folder, root, seed, extra, CIFAR_CLASSES, PRETRAINED_TEMPLATE, resume=True)
    return [template, row(data, 'expert (the same, K given)', seed, CIFAR_CLASSES, True, clustering, labelled, None)]


def markdown(rows, where):
    lines = ['Folders no setting was chosen on (benchmarks/heldout.py): the README\'s four commands with only the path '
             f'(K found) against the best recipe written for the folder (K given); {where}.', '',
             '| data | recipe | seeds | K per seed | clustering ACC per seed | self-label ACC per seed | '
             'self-label ACC, mean | minutes per run |', '|---|---|---|---|---|---|---|---|']
    for data in dict.fromkeys(r['data'] for r in rows):
        for recipe in dict.fromkeys(r['recipe'] for r in rows if r['data'] == data):
            mine = [r for r in rows if r['data'] == data and r['recipe'] == recipe]
            minutes = [r['minutes'] for r in mine if r['minutes'] is not None]
            ks = ', '.join(f"{r['k']}{' (given)' if r['k_given'] else ''}" for r in mine)
            clustering = ', '.join(f"{r['clustering_acc']:.3f}" for r in mine)
            labelled = ', '.join(f"{r['selflabel_acc']:.3f}" for r in mine)
            mean = np.mean([r['selflabel_acc'] for r in mine])
            timing = f'{np.median(minutes):.1f} (median)' if minutes else 'heads only'
            lines.append(f"| {data} | {recipe} | {', '.join(str(r['seed']) for r in mine)} | {ks} | {clustering} | "
                         f'{labelled} | {mean:.3f} | {timing} |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=2)
    parser.add_argument('--cifar', default=None, help='the CIFAR-10 JPEG copy (DIR/test/<class>/*.jpg)')
    parser.add_argument('--out', default=os.path.join(ROOT, 'results', 'benchmarks', 'heldout'))
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--readme', default=os.path.join(ROOT, 'README.md'))
    args = parser.parse_args(argv)
    seeds = range(1, args.seeds + 1)
    rows = [r for seed in seeds for r in digits_rows(args.out, seed)]
    if args.cifar:
        rows += [r for seed in seeds for r in cifar_rows(args.out, seed, args.cifar)]
    where = machine()
    os.makedirs(args.results, exist_ok=True)
    atomic_write_text(os.path.join(args.results, 'heldout.json'),
                      json.dumps({'machine': where, 'rows': rows}, indent=2))
    text = markdown(rows, where)
    atomic_write_text(os.path.join(args.results, 'heldout.md'), text + '\n')
    update_readme('heldout', text, args.readme)
    print(text)


if __name__ == '__main__':
    main()
