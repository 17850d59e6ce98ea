"""The README's worked example of feature_extract.py + nn_maker.py on real images.

    python benchmarks/nn_maker_example.py --data_root DIR_WITH_cifar10-jpg [--classes automobile horse]

Pool = the CIFAR-10 (JPEG) train split, target = the test images of two classes, features from the
pretext model of configs/pretext/simclr_cifar10_jpg.yml (train it first). Reports which share of the
selected pool images belongs to the two classes (a random pick gives 20 %) and writes
benchmarks/results/nn_maker_cifar10_jpg.{json,md} and its block of docs/results.md.
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
    p.add_argument('--settings', nargs='+', default=['5:0.3', '5:0.2', '1:0.2'],
                   help='nn_factor:dist_thr pairs to run side by side')
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
    runs = []
    for setting in args.settings:
        k, thr = int(setting.split(':')[0]), float(setting.split(':')[1])
        save_dir = os.path.join(args.work, f'selected_k{k}_t{thr}')
        if os.path.isdir(save_dir):
            summary = json.load(open(os.path.join(save_dir, 'summary.json')))
        else:
            summary = nn_maker.main(['--target_csv', target + '.csv', '--near_csv', os.path.join(args.work, 'train.csv'),
                                     '--near_db', os.path.join(images, 'train'), '--save_dir', save_dir,
                                     '--nn_factor', str(k), '--dist_thr', str(thr)])
        in_classes = sum(summary['per_class'].get(c, 0) for c in args.classes)
        runs.append({'nn_factor': k, 'dist_thr': thr, 'selected': summary['selected'],
                     'share_in_target_classes': in_classes / max(summary['selected'], 1),
                     'per_class': summary['per_class']})
    result = {'classes': args.classes, 'targets': len(keep), 'pool': len(read_features(
        os.path.join(args.work, 'train.csv'), os.path.join(images, 'train'))[0]), 'runs': runs,
        'seconds': round(time.time() - t0, 1), 'machine': machine()}
    metrics = os.path.join(os.path.dirname(args.pretext_model), 'metrics.json')
    knn = json.load(open(metrics)).get('knn_acc') if os.path.isfile(metrics) else None
    quality = f', weighted kNN {knn:.2f} on test' if knn is not None else ''
    lines = [f"Pool: the {result['pool']:,} CIFAR-10 (JPEG) train images; target: the {len(keep):,} test images of "
             f"{args.classes[0]} and {args.classes[1]}; features of the CPU-scale SimCLR model "
             f"(`simclr_cifar10_jpg.yml`{quality}). A random pick has 20 % of the pool from the "
             f"two classes. {machine()}.", '',
             '| --nn_factor | --dist_thr | selected pool images | share from the two target classes |',
             '|---|---|---|---|']
    lines += [f"| {r['nn_factor']} | {r['dist_thr']} | {r['selected']:,} | {r['share_in_target_classes']:.1%} |"
              for r in runs]
    text = '\n'.join(lines)
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    atomic_write_text(os.path.join(HERE, 'results', 'nn_maker_cifar10_jpg.json'), json.dumps(result, indent=2) + '\n')
    atomic_write_text(os.path.join(HERE, 'results', 'nn_maker_cifar10_jpg.md'), text + '\n')
    update_readme('nn-maker', text)
    print(text)
    return result


if __name__ == '__main__':
    main()
