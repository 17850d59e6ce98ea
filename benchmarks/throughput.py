"""Speed benchmark: the reference path and the fast path side by side in one run, plus neighbour search.

    python benchmarks/throughput.py                      # this machine; writes benchmarks/RESULTS.md
    python benchmarks/throughput.py --sizes 50000 200000 1000000 --amp bf16 --channels_last   # a GPU

Training stages (SimCLR, SCAN) at 32x32 on random uint8 images with the CIFAR-10 (JPEG) CPU-scale configs
(small CNN): images per second of the training loop of simclr.py / scan.py with
  reference  torchvision/PIL augmentation in DataLoader workers (augment_on_device: false),
  fast       batched augmentation on the training device (augment_on_device: true) [+ amp, channels_last],
  model only the same training step on one pre-augmented batch kept on the device (the ceiling).
Neighbour search: top-20 of N random L2-normalised 128-d vectors among themselves: SCAN's reference (faiss
IndexFlatIP on the CPU), our mining (`utils.neighbors.mine_neighbors`, backend auto), the torch backend and
the approximate IVF index with its recall.
"""
import argparse
import itertools
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import scan  # noqa: E402
import simclr  # noqa: E402
from data.base import ArrayDataset  # noqa: E402
from data.loaders import neighbor_batches, view_batches  # noqa: E402
from losses import get_criterion  # noqa: E402
from models import get_clustering_model, get_contrastive_model  # noqa: E402
from utils import neighbors  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402
from utils.config import base_parser, load_config, parse_args  # noqa: E402
from utils.optim import get_optimizer, grad_scaler  # noqa: E402
from utils.schema import CLUSTERING, ENV, PRETEXT  # noqa: E402
from utils.stage import training_model  # noqa: E402


class Steps:
    """The first `steps` batches of `batches` (a stage's train_one_epoch takes len() and iterates)."""

    def __init__(self, batches, steps):
        self.batches, self.steps = batches, steps

    def __len__(self):
        return self.steps

    def __iter__(self):
        return itertools.islice(iter(self.batches), self.steps)


def config(path, schema, overrides):
    with tempfile.TemporaryDirectory() as tmp:
        env = os.path.join(tmp, 'env.yml')
        with open(env, 'w') as f:
            f.write(f'root_dir: {tmp}\ndata_root: {tmp}\n')
        args = parse_args(base_parser('t'), ['--config_env', env, '--config_exp', os.path.join(ROOT, path),
                                             *overrides])
        return load_config(args, ENV, schema)


def dataset(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.zeros(n), ['x'])


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def timed(device, fn, steps, batch, warmup=2):
    """Images per second of fn(steps) after fn(warmup), and the GPU allocator's peak memory (None on the CPU)."""
    fn(warmup)
    sync(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn(steps)
    sync(device)
    seconds = time.perf_counter() - t0
    peak = round(torch.cuda.max_memory_allocated() / 2 ** 20) if device.type == 'cuda' else None
    return {'images_per_s': round(steps * batch / seconds, 1), 'peak_mib': peak}


def stage_rows(args, device, stage):
    """Images/s of `stage` ('simclr' or 'scan') on every path of `paths(args)`."""
    knn = torch.randint(args.images, (args.images, 20))
    rows = []
    for name, overrides in paths(args):
        torch.manual_seed(0)
        if stage == 'simclr':
            cfg = config('configs/pretext/simclr_cifar10_jpg.yml', PRETEXT, [*overrides, f'batch_size={args.batch}'])
            model = get_contrastive_model(cfg).to(device)
            make_batches = lambda c, n: view_batches(dataset(n), c, device, 2)  # noqa: E731
        else:
            cfg = config('configs/scan/scan_cifar10_jpg.yml', CLUSTERING, [*overrides, f'batch_size={args.batch}'])
            cfg.criterion = cfg.setup
            model = get_clustering_model(cfg).to(device)
            # the neighbour lists index all args.images images, so every path uses that many
            make_batches = lambda c, n: neighbor_batches(dataset(args.images), knn, c, device)  # noqa: E731
        net = training_model(model, cfg, device)
        criterion, optimizer = get_criterion(cfg), get_optimizer(cfg, model.parameters())
        scaler = grad_scaler(cfg, device)
        if name == 'model only':  # one pre-augmented batch, repeated
            batches = itertools.repeat(next(iter(make_batches(config_on_device(cfg), args.batch))))
        else:
            batches = make_batches(cfg, args.images)

        def run(steps):
            if stage == 'simclr':
                simclr.train_one_epoch(net, Steps(batches, steps), criterion, optimizer, cfg, 0, device, None, scaler)
            else:
                scan.train_one_epoch(net, model, Steps(batches, steps), criterion, optimizer, cfg, 0, device, None,
                                     scaler)
        rows.append({'stage': stage, 'path': name, **timed(device, run, args.steps, args.batch)})
        print(rows[-1], flush=True)
    return rows


def config_on_device(cfg):
    cfg = type(cfg)(cfg)
    cfg.augment_on_device = True
    return cfg


def paths(args):
    speed = [f'amp={args.amp}', f'channels_last={str(args.channels_last).lower()}', f'compile={str(args.compile).lower()}']
    out = [(f'reference ({w} workers)', ['augment_on_device=false', f'num_workers={w}']) for w in args.workers]
    out.append(('fast', ['augment_on_device=true', 'num_workers=0', *speed]))
    out.append(('model only', ['augment_on_device=true', 'num_workers=0', *speed]))
    return out


def search_rows(args, device):
    rows = []
    for n in args.sizes:
        x = torch.nn.functional.normalize(torch.randn(n, 128, generator=torch.Generator().manual_seed(n)), dim=1)
        x = x.numpy()
        exact = None
        for name, reference, fn in (
                ('reference: faiss IndexFlatIP, CPU', True, lambda: neighbors._search_faiss(x, x, 21)[1]),
                ('ours: mine_neighbors (auto)', False, lambda: neighbors.mine_neighbors(x, 20, device=device)[0]),
                ('torch matmul + top-k', False, lambda: neighbors.search(x, x, 21, 'torch', device)[1]),
                (f'faiss IVF, nlist {int(4 * n ** 0.5)}', False,
                 lambda: neighbors.search(x, x, 21, 'faiss', nlist=int(4 * n ** 0.5))[1])):
            if reference and n > args.cpu_exact_max:  # the reference always searches on the CPU
                rows.append({'n': n, 'search': name, 'seconds': None, 'recall': None})
                continue
            t0 = time.perf_counter()
            idx = fn()
            seconds = time.perf_counter() - t0
            if exact is None:
                exact = idx
            recall = float(np.mean([len(set(a) & set(b)) for a, b in zip(idx[:2000], exact[:2000])]) / 21)
            rows.append({'n': n, 'search': name, 'seconds': round(seconds, 2), 'recall': round(recall, 4)})
            print(rows[-1], flush=True)
    return rows


def machine(device):
    gpu = torch.cuda.get_device_name() if device.type == 'cuda' else 'none'
    return (f'{platform.machine()} CPU, {os.cpu_count()} cores, GPU: {gpu}, torch {torch.__version__}, '
            f'faiss {"yes" if neighbors.faiss is not None else "no"}')


def markdown(rows, search, args, device):
    command = ' '.join(['python benchmarks/throughput.py', *sys.argv[1:]])
    lines = [f'Machine: {machine(device)}. Command: `{command}`.', '',
             f'Training loop, 32x32 images, small CNN, global batch {args.batch}, {args.steps} timed steps:', '',
             '| stage | path | images/s | x reference | peak memory (MiB) |', '|---|---|---:|---:|---:|']
    for stage in ('simclr', 'scan'):
        mine = [r for r in rows if r['stage'] == stage]
        best_ref = max(r['images_per_s'] for r in mine if r['path'].startswith('reference'))
        for r in mine:
            lines.append(f"| {stage} | {r['path']} | {r['images_per_s']:.0f} | {r['images_per_s'] / best_ref:.2f} | "
                         f"{'n/a (CPU)' if r['peak_mib'] is None else r['peak_mib']} |")
    lines += ['', '"x reference" divides by the best reference row. "model only" repeats one pre-augmented batch '
              'on the device: the ceiling the fast path approaches.', '',
              'Neighbour search, top-20 of N random 128-d vectors among themselves:', '',
              '| N | search | seconds | recall of exact top-20 |', '|---:|---|---:|---:|']
    for r in search:
        secs = 'not run (exact CPU search above --cpu_exact_max)' if r['seconds'] is None else f"{r['seconds']:.2f}"
        recall = '' if r['recall'] is None else f"{r['recall']:.3f}"
        lines.append(f"| {r['n']:,} | {r['search']} | {secs} | {recall} |")
    if device.type != 'cuda':
        lines += ['', 'GPU rows: not measured (no CUDA GPU on this machine).']
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch', type=int, default=256)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--images', type=int, default=4096)
    parser.add_argument('--workers', type=int, nargs='+', default=[1, 2], help='reference DataLoader workers')
    parser.add_argument('--amp', default='none', choices=('none', 'bf16', 'fp16'))
    parser.add_argument('--channels_last', action='store_true')
    parser.add_argument('--compile', action='store_true')
    parser.add_argument('--sizes', type=int, nargs='*', default=[50000, 200000])
    parser.add_argument('--cpu_exact_max', type=int, default=200000, help='largest N for exact search on the CPU')
    parser.add_argument('--out', default=os.path.join(HERE, 'RESULTS.md'))
    args = parser.parse_args(argv)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    rows = stage_rows(args, device, 'simclr') + stage_rows(args, device, 'scan')
    search = search_rows(args, device)
    text = '# Throughput (generated by benchmarks/throughput.py)\n\n' + markdown(rows, search, args, device)
    atomic_write_text(args.out, text)
    print(text)


if __name__ == '__main__':
    main()
