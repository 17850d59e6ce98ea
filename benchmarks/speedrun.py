"""SCAN's CIFAR-10 protocol from scratch as one timed command on one CUDA GPU: SimCLR, neighbour mining, SCAN (and
NNM on the same pretext with --nnm), self-labelling, evaluation on the test split.

    python benchmarks/speedrun.py CIFAR10_JPG_TAR OUT            # one CUDA GPU
    python benchmarks/speedrun.py CIFAR10_JPG_TAR OUT --tiny     # the same on the CPU: a few hundred images, one
                                                                 # epoch a stage (a check, not a result)
    python benchmarks/speedrun.py CIFAR10_JPG_TAR OUT --heldout  # train on 45,000 train images, report on the
                                                                 # other 5,000: for choosing a recipe, never the test
    python benchmarks/speedrun.py --render OUT/speedrun.json     # the tables and README block of a finished run

CIFAR10_JPG_TAR is an archive of cifar10-jpg/{train,test}/<class>/*.jpg. Its images are decoded once into
CIFAR-10's own array layout under OUT/data (uint8), which every stage holds on the GPU and augments there. Before
any training: the archive is read whole, a CUDA device must be there (unless --tiny), and every stage's training
step runs on random data at its batch, shape, precision and memory format: the model-only ceiling that the stage's
own steps are measured against, and the proof that the batch fits the GPU's memory. Every problem is one line.

OUT/speedrun.json is rewritten after every stage, so a run cut off by a time limit leaves every finished stage's
results and the timings so far; OUT/speedrun.md is the generated table, and README.md's `speedrun` block is
replaced with it (--readme PATH, or --readme '' for none).
"""
import argparse
import json
import os
import pickle
import signal
import sys
import tarfile
import time
import zlib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import scan  # noqa: E402
import selflabel  # noqa: E402
import simclr  # noqa: E402
from accuracy import machine, update_readme  # noqa: E402
from stages.run import prepare  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402
from utils.config import base_parser, parse_args  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.logger import RunLog  # noqa: E402

CONFIGS = {'pretext': 'configs/pretext/simclr_cifar10_speedrun.yml',
           'scan': 'configs/scan/scan_cifar10_speedrun.yml',
           'nnm': 'configs/scan/nnm_cifar10_speedrun.yml',
           'selflabel': 'configs/selflabel/selflabel_cifar10_speedrun.yml'}
STAGE_OF = {'pretext': 'pretext', 'scan': 'clustering', 'nnm': 'clustering', 'selflabel': 'selflabel'}
FOLDER_OF = {'pretext': 'pretext', 'scan': 'scan', 'nnm': 'scan_nnm', 'selflabel': 'selflabel'}
# --tiny: every stage one epoch of small batches on the CPU, float32, the same fast path otherwise
TINY = ['epochs=1', 'batch_size=16', 'amp=none', 'channels_last=false', 'compile=false', 'num_workers=0',
        'device=cpu', 'pretext.knn_every=1']
TINY_IMAGES = {'train': 10, 'test': 4}  # per class: SCAN's 20 neighbours need more than 20 train images
HELDOUT = 5000  # --heldout: train images held out (a fixed draw, seed 0), the split reported on
CEILING_STEPS = {'tiny': (1, 2), 'gpu': (10, 30)}  # model-only steps: warm-up, timed


def fail(message):
    print(f'error: {message}', file=sys.stderr)
    raise SystemExit(2)


# --- the data: the archive's JPEGs decoded once into CIFAR-10's python layout ---------------------------------------

def read_archive(path, tiny):
    """{split: (images uint8 [N, 32, 32, 3], labels [N])} and the class names, from the archive's
    cifar10-jpg/<split>/<class>/*.jpg (--tiny: the first TINY_IMAGES of each class). The archive is read whole
    here, so a damaged one fails before any training."""
    from PIL import Image
    if not os.path.isfile(path):
        raise UserError(f'data archive not found: {path}; give the path of cifar10-jpg.tar.gz')
    found = {}  # (split, class) -> [(name, bytes)]
    try:
        with tarfile.open(path, 'r:*') as tar:
            for member in tar:
                parts = member.name.split('/')
                if member.isfile() and len(parts) == 4 and parts[1] in ('train', 'test'):
                    found.setdefault((parts[1], parts[2]), []).append((parts[3], tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise UserError(f'cannot read the data archive {path} ({type(e).__name__}: {e}); copy it again') from None
    classes = sorted({c for _, c in found})
    if not classes or sorted({c for s, c in found if s == 'test'}) != classes:
        raise UserError(f'{path} does not hold cifar10-jpg/{{train,test}}/<class>/*.jpg with the same classes in '
                        'both splits')
    splits = {}
    for split in ('train', 'test'):
        images, labels = [], []
        for label, name in enumerate(classes):
            files = sorted(found[(split, name)])[:TINY_IMAGES[split] if tiny else None]
            for file, data in files:
                try:
                    with Image.open(__import__('io').BytesIO(data)) as img:
                        images.append(np.asarray(img.convert('RGB').resize((32, 32))))
                except OSError as e:
                    raise UserError(f'cannot decode {split}/{name}/{file} in {path}: {e}; copy the archive '
                                    'again') from None
            labels += [label] * len(files)
        splits[split] = np.stack(images), np.asarray(labels)
    return splits, classes


def write_cifar_layout(splits, classes, root, heldout):
    """CIFAR-10's python-pickle files under root/cifar-10-batches-py (data_batch_1..5, test_batch, batches.meta),
    so the stages read the published configs' `cifar-10` dataset. heldout: the test batch is HELDOUT train images
    (a fixed draw) and the train batches the rest."""
    (train_x, train_y), (test_x, test_y) = splits['train'], splits['test']
    if heldout:
        held = np.zeros(len(train_y), bool)
        held[np.random.default_rng(0).choice(len(train_y), min(HELDOUT, len(train_y) // 10), replace=False)] = True
        (train_x, train_y), (test_x, test_y) = (train_x[~held], train_y[~held]), (train_x[held], train_y[held])
    folder = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(folder, exist_ok=True)

    def dump(name, x, y):
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # CIFAR's rows: 1024 red, then green, then blue
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump({'data': rows, 'labels': y.tolist()}, f)

    for i, part in enumerate(np.array_split(np.arange(len(train_y)), 5)):
        dump(f'data_batch_{i + 1}', train_x[part], train_y[part])
    dump('test_batch', test_x, test_y)
    with open(os.path.join(folder, 'batches.meta'), 'wb') as f:
        pickle.dump({'label_names': classes}, f)
    return len(train_y), len(test_y)


# --- the model-only ceiling of each stage's step ----------------------------------------------------------------------

def stage_args(name, out, overrides):
    return ['--config_env', os.path.join(ROOT, 'configs', 'env.yml'), '--config_exp', os.path.join(ROOT, CONFIGS[name]),
            f'root_dir={os.path.join(out, "runs")}', f'data_root={os.path.join(out, "data")}', 'download=false',
            *([f'scan_folder={FOLDER_OF[name]}'] if name == 'nnm' else []), *overrides]


def stage_config(name, out, overrides):
    """The resolved config of a stage (its device too), as the stage itself resolves it."""
    args = parse_args(base_parser(name), stage_args(name, out, overrides))
    cfg, _, device = prepare(args, STAGE_OF[name])
    return cfg, device


def images_per_step(name, cfg):
    """Images through the network in one training step: two views (pretext), anchors and neighbours (SCAN), plus
    NNM's second views, the strong views of self-labelling."""
    return cfg.batch_size * {'pretext': 2, 'scan': 2, 'nnm': 3, 'selflabel': 1}[name]


def model_only_step(name, cfg, device):
    """The stage's network, optimiser, precision and memory format on random data: () -> one training step (with
    the weak views' forward pass where the self-labelling method reads them). The loss is a stand-in: its cost is
    nothing beside the ResNet's."""
    from methods import get_method
    from models import get_clustering_model, get_contrastive_model
    from stages.run import training_model
    from utils.optim import autocast, get_optimizer, optimizer_step
    if name == 'pretext':
        model = get_contrastive_model(cfg).to(device)
        forward = lambda net, x: net(x).float().square().mean()  # noqa: E731
    else:
        model = get_clustering_model(cfg).to(device)
        forward = lambda net, x: sum(o.float().logsumexp(1).mean() for o in net(x))  # noqa: E731
    net = training_model(model, cfg, device)
    optimizer = get_optimizer(cfg, model.parameters())
    weak = name == 'selflabel' and get_method('selflabel', cfg.setup).needs_weak
    size = cfg.transformation_kwargs['crop_size']
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x = torch.randn(images_per_step(name, cfg), 3, size, size, device=device).to(memory_format=memory)

    def step():
        with autocast(cfg, device):
            if weak:  # the weak views' predictions, without gradients
                with torch.no_grad():
                    net(x)
            loss = forward(net, x)
        optimizer_step(optimizer, loss)
    return step


def time_steps(step, warmup, steps, device):
    """Seconds per step (after `warmup` steps), the device's queue drained before and after."""
    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps


def ceiling(name, out, overrides, mode):
    """{'ceiling_step_seconds', 'batch', 'images_per_step'} of a stage; a batch that does not fit the GPU's
    memory is a UserError."""
    cfg, device = stage_config(name, out, overrides)
    try:
        seconds = time_steps(model_only_step(name, cfg, device), *CEILING_STEPS[mode], device)
    except torch.cuda.OutOfMemoryError:
        memory = (f' ({torch.cuda.get_device_properties(device).total_memory / 2 ** 30:.0f} GiB)'
                  if device.type == 'cuda' else '')
        raise UserError(f'{name}: a batch of {cfg.batch_size} ({images_per_step(name, cfg)} images a step) does not '
                        f'fit the GPU{memory}; give a smaller batch_size in {CONFIGS[name]}') from None
    finally:
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return {'ceiling_step_seconds': seconds, 'batch': cfg.batch_size, 'images_per_step': images_per_step(name, cfg)}


# --- the stages -------------------------------------------------------------------------------------------------------

MAINS = {'pretext': simclr.main, 'scan': scan.main, 'nnm': scan.main, 'selflabel': selflabel.main}


def stage_speed(records, per_step, ceiling_seconds):
    """The stage's training step against its ceiling: the median over its epochs (the first left out when there
    are more: it holds cuDNN's autotuning and any compilation) of the seconds per optimiser step."""
    epochs = [r for r in records if r.get('steps')]
    if not epochs:
        return {}
    timed = epochs[1:] or epochs
    step = float(np.median([r['train_seconds'] / r['steps'] for r in timed]))
    return {'step_seconds': step, 'images_per_second': per_step / step,
            'ceiling_images_per_second': per_step / ceiling_seconds, 'of_ceiling': ceiling_seconds / step,
            'train_seconds': round(sum(r['train_seconds'] for r in epochs), 2)}


def knn_curve(records):
    """[(seconds since the stage's start, epoch, weighted kNN accuracy)] of the pretext epochs that measured it."""
    curve, wall = [], 0.0
    for r in records:
        wall += r.get('seconds', 0.0)
        if r.get('knn_acc') is not None:
            curve.append([round(wall, 2), r['epoch'], r['knn_acc']])
    return curve


def run_stage(name, out, overrides, result):
    """One stage by its script's main(); its metrics, speed against its ceiling and (pretext) kNN curve into
    result['stages'][name]. A stage stopped before its end (a time limit's SIGTERM, Ctrl-C, an error) leaves what
    its finished epochs measured, marked 'stopped', and the exception goes on."""
    t0 = time.time()
    entry = result['stages'][name]
    try:
        metrics = MAINS[name](stage_args(name, out, overrides))
        entry['metrics'] = {k: v for k, v in metrics.items()
                            if k in ('acc', 'nmi', 'ari', 'neighbor_acc', 'knn_acc')}
    except BaseException:
        entry['stopped'] = True
        raise
    finally:
        entry['seconds'] = round(time.time() - t0, 2)
        records = RunLog(os.path.join(out, 'runs', 'cifar-10', FOLDER_OF[name])).records()
        entry.update(stage_speed(records, entry['images_per_step'], entry['ceiling_step_seconds']))
        if name == 'pretext':
            entry['knn_curve'] = knn_curve(records)


def write_results(out, result, t0):
    """OUT/speedrun.json with the wall time since t0 (the command's start)."""
    result['total_seconds'] = round(time.time() - t0, 2)
    atomic_write_text(os.path.join(out, 'speedrun.json'), json.dumps(result, indent=2))


def run(args):
    out = os.path.abspath(args.out)
    mode = 'tiny' if args.tiny else 'gpu'
    if mode == 'gpu' and not torch.cuda.is_available():
        raise UserError('no CUDA device: the speedrun needs one GPU (give --tiny for the small CPU check)')
    if os.path.exists(os.path.join(out, 'runs')):
        raise UserError(f'{out} holds a speedrun already (runs/); give an empty or new OUT folder')
    t0 = time.time()
    result = {'mode': mode + ('-heldout' if args.heldout else ''), 'device': device_name(mode), 'machine': machine(),
              'configs': CONFIGS, 'overrides': args.overrides, 'stages': {}, 'finished': False}
    splits, classes = read_archive(args.archive, args.tiny)
    sizes = write_cifar_layout(splits, classes, os.path.join(out, 'data'), args.heldout)
    result['data'] = {'train': sizes[0], 'reported_on': sizes[1],
                      'split_reported': 'held-out train' if args.heldout else 'test',
                      'decode_seconds': round(time.time() - t0, 2)}
    overrides = (TINY if args.tiny else []) + args.overrides
    names = ['pretext', 'scan'] + (['nnm'] if args.nnm else []) + ['selflabel']
    for name in names:  # every batch is tried before any stage trains
        result['stages'][name] = ceiling(name, out, overrides, mode)
    write_results(out, result, t0)
    for name in names:
        try:
            run_stage(name, out, overrides, result)
        finally:
            write_results(out, result, t0)
    result['finished'] = True
    write_results(out, result, t0)
    return result


def device_name(mode):
    if mode == 'tiny' or not torch.cuda.is_available():
        return 'CPU'
    return torch.cuda.get_device_name(0)


# --- the generated tables ---------------------------------------------------------------------------------------------

LABELS = {'pretext': 'SimCLR pretext (weighted kNN)', 'scan': 'SCAN', 'nnm': 'NNM', 'selflabel': 'SCAN + self-label'}


def markdown(result):
    data = result.get('data', {})
    state = 'finished' if result.get('finished') else 'cut off before its end'
    lines = [f"Speedrun ({result['mode']}) on {result['device']}: {state} in {result.get('total_seconds', 0):.0f} s "
             f"of wall time, data decoding and evaluation included; trained on {data.get('train')} images, reported "
             f"on {data.get('reported_on')} {data.get('split_reported')} images. {result['machine']}.", '',
             '| stage | ACC | NMI | ARI | seconds | images/s | model-only images/s | of ceiling |',
             '|---|---|---|---|---|---|---|---|']
    for name, s in result['stages'].items():
        m = s.get('metrics', {})
        acc = m.get('acc', m.get('knn_acc'))
        cells = [f'{acc:.3f}' if acc is not None else 'n/a'] + [
            f'{m[k]:.3f}' if m.get(k) is not None else 'n/a' for k in ('nmi', 'ari')]
        cells += [f"{s['seconds']:.0f}" if 'seconds' in s else 'not run',
                  f"{s['images_per_second']:,.0f}" if 'images_per_second' in s else 'n/a',
                  f"{s['images_per_step'] / s['ceiling_step_seconds']:,.0f}",
                  f"{s['of_ceiling']:.0%}" if 'of_ceiling' in s else 'n/a']
        label = LABELS[name] + (' (stopped)' if s.get('stopped') else '')
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    curve = result['stages'].get('pretext', {}).get('knn_curve')
    if curve:
        lines += ['', 'Pretext weighted kNN accuracy against the stage\'s wall time: '
                  + ', '.join(f'{acc:.3f} at {sec:.0f} s (epoch {epoch})' for sec, epoch, acc in curve) + '.']
    return '\n'.join(lines)


NOT_RUN = ('No GPU run of the speedrun has been rendered here yet (`python benchmarks/speedrun.py --render '
           'OUT/speedrun.json`).')  # the results page's block until one is


def render(path, readme, results):
    """The tables of a run's speedrun.json into its speedrun.md; unless readme is '' (a tiny run, a check), also
    results/speedrun.{json,md} (benchmarks/results: the README's headline reads them) and the page's speedrun block."""
    with open(path) as f:
        result = json.load(f)
    text = markdown(result)
    atomic_write_text(os.path.splitext(path)[0] + '.md', text + '\n')
    if readme != '':
        os.makedirs(results, exist_ok=True)
        if os.path.abspath(path) != os.path.abspath(os.path.join(results, 'speedrun.json')):
            atomic_write_text(os.path.join(results, 'speedrun.json'), json.dumps(result, indent=2))
        atomic_write_text(os.path.join(results, 'speedrun.md'), text + '\n')
        update_readme('speedrun', text, readme)
    print(text)
    return text


def stop(signum, frame):
    raise KeyboardInterrupt(f'signal {signum}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('archive', nargs='?', help='cifar10-jpg.tar.gz')
    parser.add_argument('out', nargs='?', help='output folder (empty or new)')
    parser.add_argument('--tiny', action='store_true', help='on the CPU, a few hundred images, one epoch a stage')
    parser.add_argument('--heldout', action='store_true',
                        help=f'report on {HELDOUT} held-out train images instead of the test split')
    parser.add_argument('--nnm', action='store_true', help='NNM on the same pretext model too')
    parser.add_argument('--render', metavar='JSON', help="only write the tables of a run's speedrun.json")
    parser.add_argument('--results', default=os.path.join(HERE, 'results'), help='where the rendered run is kept')
    parser.add_argument('--readme', default=None,
                        help="the page whose speedrun block is replaced (default: found; '' for none)")
    parser.add_argument('overrides', nargs='*', default=[], help='key=value for every stage')
    args = parser.parse_intermixed_args(argv)
    signal.signal(signal.SIGTERM, stop)  # timeout's signal: the finished stages' results are written first
    try:
        if args.render:
            return render(args.render, args.readme, args.results)
        if not args.archive or not args.out:
            parser.error('give CIFAR10_JPG_TAR and OUT (or --render JSON)')
        run(args)
    except UserError as e:
        fail(str(e))
    return render(os.path.join(os.path.abspath(args.out), 'speedrun.json'), '' if args.tiny else args.readme,
                  args.results)


if __name__ == '__main__':
    main()
