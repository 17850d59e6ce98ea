"""The small-CNN template on a folder no setting was chosen on: the README's four commands with only the path (K
found) against the recipe written by hand for the folder (K given).

    python benchmarks/heldout_digits.py --seeds 2
    python benchmarks/heldout_digits.py --render     # the table again from benchmarks/results/heldout_digits.json

The folder: scikit-learn's digits as dark, thick, noisy strokes on light paper at 40 pixels (benchmarks/digits_folder.py
--restyle). Template: configs/image_folder.yml with only the path. Expert: benchmarks/configs/grey_digits_expert.yml
(the digits expert configs on the folder, K = 10). The photo template's held-out folders are benchmarks/heldout.py's.

Seeds 1..N. A run finished earlier (in --out) is read back, not trained again (its minutes are its own). Writes
benchmarks/results/heldout_digits.{json,md} and replaces the block 'heldout-digits' of its page (README.md or
docs/). Run it alone on the
machine: the minutes are part of the result.
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from accuracy import machine, publish  # noqa: E402
from digits_folder import write_digits  # noqa: E402
from image_folder import count_images, four_stages  # noqa: E402

EXPERT = os.path.join(HERE, 'configs', 'grey_digits_expert.yml')


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


def markdown(rows, where):
    lines = ['A folder no setting was chosen on (benchmarks/heldout_digits.py): the README\'s four commands with only '
             'the path '
             f'(K found) against the recipe written by hand for the folder (K given); {where}.', '',
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
    parser.add_argument('--render', action='store_true', help='only write the table again from the saved JSON')
    parser.add_argument('--out', default=os.path.join(ROOT, 'results', 'benchmarks', 'heldout'))
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--readme', default=None, help='its block\'s page (default: found)')
    args = parser.parse_args(argv)
    result = None if args.render else {
        'machine': machine(), 'rows': [r for seed in range(1, args.seeds + 1) for r in digits_rows(args.out, seed)]}
    publish('heldout-digits', 'heldout_digits', result, lambda r: markdown(r['rows'], r['machine']), args.results,
            args.readme, ['configs/image_folder.yml', 'benchmarks/configs/grey_digits_expert.yml'])


if __name__ == '__main__':
    main()
