"""Speed benchmark: the reference path and the fast path side by side in one run, plus neighbour search.

    python benchmarks/throughput.py                      # this machine; writes benchmarks/RESULTS.md
    python benchmarks/throughput.py --sizes 50000 200000 1000000 --cpu_exact_max 200000   # a GPU

Training stages (SimCLR, SCAN) at 32x32 on random uint8 images with the CIFAR-10 (JPEG) CPU-scale configs
(small CNN): images per second of the training loop of simclr.py / scan.py with
  reference  torchvision/PIL augmentation in DataLoader workers (augment_on_device: false),
  fast       batched augmentation on the training device (augment_on_device: true), in fp32 and with the
             --fast variants of the speed switches (channels_last, amp),
  model only the same training step, same switches, on one pre-augmented batch kept on the device (the ceiling).
Neighbour search: top-20 of N random L2-normalised 128-d vectors among themselves: SCAN's reference (faiss
IndexFlatIP on the CPU), our mining (`neighbors.search.mine_neighbors`, backend auto), the torch backend and
the approximate IVF index with its recall.
"""
import argparse
import itertools
import os
import platform
import re
import sys
import tempfile
import time

import numpy as np
import torch
from easydict import EasyDict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import simclr  # noqa: E402
from data.base import ArrayDataset  # noqa: E402
from data.loaders import neighbor_batches, view_batches  # noqa: E402
from methods import get_method  # noqa: E402
from models import get_clustering_model, get_contrastive_model  # noqa: E402
from neighbors import search as neighbors  # noqa: E402
from stages.epochs import train_epoch  # noqa: E402
from stages.run import training_model  # noqa: E402
from stages.schema import ENV, SCHEMAS  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402
from utils.common import get_device  # noqa: E402
from utils.config import base_parser, load_config, parse_args  # noqa: E402
from utils.optim import get_optimizer, grad_scaler  # noqa: E402


class Steps:
    """The first `steps` batches of `batches` (the stages' train_epoch takes len() and iterates)."""

    def __init__(self, batches, steps):
        self.batches, self.steps = batches, steps

    def __len__(self):
        return self.steps

    def __iter__(self):
        return itertools.islice(iter(self.batches), self.steps)


def config(path, stage, overrides):
    """The resolved config of a stage and its method (the stage scripts' prepare() without the device and seed)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = os.path.join(tmp, 'env.yml')
        with open(env, 'w') as f:
            f.write(f'root_dir: {tmp}\ndata_root: {tmp}\n')
        args = parse_args(base_parser('t'), ['--config_env', env, '--config_exp', os.path.join(ROOT, path),
                                             *overrides])
        cfg = load_config(args, ENV, SCHEMAS[stage], stage)
    method = get_method(stage, cfg.setup)
    cfg.criterion_kwargs = method.resolve_kwargs(cfg.setup, cfg.criterion_kwargs)
    return cfg, method


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
    return {'images_per_s': steps * batch / seconds, 'peak_mib': peak}


def stage_runner(args, device, stage, overrides, model_only):
    """run(steps): `steps` training steps of `stage` ('simclr' or 'scan') with the config `overrides`;
    model_only repeats one pre-augmented batch on the device."""
    knn = torch.randint(args.images, (args.images, 20), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    if stage == 'simclr':
        cfg, method = config('configs/pretext/simclr_cifar10_jpg.yml', 'pretext',
                             [*overrides, f'batch_size={args.batch}'])
        model = get_contrastive_model(cfg).to(device)
        method = method(cfg, None, device)
        batches = view_batches(dataset(args.images), cfg, device, 2)
    else:
        cfg, method = config('configs/scan/scan_cifar10_jpg.yml', 'clustering',
                             [*overrides, f'batch_size={args.batch}'])
        method = method(cfg)
        model = get_clustering_model(cfg).to(device)
        batches = neighbor_batches(dataset(args.images), knn, method.batch_views(), cfg, device)
    if model_only:
        batches = itertools.repeat(next(iter(batches)))
    net = training_model(model, cfg, device)
    optimizer = get_optimizer(cfg, model.parameters())
    scaler = grad_scaler(cfg, device)

    if stage == 'simclr':
        step = simclr.training_step(net, method, device)
    else:
        step = lambda batch: method.training_step(net, model, batch, device)  # noqa: E731

    def run(steps):
        train_epoch(net, Steps(batches, steps), step, optimizer, cfg, 0, scaler)
    return run


def paths(args):
    """(name, config overrides, model only): the reference path, then each fast variant and its ceiling."""
    plain = ['amp=none', 'channels_last=false', 'compile=false']  # whatever the config says: the switches off
    out = [(f'reference ({w} workers)', [*plain, 'augment_on_device=false', f'num_workers={w}'], False)
           for w in args.workers]
    for variant in args.fast:
        settings = [s for s in variant.split(',') if s]
        label = ', '.join(settings) or 'fp32'
        fast = [*plain, 'augment_on_device=true', 'num_workers=0', *settings]
        out += [(f'fast ({label})', fast, False), (f'model only ({label})', fast, True)]
    return out


def stage_rows(args, device, stage):
    """Median images/s over args.repeats rounds; every round times every path once, one after the other,
    so slow phases of a noisy machine hit all paths alike."""
    runners = [(name, stage_runner(args, device, stage, overrides, model_only))
               for name, overrides, model_only in paths(args)]
    runs = {name: [] for name, _ in runners}
    for _ in range(args.repeats):
        for name, run in runners:
            runs[name].append(timed(device, run, args.steps, args.batch))
            print(stage, name, f"{runs[name][-1]['images_per_s']:.1f} images/s", flush=True)
    peak = lambda rs: None if rs[0]['peak_mib'] is None else max(r['peak_mib'] for r in rs)  # noqa: E731
    return [{'stage': stage, 'path': name, 'images_per_s': round(median([r['images_per_s'] for r in rs]), 1),
             'runs': [round(r['images_per_s']) for r in rs], 'peak_mib': peak(rs)} for name, rs in runs.items()]


def median(values):
    return float(np.median(values))


def search_rows(args, device):
    """Exact search, the reference and ours interleaved args.search_repeats times (median seconds); the torch
    backend and the IVF index once, with their recall of the exact top-20."""
    rows = []
    for n in args.sizes:
        x = torch.nn.functional.normalize(torch.randn(n, 128, generator=torch.Generator().manual_seed(n)), dim=1)
        x = x.numpy()
        exact = [('reference: faiss IndexFlatIP, CPU', lambda: neighbors._search_faiss(x, x, 21)[1]),
                 ('ours: mine_neighbors (auto)', lambda: neighbors.mine_neighbors(x, 20, device=device)[0])]
        if n > args.cpu_exact_max:  # the reference always searches on the CPU
            rows.append({'n': n, 'search': exact[0][0], 'seconds': None, 'runs': [], 'recall': None})
            exact = exact[1:]
        once = [('torch matmul + top-k', lambda: neighbors.search(x, x, 21, 'torch', device)[1]),
                (f'faiss IVF, nlist {int(4 * n ** 0.5)}',
                 lambda: neighbors.search(x, x, 21, 'faiss', nlist=int(4 * n ** 0.5))[1])]
        times, recall, truth = {name: [] for name, _ in exact + once}, {}, None
        for round_ in range(args.search_repeats):
            todo = exact[::-1] if round_ % 2 else exact  # alternate which exact search goes first
            for name, fn in todo + (once if round_ == 0 else []):
                t0 = time.perf_counter()
                idx = fn()
                times[name].append(time.perf_counter() - t0)
                print(n, name, f'{times[name][-1]:.2f} s', flush=True)
                truth = idx if truth is None else truth  # the first exact search of round 0
                if name not in recall:
                    recall[name] = float(np.mean([len(set(a) & set(b)) for a, b in zip(idx[:2000], truth[:2000])]) / 21)
        rows += [{'n': n, 'search': name, 'recall': round(recall[name], 4), 'seconds': round(median(times[name]), 4),
                  'runs': [round(t, 4) for t in times[name]]} for name, _ in exact + once]
    return rows


def machine(device):
    gpu = torch.cuda.get_device_name() if device.type == 'cuda' else 'none'
    return (f'{platform.machine()} CPU, {os.cpu_count()} cores, GPU: {gpu}, torch {torch.__version__}, '
            f'faiss {"yes" if neighbors.faiss is not None else "no"}')


def rows_from_log(path):
    """(training rows, search rows) from the lines a run printed: for a run cut short before it wrote its table (a lent
    GPU's time limit). Every run's images/s and seconds are there; peak memory and recall are not printed."""
    runs, times = {}, {}
    for line in open(path):
        step = re.fullmatch(r'(simclr|scan) (.+) ([\d.]+) images/s', line.strip())
        found = re.fullmatch(r'(\d+) (.+) ([\d.]+) s', line.strip())
        if step:
            runs.setdefault(step.group(1, 2), []).append(float(step.group(3)))
        elif found:
            times.setdefault((int(found.group(1)), found.group(2)), []).append(float(found.group(3)))
    rows = [{'stage': stage, 'path': name, 'images_per_s': round(median(v), 1), 'runs': [round(x) for x in v],
             'peak_mib': None} for (stage, name), v in runs.items()]
    search = [{'n': n, 'search': name, 'seconds': round(median(v), 4), 'runs': v, 'recall': None}
              for (n, name), v in times.items()]
    return rows, search


def markdown(rows, search, args, where, gpu):
    command = ' '.join(['python benchmarks/throughput.py', *sys.argv[1:]])
    lines = [f'Machine: {where}. Command: `{command}`.', '',
             f'Training loop, 32x32 images, small CNN, global batch {args.batch}, {args.steps} timed steps; median of '
             f'{args.repeats} rounds, each round timing every path once in turn (the runs column):', '',
             '| stage | path | images/s | x reference | runs | peak memory (MiB) |', '|---|---|---:|---:|---|---:|']
    for stage in ('simclr', 'scan'):
        mine = [r for r in rows if r['stage'] == stage]
        best_ref = max(r['images_per_s'] for r in mine if r['path'].startswith('reference'))
        for r in mine:
            lines.append(f"| {stage} | {r['path']} | {r['images_per_s']:.0f} | {r['images_per_s'] / best_ref:.2f} | "
                         f"{', '.join(map(str, r['runs']))} | "
                         f"{r['peak_mib'] if r['peak_mib'] is not None else 'not recorded' if gpu else 'n/a (CPU)'} |")
    lines += ['', '"x reference" divides by the best reference row (torchvision/PIL augmentation in DataLoader '
              'workers, fp32). "fast" augments on the device with the listed switches; "model only" repeats one '
              'pre-augmented batch on the device with the same switches: the ceiling its fast row approaches.', '',
              f'Neighbour search, top-20 of N random 128-d vectors among themselves; exact searches: median of '
              f'{args.search_repeats} interleaved runs:', '',
              '| N | search | seconds | x reference | runs | recall of exact top-20 |', '|---:|---|---:|---:|---|---:|']
    for n in args.sizes:
        mine = [r for r in search if r['n'] == n]
        ref = mine[0]['seconds']
        for r in mine:
            if r['seconds'] is None:
                lines.append(f"| {n:,} | {r['search']} | not run (exact CPU search above --cpu_exact_max) | | | |")
                continue
            speed = f"{ref / r['seconds']:.2f}" if ref and r['seconds'] else ''  # a tiny N can time as 0
            recall = 'not recorded' if r['recall'] is None else f"{r['recall']:.3f}"
            lines.append(f"| {n:,} | {r['search']} | {r['seconds']:.2f} | {speed} | {', '.join(map(str, r['runs']))} | "
                         f"{recall} |")
    lines += ['', '"x reference" for search is the reference\'s time divided by the row\'s (above 1: faster).']
    if not gpu:
        lines += ['', 'GPU rows: not measured (no CUDA GPU on this machine).']
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch', type=int, default=256)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--repeats', type=int, default=3, help='rounds over all training paths (median)')
    parser.add_argument('--images', type=int, default=4096)
    parser.add_argument('--workers', type=int, nargs='+', default=[1, 2], help='reference DataLoader workers')
    parser.add_argument('--fast', nargs='+', default=['', 'channels_last=true', 'amp=bf16,channels_last=true'],
                        help="fast-path variants: comma-separated config overrides ('' = fp32, switches off)")
    parser.add_argument('--sizes', type=int, nargs='*', default=[50000, 200000])
    parser.add_argument('--search_repeats', type=int, default=3, help='interleaved runs of each exact search')
    parser.add_argument('--cpu_exact_max', type=int, default=200000, help='largest N for exact search on the CPU')
    parser.add_argument('--out', default=os.path.join(HERE, 'RESULTS.md'))
    parser.add_argument('--from-log', help="rebuild the table from a run's printed lines (a run cut short); give the "
                                           "run's own --batch, --steps, --repeats, --sizes, --search_repeats")
    parser.add_argument('--machine', help='with --from-log: the machine the log was printed on')
    args = parser.parse_args(argv)
    if args.from_log:
        rows, search = rows_from_log(args.from_log)
        where = f'{args.machine} (table rebuilt from the printed runs: peak memory and recall not recorded)'
        text = markdown(rows, search, args, where, 'GPU: none' not in args.machine)
    else:
        device = get_device(EasyDict(device='auto'))  # the stages' device and its settings
        print('machine:', machine(device), flush=True)
        rows = stage_rows(args, device, 'simclr') + stage_rows(args, device, 'scan')
        text = markdown(rows, search_rows(args, device), args, machine(device), device.type == 'cuda')
    text = '# Throughput (generated by benchmarks/throughput.py)\n\n' + text
    atomic_write_text(args.out, text)
    print(text)


if __name__ == '__main__':
    main()
