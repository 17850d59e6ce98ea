"""The photo template on folders that no setting was chosen on, against k-means on the same features.

    python benchmarks/heldout.py --cifar datasets/cifar10-jpg --seeds 1 2
    python benchmarks/heldout.py --render        # the table again from benchmarks/results/heldout.json

Each folder runs the README's four commands (configs/image_folder_pretrained.yml with only the path and the packaged
ImageNet EfficientNet-Lite2 file, K found), then the clustering and self-label stages with K given on the same
pretext model. k-means (10 starts, the run's seed) clusters the same cached backbone features, L2-normalised as the
heads read them, once with the K the template found and once with K given. The folders (written under
--out/images; the photos are the CIFAR-10 JPEG copy's train images 4000-4999 of each class, which no setting looked
at):
- cifar10-test: the copy's 10,000 test photos, K = 10 (the choice of SCAN over TURTLE heads looked at seed 1 of it;
  docs/decisions.md);
- mixed: 210 photos of 3 classes (cat, ship, truck), each as JPEG, PNG, WebP or BMP in turn, resized to a random
  width and height of 48-320 pixels;
- imbalanced: 10 classes of 1,000 down to 50 photos (a geometric series), 3,410 in all;
- icons: 400 drawn 64-pixel icons of 5 shapes (circle, square, triangle, star, cross), each in random colours on
  a random background, at a random size, angle and place.

Writes benchmarks/results/heldout.{json,md} and replaces the block 'heldout' of its page (README.md or docs/). A run
finished earlier (in
--out) is read back. Run it alone on the machine: the minutes are part of the result.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from accuracy import machine, package_weights, publish  # noqa: E402
from image_folder import PRETRAINED_TEMPLATE, count_images, four_stages, given_k  # noqa: E402
from utils.logger import RunLog  # noqa: E402

CONFIGS = ['configs/image_folder_pretrained.yml']  # what the template's runs read
FIRST_UNSEEN = 4000  # train images from this index on (per class) were never looked at to choose a setting
MIXED_CLASSES, MIXED_PER_CLASS = ('cat', 'ship', 'truck'), 70
FORMATS = ('.jpg', '.png', '.webp', '.bmp')
IMBALANCED_LARGEST, IMBALANCED_SMALLEST = 1000, 50
SHAPES, ICONS_PER_SHAPE, ICON_SIZE = ('circle', 'square', 'triangle', 'star', 'cross'), 80, 64


def unseen_train(cifar, cls, count):
    folder = os.path.join(cifar, 'train', cls)
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))[FIRST_UNSEEN:FIRST_UNSEEN + count]]


def write_mixed(cifar, out, seed=0):
    """MIXED_PER_CLASS photos of each of MIXED_CLASSES in turn as each of FORMATS, at random sizes."""
    rng = np.random.default_rng(seed)
    i = 0
    for cls in MIXED_CLASSES:
        os.makedirs(os.path.join(out, cls), exist_ok=True)
        for path in unseen_train(cifar, cls, MIXED_PER_CLASS):
            size = tuple(int(s) for s in rng.integers(48, 321, 2))
            name = os.path.splitext(os.path.basename(path))[0] + FORMATS[i % len(FORMATS)]
            Image.open(path).convert('RGB').resize(size, Image.BICUBIC).save(os.path.join(out, cls, name))
            i += 1


def imbalanced_sizes(classes):
    """IMBALANCED_LARGEST down to IMBALANCED_SMALLEST images per class, a geometric series."""
    ratio = IMBALANCED_SMALLEST / IMBALANCED_LARGEST
    return [round(IMBALANCED_LARGEST * ratio ** (i / (classes - 1)), -1) for i in range(classes)]


def link_imbalanced(cifar, out):
    classes = sorted(os.listdir(os.path.join(cifar, 'train')))
    for cls, count in zip(classes, imbalanced_sizes(len(classes))):
        os.makedirs(os.path.join(out, cls), exist_ok=True)
        for path in unseen_train(cifar, cls, int(count)):
            os.symlink(os.path.abspath(path), os.path.join(out, cls, os.path.basename(path)))


def shape_points(shape, cx, cy, r, angle):
    """The polygon of a shape centred at (cx, cy) with outer radius r, turned by angle (radians)."""
    if shape == 'square':
        corners = [(math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif shape == 'triangle':
        corners = [(k * 2 * math.pi / 3, r) for k in range(3)]
    elif shape == 'star':
        corners = [(k * math.pi / 5, r if k % 2 == 0 else 0.45 * r) for k in range(10)]
    else:  # cross: a plus sign of arms a third of its width
        w = r / 3
        outline = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w), (-r, w),
                   (-w, w), (-w, r)]
        corners = [(math.atan2(y, x), math.hypot(x, y)) for x, y in outline]
    return [(cx + d * math.cos(a + angle), cy + d * math.sin(a + angle)) for a, d in corners]


def write_icons(out, seed=0, scale=4):
    """ICONS_PER_SHAPE icons of each of SHAPES (drawn at `scale` times the size, then reduced: smooth edges)."""
    rng = np.random.default_rng(seed)
    big = ICON_SIZE * scale
    for shape in SHAPES:
        os.makedirs(os.path.join(out, shape), exist_ok=True)
        for i in range(ICONS_PER_SHAPE):
            colours = rng.integers(0, 256, (2, 3))
            while np.abs(colours[0] - colours[1]).sum() < 150:  # the shape stands out from its background
                colours = rng.integers(0, 256, (2, 3))
            img = Image.new('RGB', (big, big), tuple(int(c) for c in colours[0]))
            draw = ImageDraw.Draw(img)
            r = big * rng.uniform(0.2, 0.42)
            cx, cy = rng.uniform(r, big - r, 2)
            fill = tuple(int(c) for c in colours[1])
            if shape == 'circle':
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
            else:
                draw.polygon(shape_points(shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=fill)
            img.resize((ICON_SIZE, ICON_SIZE), Image.LANCZOS).save(os.path.join(out, shape, f'{i:03d}.png'))


def folders(cifar, out):
    """{name: (folder, K)}, written on first use."""
    images = os.path.join(out, 'images')
    made = {'cifar10-test': (os.path.join(cifar, 'test'), 10),
            'mixed': (os.path.join(images, 'mixed'), len(MIXED_CLASSES)),
            'imbalanced': (os.path.join(images, 'imbalanced'), 10),
            'icons': (os.path.join(images, 'icons'), len(SHAPES))}
    writers = {'mixed': lambda f: write_mixed(cifar, f), 'imbalanced': lambda f: link_imbalanced(cifar, f),
               'icons': write_icons}
    for name, write in writers.items():
        folder = made[name][0]
        if not os.path.isdir(folder):
            write(folder + '.partial')
            os.replace(folder + '.partial', folder)
    return made


def cached_features(pretext_dir):
    """The pretext stage's cached backbone features of the folder (train and val are the folder itself)."""
    cache = os.path.join(pretext_dir, 'feature_cache')
    files = [f for f in os.listdir(cache) if f.endswith('.npy')]
    if len(files) != 1:
        raise SystemExit(f'error: expected one feature file in {cache}, found {len(files)}')
    return np.load(os.path.join(cache, files[0]))


def kmeans_acc(features, targets, k, seed):
    from sklearn.cluster import KMeans

    from evaluation.metrics import cluster_metrics
    pred = KMeans(k, n_init=10, random_state=seed).fit_predict(features)
    return round(float(cluster_metrics(pred, targets)['acc']), 4)


def stage_length(root, name, stage):
    """(epochs, optimiser steps) a stage trained, from its log."""
    trained = [r for r in RunLog(os.path.join(root, name, stage)).records() if r.get('epoch', 0) > 0]
    return len(trained), sum(r.get('steps', 0) for r in trained)


def folder_row(name, folder, k, out, seed):
    from data.folder import ImageFolder
    root = os.path.join(out, f'{name}-seed{seed}')
    extra = [f"backbone_weights={package_weights('efficientnet_lite2')}"]
    clustering, labelled, seconds = four_stages(folder, root, seed, extra, PRETRAINED_TEMPLATE, resume=True)
    given_clustering, given_labelled = given_k(folder, root, seed, extra, k, PRETRAINED_TEMPLATE, resume=True)
    base = os.path.basename(os.path.normpath(folder))
    features = cached_features(os.path.join(root, base, 'pretext'))
    features = features / np.linalg.norm(features, axis=1, keepdims=True)  # as the heads read them
    targets = np.asarray(ImageFolder('', '', path=folder).targets)  # the order of the cached features
    found = clustering['num_classes']
    return {'data': name, 'images': count_images(folder), 'k': k, 'seed': seed, 'k_found': found,
            'k_estimate': clustering.get('k_estimate'),
            'template_acc': labelled['acc'], 'kmeans_acc': kmeans_acc(features, targets, found, seed),
            'given_clustering_acc': given_clustering['acc'], 'given_acc': given_labelled['acc'],
            'given_kmeans_acc': kmeans_acc(features, targets, k, seed),
            'clustering_epochs_steps': stage_length(f'{root}-k{k}', base, 'scan'),
            'selflabel_epochs_steps': stage_length(f'{root}-k{k}', base, 'selflabel'),
            'minutes': round(sum(seconds.values()) / 60, 1), 'pretext_minutes': round(seconds['pretext'] / 60, 2)}


def markdown(result):
    rows = result['rows']
    lines = ['The photo template (configs/image_folder_pretrained.yml, the packaged ImageNet EfficientNet-Lite2 file) '
             'on folders no setting was chosen on (benchmarks/heldout.py), against k-means on the same cached '
             f"features, L2-normalised as the heads read them; {result['machine']}. The template's ACC after "
             'self-labelling; k-means with the same K. The settings were chosen on CIFAR-10 train photos 0-999 of '
             'each class (docs/decisions.md); only the choice of SCAN over TURTLE heads looked at cifar10-test.', '',
             '| folder | images | seed | K found | template, K found | k-means, K found | template, K given | '
             'k-means, K given | gain over k-means (K given) | epochs (steps): clustering, self-label | '
             'minutes (backbone) |', '|---' * 11 + '|']
    for r in rows:
        (ce, cs), (se, ss) = r['clustering_epochs_steps'], r['selflabel_epochs_steps']
        lines.append(f"| {r['data']} | {r['images']:,} | {r['seed']} | {r['k_found']} | {r['template_acc']:.3f} | "
                     f"{r['kmeans_acc']:.3f} | {r['given_acc']:.3f} (K = {r['k']}) | {r['given_kmeans_acc']:.3f} | "
                     f"{r['given_acc'] - r['given_kmeans_acc']:+.3f} | {ce} ({cs}), {se} ({ss}) | "
                     f"{r['minutes']:.1f} ({r['pretext_minutes']:.1f}) |")
    per10k = [r['pretext_minutes'] / r['images'] * 1e4 for r in rows if r['images'] >= 3000]
    if per10k:
        lines += ['', f'The backbone (features of every image, once) took {np.median(per10k):.1f} minutes per '
                  '10,000 images (median over the folders of at least 3,000).']
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cifar', help='the CIFAR-10 JPEG copy (DIR/train/<class>/*.jpg, DIR/test/...)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--only', nargs='+', default=None, help='these folders only (cifar10-test mixed ...)')
    parser.add_argument('--render', action='store_true', help='only write the table again from the saved JSON')
    parser.add_argument('--out', default=os.path.join(ROOT, 'results', 'benchmarks', 'heldout'))
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--readme', default=None, help='its block\'s page (default: found)')
    args = parser.parse_args(argv)
    result = None
    if not args.render:
        if not args.cifar:
            parser.error('give --cifar DIR (the CIFAR-10 JPEG copy)')
        rows = [folder_row(name, folder, k, args.out, seed)
                for name, (folder, k) in folders(args.cifar, args.out).items() if not args.only or name in args.only
                for seed in args.seeds]
        saved = os.path.join(args.results, 'heldout.json')
        if os.path.isfile(saved):  # rows of other folders and seeds stay
            with open(saved) as f:
                fresh = {(r['data'], r['seed']) for r in rows}
                rows = [r for r in json.load(f)['rows'] if (r['data'], r['seed']) not in fresh] + rows
        result = {'machine': machine(), 'rows': rows}
    publish('heldout', 'heldout', result, markdown, args.results, args.readme, CONFIGS)


if __name__ == '__main__':
    main()
