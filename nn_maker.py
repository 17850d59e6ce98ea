"""Select the pool images that resemble a target set: for every target image its nn_factor nearest pool
images by cosine similarity, kept when their cosine distance is below dist_thr, de-duplicated.

    python nn_maker.py --target_csv target.csv --near_csv pool.csv --save_dir selected \
        --target_db TARGET_IMAGES --near_db POOL_IMAGES --nn_factor 5 --dist_thr 0.3 [--copy | --link]

Writes into save_dir (built in a temporary folder, then renamed; an existing save_dir is never touched):
selected.csv (pool path, matched target path, distance, pool label), summary.json (counts, per-class counts
when the pool has labels, distance quantiles), distances.png and, with --copy / --link, images/<class>/...
an image_folder tree the other stages can train on.
"""
import argparse
import json
import os
import shutil
import tempfile

import numpy as np

from neighbors.search import search
from stages.run import run_cli
from utils.errors import UserError
from utils.feature_files import csv_text, read_features
from utils.plots import pyplot


def select(target, pool, k, threshold, nlist=None):
    """Top-k pool rows per target row (cosine), distance = 1 - similarity < threshold, each pool row once
    (matched to its closest target). Returns a list of (pool index, target index, distance), closest first."""
    sims, idx = search(pool, target, k, nlist=nlist)
    best = {}
    for t in range(len(target)):
        for s, p in zip(sims[t], idx[t]):
            d = float(1.0 - s)
            if p >= 0 and d < threshold and (p not in best or d < best[p][1]):
                best[int(p)] = (t, d)
    return sorted(((p, t, d) for p, (t, d) in best.items()), key=lambda r: (r[2], r[0]))


def histogram(all_distances, kept, threshold, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    bins = np.linspace(0, 2, 81)
    ax.hist(all_distances, bins=bins, alpha=0.5, label='top-k candidates')
    ax.hist(kept, bins=bins, alpha=0.8, label='selected (unique)')
    ax.axvline(threshold, color='k', linestyle='--', linewidth=1)
    ax.set_xlabel('cosine distance to the matched target image')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse(argv):
    p = argparse.ArgumentParser(description='Select pool images that resemble a target set.')
    p.add_argument('--target_csv', required=True)
    p.add_argument('--near_csv', required=True, help='the pool (train DB) features')
    p.add_argument('--save_dir', required=True)
    p.add_argument('--target_db', default=None, help='root of the target paths when they are relative')
    p.add_argument('--near_db', default=None, help='root of the pool paths when they are relative')
    p.add_argument('--nn_factor', type=int, default=5, help='pool neighbours per target image (K)')
    p.add_argument('--dist_thr', type=float, default=0.5, help='keep cosine distances below this, in [0, 2]')
    p.add_argument('--ivf', type=int, default=0, help='approximate search with an IVF index of this many cells')
    group = p.add_mutually_exclusive_group()
    group.add_argument('--copy', action='store_true', help='copy the selected images into save_dir/images/<class>/')
    group.add_argument('--link', action='store_true', help='symlink them instead of copying')
    return p.parse_args(argv)


def run(args):
    if not 0 <= args.dist_thr <= 2:
        raise UserError(f'--dist_thr {args.dist_thr} is outside [0, 2] (cosine distance = 1 - cosine similarity)')
    if os.path.exists(args.save_dir):
        raise UserError(f'{args.save_dir} already exists; choose a new --save_dir (nothing is overwritten)')
    t_paths, _, target = read_features(args.target_csv, args.target_db, 'target features')
    p_paths, p_labels, pool = read_features(args.near_csv, args.near_db, 'pool features')
    if target.shape[1] != pool.shape[1]:
        raise UserError(f'target features have {target.shape[1]} dimensions, pool features {pool.shape[1]}: '
                        'extract both with the same pretext model and config')
    if not 1 <= args.nn_factor <= len(pool):
        raise UserError(f'--nn_factor {args.nn_factor} must be between 1 and the pool size {len(pool)}')
    rows = select(target, pool, args.nn_factor, args.dist_thr, args.ivf or None)
    parent = os.path.dirname(os.path.abspath(args.save_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix='.nn_maker-')
    try:
        with open(os.path.join(tmp, 'selected.csv'), 'w', newline='') as f:
            f.write(csv_text([['path', 'target_path', 'distance', 'label']]
                              + [[p_paths[p], t_paths[t], f'{d:.6f}', p_labels[p]] for p, t, d in rows]))
        kept = np.array([d for _, _, d in rows])
        counts = {}
        for p, _, _ in rows:
            counts[p_labels[p] or 'unlabelled'] = counts.get(p_labels[p] or 'unlabelled', 0) + 1
        summary = {'targets': len(target), 'pool': len(pool), 'nn_factor': args.nn_factor, 'dist_thr': args.dist_thr,
                   'selected': len(rows), 'per_class': dict(sorted(counts.items(), key=lambda kv: -kv[1])),
                   'distance_quantiles': {q: float(np.quantile(kept, q / 100)) for q in (5, 50, 95)} if len(rows) else {}}
        with open(os.path.join(tmp, 'summary.json'), 'w') as f:
            json.dump(summary, f, indent=2)
        all_d = 1.0 - search(pool, target, args.nn_factor, nlist=args.ivf or None)[0].ravel()
        histogram(all_d, kept, args.dist_thr, os.path.join(tmp, 'distances.png'))
        if args.copy or args.link:
            for p, _, _ in rows:
                folder = os.path.join(tmp, 'images', p_labels[p] or 'selected')
                os.makedirs(folder, exist_ok=True)
                dest = os.path.join(folder, f'{p:07d}_{os.path.basename(p_paths[p])}')
                if args.link:
                    os.symlink(os.path.abspath(p_paths[p]), dest)
                else:
                    shutil.copy2(p_paths[p], dest)
        os.rename(tmp, args.save_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"selected {len(rows)} pool images for {len(target)} targets -> {args.save_dir}; "
          f"per class: {summary['per_class']}")
    return summary


def main(argv=None):
    args = parse(argv)
    return run_cli(lambda: run(args))


if __name__ == '__main__':
    main()
