"""The README's "Cluster your own images" commands, timed, on scikit-learn's digits written as a labelled folder of
32-pixel PNGs: configs/image_folder.yml with only the path, num_classes auto, all four stages; then the clustering
and self-label stages again on the same pretext model with num_classes=10 given, to compare.

    python benchmarks/image_folder.py --seeds 2 [--folder datasets/cifar10-jpg/test]
    python benchmarks/image_folder.py --seeds 0 --folder datasets/cifar10-jpg/test   # only that folder

--folder adds one run (seed 1, K found) of the four stages on another folder: the README's timing of a folder of
10,000 small photos comes from the CIFAR-10 (JPEG) copy's test split.

Every run has its own folder (<out>/seed<k>/, <out>/seed<k>-k10/, <out>/folders/). Adds its rows to
benchmarks/results/image_folder.json (replacing rows of the same data and seed), writes image_folder.md from all
of them and replaces the README block 'image-folder'. Run it alone on the machine:
the seconds are part of the result.
"""
import argparse
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import eval as evaluate  # noqa: E402
import scan  # noqa: E402
import selflabel  # noqa: E402
import simclr  # noqa: E402
from accuracy import machine, update_readme  # noqa: E402
from data.base import IMAGE_EXTENSIONS  # noqa: E402
from digits_folder import write_digits  # noqa: E402
from num_clusters import TEMPLATE  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402

TRUE_K = 10


def four_stages(folder, root, seed, extra):
    """simclr.py, scan.py, selflabel.py and eval.py as the README gives them; returns (scan's and selflabel's
    metrics, {stage: seconds})."""
    args = ['--config_exp', TEMPLATE, f'db_kwargs.path={folder}', f'root_dir={root}', '--seed', str(seed), *extra]
    pretext = simclr.main(args)
    clustering = scan.main(args)
    labelled = selflabel.main(args)
    t0 = time.time()
    model = os.path.join(root, os.path.basename(folder), 'selflabel', 'model.pth.tar')
    evaluate.main(['--config_exp', TEMPLATE, f'db_kwargs.path={folder}', f'root_dir={root}', *extra,
                   '--model', model, '--visualize_prototypes', '--predict', folder])
    seconds = {'pretext': pretext['seconds'], 'clustering': clustering['seconds'], 'selflabel': labelled['seconds'],
               'eval': round(time.time() - t0, 1)}
    return clustering, labelled, seconds


def count_images(folder):
    return sum(f.lower().endswith(IMAGE_EXTENSIONS) for _, _, files in os.walk(folder) for f in files)


def run_folder(folder, out, extra):
    """All four stages on any folder (seed 1, K found)."""
    clustering, labelled, seconds = four_stages(folder, os.path.join(out, 'folders'), 1, extra)
    return {'data': f'{os.path.normpath(folder)} ({count_images(folder):,} images)', 'seed': 1,
            'k': clustering['num_classes'], 'clustering_acc': clustering['acc'], 'selflabel_acc': labelled['acc'],
            'given_selflabel_acc': None, 'seconds': seconds, 'total_seconds': round(sum(seconds.values()), 1)}


def run_seed(seed, out, extra):
    folder = os.path.join(out, 'images', 'digits')
    if not os.path.isdir(folder):
        write_digits(folder, 32)
    root = os.path.join(out, f'seed{seed}')
    pretext_dir = os.path.join(root, 'digits', 'pretext')
    clustering, labelled, seconds = four_stages(folder, root, seed, extra)
    given_root = os.path.join(out, f'seed{seed}-k{TRUE_K}')  # the same pretext model, K given
    if not os.path.isdir(os.path.join(given_root, 'digits', 'pretext')):
        shutil.copytree(pretext_dir, os.path.join(given_root, 'digits', 'pretext'))
    given = [f'num_classes={TRUE_K}', *extra]
    given_clustering = scan.main(['--config_exp', TEMPLATE, f'db_kwargs.path={folder}', f'root_dir={given_root}',
                                  '--seed', str(seed), *given])
    given_labelled = selflabel.main(['--config_exp', TEMPLATE, f'db_kwargs.path={folder}',
                                     f'root_dir={given_root}', '--seed', str(seed), *given])
    return {'data': 'digits (1,797 images)', 'seed': seed, 'k': clustering['num_classes'],
            'clustering_acc': clustering['acc'], 'selflabel_acc': labelled['acc'],
            'given_clustering_acc': given_clustering['acc'], 'given_selflabel_acc': given_labelled['acc'],
            'seconds': seconds, 'total_seconds': round(sum(seconds.values()), 1)}


def markdown(rows):
    lines = [f'configs/image_folder.yml with only the path (digits: 10 class sub-folders of 32-pixel PNGs); '
             f'{machine()}.', '',
             '| data | seed | K found | clustering ACC | self-label ACC | self-label ACC, K = 10 given | '
             'minutes (pretext + clustering + self-label + eval) |', '|---|---|---|---|---|---|---|']
    for r in rows:
        s = r['seconds']
        given = '' if r['given_selflabel_acc'] is None else f"{r['given_selflabel_acc']:.3f}"
        lines.append(f"| {r['data']} | {r['seed']} | {r['k']} | {r['clustering_acc']:.3f} | "
                     f"{r['selflabel_acc']:.3f} | {given} | {r['total_seconds'] / 60:.1f} ({s['pretext'] / 60:.1f} + "
                     f"{s['clustering'] / 60:.1f} + {s['selflabel'] / 60:.1f} + {s['eval'] / 60:.1f}) |")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=2)
    parser.add_argument('--out', default=os.path.join(ROOT, 'results', 'benchmarks', 'image-folder'))
    parser.add_argument('--folder', action='append', default=[], help='another image folder to time')
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--readme', default=os.path.join(ROOT, 'README.md'))
    parser.add_argument('overrides', nargs='*', help='key=value for every stage')
    args = parser.parse_args(argv)
    rows = [run_seed(seed, args.out, args.overrides) for seed in range(1, args.seeds + 1)]
    rows += [run_folder(folder, args.out, args.overrides) for folder in args.folder]
    os.makedirs(args.results, exist_ok=True)
    saved = os.path.join(args.results, 'image_folder.json')
    if os.path.isfile(saved):  # rows of earlier invocations stay unless this one reran them (same data and seed)
        with open(saved) as f:
            fresh = {(r['data'], r['seed']) for r in rows}
            rows = [r for r in json.load(f)['rows'] if (r['data'], r['seed']) not in fresh] + rows
    atomic_write_text(saved, json.dumps({'rows': rows, 'machine': machine()}, indent=2))
    text = markdown(rows)
    atomic_write_text(os.path.join(args.results, 'image_folder.md'), text + '\n')
    update_readme('image-folder', text, args.readme)
    print(text)


if __name__ == '__main__':
    main()
