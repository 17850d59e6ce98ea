"""Fault injection: kill -9 a digits pretext and clustering run at random points and inside saves, resume it, and
check that its final files equal an uninterrupted run's, bit for bit.

    python benchmarks/fault_injection.py --kills 4 --save-kills 2 [--seed 0]

Each stage first runs uninterrupted (the reference, timed). The faulty copy is then started and killed with
SIGKILL: --kills times at a random moment (0.15-0.4 of the reference's duration after each restart), and --save-kills times at the moment a
save's temporary file appears in the run folder (inside atomic_save, before the rename; a restarted run removes the
temporary files a kill left); every restart passes --resume once a checkpoint exists. Then it runs to the end, and model.pth.tar (every tensor), the
neighbour files and the selected head must equal the reference's. Writes <out>/fault_injection.json.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from utils.checkpoint import load_file  # noqa: E402

STAGES = {
    'pretext': ('simclr.py', 'configs/pretext/simclr_digits.yml',
                ['epochs=8', 'train_subset=600', 'val_subset=600', 'batch_size=128', 'knn_every=0']),
    'scan': ('scan.py', 'configs/scan/scan_digits.yml',
             ['epochs=6', 'train_subset=600', 'val_subset=600', 'batch_size=128']),
}


def command(stage, root, resume):
    script, config, extra = STAGES[stage]
    return [sys.executable, os.path.join(ROOT, script), '--config_exp', os.path.join(ROOT, config),
            f'root_dir={root}', *extra, *(['--resume'] if resume else [])]


def run_folder(root, stage):
    return os.path.join(root, 'digits', stage)


def start(stage, root):
    resume = os.path.isfile(os.path.join(run_folder(root, stage), 'checkpoint.pth.tar'))
    return subprocess.Popen(command(stage, root, resume), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def kill_after(process, seconds):
    """SIGKILL after `seconds` unless it ended; returns True when it was killed."""
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def kill_in_save(process, folder, limit):
    """SIGKILL the moment a temporary save file ('.<name>.<random>.tmp') shows in `folder`."""
    end = time.time() + limit
    while time.time() < end and process.poll() is None:
        if os.path.isdir(folder) and any(f.startswith('.') and f.endswith('.tmp') for f in os.listdir(folder)):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.0005)
    return False


def finish(stage, root):
    process = start(stage, root)
    _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f'{stage} in {root} failed after the kills (exit {process.returncode}): {err.strip()}')


def same_files(stage, reference, faulty):
    """Every tensor of model.pth.tar equal, and the neighbour files (pretext) equal."""
    a = load_file(os.path.join(run_folder(reference, stage), 'model.pth.tar'))
    b = load_file(os.path.join(run_folder(faulty, stage), 'model.pth.tar'))
    a, b = (x['model'] if 'model' in x else x for x in (a, b))
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    if set(a) != set(b):
        differ.append('(keys)')
    if stage == 'pretext':
        for name in ('topk-train-neighbors.npy', 'topk-val-neighbors.npy'):
            if not np.array_equal(np.load(os.path.join(run_folder(reference, stage), name)),
                                  np.load(os.path.join(run_folder(faulty, stage), name))):
                differ.append(name)
    return differ


def run_stage(stage, out, kills, save_kills, rng):
    reference, faulty = os.path.join(out, 'reference'), os.path.join(out, 'faulty')
    t0 = time.time()
    finish(stage, reference)
    duration = time.time() - t0
    killed = {'random': 0, 'in_save': 0}
    for _ in range(kills):
        if kill_after(start(stage, faulty), rng.uniform(0.15, 0.4) * duration):  # each restart gets further
            killed['random'] += 1
    for _ in range(save_kills):
        if kill_in_save(start(stage, faulty), run_folder(faulty, stage), duration * 2):
            killed['in_save'] += 1
    finish(stage, faulty)
    differ = same_files(stage, reference, faulty)
    return {'stage': stage, 'reference_seconds': round(duration, 1), 'kills': killed, 'identical': not differ,
            'differ': differ[:5]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--kills', type=int, default=4)
    parser.add_argument('--save-kills', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=os.path.join(ROOT, 'results', 'benchmarks', 'fault-injection'))
    args = parser.parse_args(argv)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    rng = random.Random(args.seed)
    rows = [run_stage(stage, args.out, args.kills, args.save_kills, rng) for stage in STAGES]
    with open(os.path.join(args.out, 'fault_injection.json'), 'w') as f:
        json.dump(rows, f, indent=2)
    for row in rows:
        print(f"{row['stage']}: killed {row['kills']['random']} times at random, {row['kills']['in_save']} times "
              f"inside a save; resumed to the end: {'identical' if row['identical'] else 'DIFFERENT'} "
              f"to the uninterrupted run {row['differ'] or ''}")
    return 0 if all(r['identical'] for r in rows) else 1


if __name__ == '__main__':
    raise SystemExit(main())
