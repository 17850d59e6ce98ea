"""The README's worked example of feature_extract.py + nn_maker.py on real images.

    python benchmarks/nn_maker_example.py --data_root DIR_WITH_cifar10-jpg [--classes automobile horse]

Pool = the CIFAR-10 (JPEG) train split, target = the test images of two classes, features from the
pretext model of configs/pretext/simclr_cifar10_jpg.yml (train it first). Reports which share of the
selected pool images belongs to the two classes (a random pick gives 20 %) and writes
benchmarks/results/nn_maker_cifar10_jpg.{json,md} and the README block.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import feature_extract  # noqa: E402
import nn_maker  # noqa: E402
from accuracy import machine, update_readme  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402
from utils.feature_files import read_features, write_features  # noqa: E402

CONFIG = os.path.join(ROOT, 'configs', 'pretext', 'simclr_cifar10_jpg.yml')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data_root', required=True)
    p.add_argument('--pretext_model', default=os.path.join(ROOT, 'results', 'cifar10-jpg', 'pretext', 'model.pth.tar'))
    p.add_argument('--classes', nargs=2, default=['automobile', 'horse'])
    p.add_argument('--nn_factor', type=int, default=5)
    p.add_argument('--dist_thr', type=float, default=0.3)
    p.add_argument('--work', default=os.path.join(ROOT, 'results', 'nn_maker_example'))
    args = p.parse_args(argv)
    t0 = time.time()
    base = ['--config_env', os.path.join(ROOT, 'configs', 'env.yml'), '--config_exp', CONFIG,
            '--pretext_model', args.pretext_model, f'data_root={args.data_root}']
    images = os.path.join(args.data_root, 'cifar10-jpg')
    for split in ('train', 'test'):
        if not os.path.isfile(os.path.join(args.work, f'{split}.csv')):
            feature_extract.main(base + ['--db', os.path.join(images, split),
                                         '--save_feature_name', os.path.join(args.work, split)])
    paths, labels, feats = read_features(os.path.join(args.work, 'test.csv'), os.path.join(images, 'test'))
    keep = [i for i, label in enumerate(labels) if label in args.classes]
    target = os.path.join(args.work, 'target')
    write_features(target, feats[keep], [paths[i] for i in keep], [labels[i] for i in keep])
    save_dir = os.path.join(args.work, f'selected_k{args.nn_factor}_t{args.dist_thr}')
    if os.path.isdir(save_dir):
        summary = json.load(open(os.path.join(save_dir, 'summary.json')))
    else:
        summary = nn_maker.main(['--target_csv', target + '.csv', '--near_csv', os.path.join(args.work, 'train.csv'),
                                 '--near_db', os.path.join(images, 'train'), '--save_dir', save_dir,
                                 '--nn_factor', str(args.nn_factor), '--dist_thr', str(args.dist_thr)])
    in_classes = sum(summary['per_class'].get(c, 0) for c in args.classes)
    share = in_classes / max(summary['selected'], 1)
    result = {'classes': args.classes, 'targets': summary['targets'], 'pool': summary['pool'],
              'nn_factor': args.nn_factor, 'dist_thr': args.dist_thr, 'selected': summary['selected'],
              'share_in_target_classes': share, 'per_class': summary['per_class'],
              'seconds': round(time.time() - t0, 1), 'machine': machine()}
    text = (f"Pool: the {summary['pool']:,} CIFAR-10 (JPEG) train images; target: the {summary['targets']:,} test "
            f"images of {args.classes[0]} and {args.classes[1]}; features of the CPU-scale SimCLR model "
            f"(`simclr_cifar10_jpg.yml`); `--nn_factor {args.nn_factor} --dist_thr {args.dist_thr}`. "
            f"nn_maker selected {summary['selected']:,} pool images, **{share:.1%}** of them from the two target "
            f"classes (a random pick: 20 %). Per class: "
            + ', '.join(f'{k} {v}' for k, v in summary['per_class'].items()) + f'. {machine()}.')
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    atomic_write_text(os.path.join(HERE, 'results', 'nn_maker_cifar10_jpg.json'), json.dumps(result, indent=2) + '\n')
    atomic_write_text(os.path.join(HERE, 'results', 'nn_maker_cifar10_jpg.md'), text + '\n')
    update_readme('nn-maker', text)
    print(text)
    return result


if __name__ == '__main__':
    main()
