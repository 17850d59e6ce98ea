"""One change at a time to the template (configs/image_folder.yml) on the digits folder, K found: which of its
defaults earn their place against the choices of the digits expert configs.

    python benchmarks/ablation.py --seeds 10 11 [--variants template nnm ...] [--jobs 2]

The seeds are the ones the defaults were chosen on (10 and up); the README's acceptance rows use seeds 1-5
(benchmarks/image_folder.py). Every variant changes the template as the ablation began (BASE); clustering-side
variants reuse the pretext model of the variant named in VARIANTS, pretext-side ones train their own. --jobs N
runs N variants at a time with one thread each (the minutes are then not comparable with the other tables, which
run alone). On digits the template's max_steps caps nothing (1,797 images make 8
pretext steps an epoch: 800 in all, under its 2,400), so it has no row. Writes benchmarks/results/ablation.{json,md}
and replaces the block 'ablation' of its page (README.md or docs/).
"""
import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from accuracy import machine, update_readme  # noqa: E402
from digits_folder import write_digits  # noqa: E402
from num_clusters import TEMPLATE  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402

# The template as the ablation began (stop 42), which every variant changes: the flip left on and k-means heads.
# Two of the changes measured here are the template's since (horizontal_flip: auto decides false on digits).
BASE = ['augmentation_kwargs.horizontal_flip=null', 'clustering.head_init=kmeans']
# SCAN's self-labelling (confidence over 0.99) in place of the template's: its loss takes neither of these keys
SCAN_SELFLABEL = ['selflabel.setup=selflabel', 'selflabel.criterion_kwargs.fraction=null',
                  'selflabel.criterion_kwargs.entropy_weight=null']
# name: (what changes, the overrides, the variant whose pretext model it uses: None for its own)
VARIANTS = {
    'template': ('the template as the ablation began (flip on, k-means heads)', [], None),
    'nnm': ('NNM instead of SCAN', ['clustering.setup=nnm'], 'template'),
    'heads_on_backbone': ('heads on the backbone instead of the projection', ['clustering.heads_on=backbone'],
                          'template'),
    'random_init': ('heads start at random instead of k-means', ['clustering.head_init=random'], 'template'),
    'graph_init': ("heads start at the neighbour graph's clusters instead of k-means", ['clustering.head_init=graph'],
                   'template'),
    'selflabel_threshold': ("SCAN's self-labelling (confidence over 0.99) instead of each cluster's surest half",
                            SCAN_SELFLABEL, 'template'),
    'no_affine': ('no random_affine in the pretext', ['augmentation_kwargs.random_affine=null'], None),
    'no_flip': ('no horizontal flip in the pretext', ['augmentation_kwargs.horizontal_flip=false'], None),
    'no_flip_graph': ("no horizontal flip in the pretext, heads start at the neighbour graph's clusters (the "
                      'template now)', ['augmentation_kwargs.horizontal_flip=false', 'clustering.head_init=graph'],
                      'no_flip'),
    'no_flip_graph_threshold': ("the template now with SCAN's self-labelling (confidence over 0.99)",
                                ['augmentation_kwargs.horizontal_flip=false', 'clustering.head_init=graph',
                                 *SCAN_SELFLABEL], 'no_flip'),
    'no_colour': ('no colour jitter or greyscale in the pretext',
                  ['augmentation_kwargs.color_jitter=null', 'augmentation_kwargs.random_grayscale=null'], None),
    'grey': ('one channel (grey images as grey), no colour jitter',
             ['channels=1', 'augmentation_kwargs.color_jitter=null', 'augmentation_kwargs.random_grayscale=null'],
             None),
    'batch_512': ('pretext batch size 512 (lr 0.6)', ['pretext.batch_size=512', 'pretext.optimizer_kwargs.lr=0.6'],
                  None),
}


def run_variant(name, seed, out, extra=()):
    """The stages of one variant on one seed; returns its row."""
    import scan
    import selflabel
    import simclr
    folder = os.path.join(out, 'images', 'digits')
    _, overrides, pretext_from = VARIANTS[name]
    root = os.path.join(out, f'seed{seed}', name)
    args = ['--config_exp', TEMPLATE, f'db_kwargs.path={folder}', '--seed', str(seed), *BASE, *overrides, *extra]
    seconds = 0.0
    if pretext_from:  # that variant's pretext model, linked in
        os.makedirs(os.path.join(root, 'digits'), exist_ok=True)
        link = os.path.join(root, 'digits', 'pretext')
        if not os.path.exists(link):
            os.symlink(os.path.join(out, f'seed{seed}', pretext_from, 'digits', 'pretext'), link)
    else:
        seconds += simclr.main(args + [f'root_dir={root}', '--resume'])['seconds']
    clustering = scan.main(args + [f'root_dir={root}', '--resume'])
    labelled = selflabel.main(args + [f'root_dir={root}', '--resume'])
    seconds += clustering['seconds'] + labelled['seconds']
    with open(os.path.join(root, 'digits', 'pretext', 'metrics.json')) as f:
        neighbor_acc = json.load(f)['neighbor_acc']
    return {'variant': name, 'seed': seed, 'neighbor_acc': neighbor_acc, 'k': clustering['num_classes'],
            'clustering_acc': clustering['acc'],
            'selflabel_acc': labelled['acc'], 'minutes': round(seconds / 60, 1)}


def _worker(job):
    os.environ['OMP_NUM_THREADS'] = '1'
    import torch
    torch.set_num_threads(1)
    return run_variant(*job)


def markdown(rows, where, jobs):
    template = {r['seed']: r['selflabel_acc'] for r in rows if r['variant'] == 'template'}
    seeds = sorted({r['seed'] for r in rows})
    lines = [f"The template with one change, digits folder, K found, seeds {', '.join(map(str, seeds))} (the seeds the "
             f'defaults were chosen on); {where}' + (f', {jobs} variants at a time' if jobs > 1 else '') + '.', '',
             '| variant | top-20 neighbour ACC per seed | K per seed | clustering ACC per seed | self-label ACC per seed '
             '| mean | against the template |',
             '|---|---|---|---|---|---|---|']
    for name, (what, _, _) in VARIANTS.items():
        mine = sorted((r for r in rows if r['variant'] == name), key=lambda r: r['seed'])
        if not mine:
            continue
        mean = np.mean([r['selflabel_acc'] for r in mine])
        paired = [r['selflabel_acc'] - template[r['seed']] for r in mine if r['seed'] in template]
        delta = f'{np.mean(paired):+.3f}' if paired and name != 'template' else ''
        clustering = ', '.join(format(r['clustering_acc'], '.3f') for r in mine)
        labelled = ', '.join(format(r['selflabel_acc'], '.3f') for r in mine)
        neighbors = ', '.join(format(r['neighbor_acc'], '.3f') for r in mine)
        lines.append(f"| {what} | {neighbors} | {', '.join(str(r['k']) for r in mine)} | {clustering} | {labelled} | "
                     f'{mean:.3f} | {delta} |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[10, 11])
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--jobs', type=int, default=1)
    parser.add_argument('--out', default=os.path.join(ROOT, 'results', 'benchmarks', 'ablation'))
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--readme', default=None, help='its block\'s page (default: found)')
    parser.add_argument('overrides', nargs='*', help='key=value for every variant (a quick check: epochs=1 ...)')
    args = parser.parse_args(argv)
    folder = os.path.join(args.out, 'images', 'digits')
    if not os.path.isdir(folder):
        write_digits(folder, 32)
    names = list(dict.fromkeys(['template'] + [VARIANTS[v][2] for v in args.variants if VARIANTS[v][2]]
                               + args.variants))  # with the variants whose pretext models others use
    first = [(name, seed, args.out, args.overrides) for name in names if not VARIANTS[name][2]
             for seed in args.seeds]  # the pretext models first
    rest = [(name, seed, args.out, args.overrides) for name in names if VARIANTS[name][2] for seed in args.seeds]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(_worker, first)) + list(pool.map(_worker, rest))
    else:
        rows = [run_variant(*job) for job in first + rest]
    where = machine()
    os.makedirs(args.results, exist_ok=True)
    atomic_write_text(os.path.join(args.results, 'ablation.json'),
                      json.dumps({'machine': where, 'jobs': args.jobs, 'rows': rows}, indent=2))
    text = markdown(rows, where, args.jobs)
    atomic_write_text(os.path.join(args.results, 'ablation.md'), text + '\n')
    update_readme('ablation', text, args.readme)
    print(text)


if __name__ == '__main__':
    main()
