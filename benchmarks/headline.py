"""The README's headline table, rendered from the results JSONs of the benchmarks that measured each row (nothing is
run here): the digits profile, the photo template's held-out CIFAR-10 test photos, the CIFAR-10 JPEG CPU profile
and the GPU speedrun.

    python benchmarks/headline.py

Replaces the README block 'headline' (and writes benchmarks/results/headline.md).
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

from accuracy import update_readme  # noqa: E402
from provenance import changed  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402


def load(results, stem):
    path = os.path.join(results, f'{stem}.json')
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def spread(values):
    return f'{np.mean(values):.3f} ± {np.std(values):.3f} ({len(values)} runs)'


def profile_row(results, stem, data, recipe, best):
    found = load(results, stem)
    if found is None:
        return None
    runs = [seed[best]['acc'] for seed in found['seeds'] if best in seed]
    kmeans = [seed['kmeans_pretext']['acc'] for seed in found['seeds'] if 'kmeans_pretext' in seed]
    return marked([data, recipe, spread(runs), spread(kmeans) if kmeans else '', found['machine']], found)


def heldout_row(results):
    found = load(results, 'heldout')
    rows = [r for r in (found or {}).get('rows', []) if r['data'] == 'cifar10-test']
    if not rows:
        return None
    return marked(['CIFAR-10 test photos (10,000 JPEGs), K = 10 given', 'the photo template: frozen ImageNet '
                   'EfficientNet-Lite2, SCAN heads, self-labelling', spread([r['given_acc'] for r in rows]),
                   spread([r['given_kmeans_acc'] for r in rows]), found['machine']], found)


def speedrun_row(results):
    found = load(results, 'speedrun')
    recipe = "SCAN's published protocol (ResNet-18 from scratch, SimCLR, SCAN, self-labelling) as one command"
    if found is None:
        return ['CIFAR-10 (50,000 train, 10,000 test)', recipe, 'not run yet: no GPU has been lent', '', '']
    last = list(found['stages'].values())[-1] if found['stages'] else {}
    acc = last.get('metrics', {}).get('acc')
    return ['CIFAR-10 (50,000 train, 10,000 test)', recipe, f'{acc:.3f} (1 run)' if acc is not None else 'stopped', '',
            found.get('device', '')]


def markdown(results):
    rows = [profile_row(results, 'digits', "scikit-learn's digits (1,797)", 'small CNN from scratch: SimCLR, NNM, '
                        'self-labelling (`./run.sh`)', 'nnm+selflabel'),
            heldout_row(results),
            profile_row(results, 'cifar10-jpg-cpu', 'CIFAR-10 JPEG, test split (10,000), at CPU scale',
                        'small CNN from scratch: SimCLR, NNM, self-labelling', 'nnm+selflabel'),
            speedrun_row(results)]
    lines = ['| data | recipe | ACC, mean ± sd | k-means on the same features | machine |', '|---|---|---|---|---|']
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows if row]
    return '\n'.join(lines)


def marked(row, found):
    """The row, its first cell marked stale when the configs its JSON was run with changed since."""
    return [f'stale: {row[0]}', *row[1:]] if changed((found or {}).get('provenance')) else row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--readme', default=None, help='its block\'s page (default: found)')
    args = parser.parse_args(argv)
    text = markdown(args.results)
    atomic_write_text(os.path.join(args.results, 'headline.md'), text + '\n')
    update_readme('headline', text, args.readme)
    print(text)


if __name__ == '__main__':
    main()
