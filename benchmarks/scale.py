"""Scale benchmark: time and peak memory of each cached-feature step as the number of images grows.

    ./run.sh benchmarks/scale.py --n 10000 100000 1000000 --dim 1280

On synthetic vectors shaped like a frozen backbone's (a mixture of --groups groups in a LATENT-dimensional subspace,
plus noise, L2-normalised; stored as the feature cache is, a memory-mapped .npy), each step runs in a process of its
own, so that its peak resident memory is its own (the step's inputs included: what a stage would hold):
- mine: the pretext stage's neighbour mining (neighbors.search.mine_neighbors, with the stage's exact_search_max:
  exact search up to it, the approximate index above, its top-k overlap with exact search measured);
- mine_approximate: the approximate index at an n where the stage searches exactly (the two rows side by side are
  the measurement behind exact_search_max); above it the mine step's own figures;
- num_clusters: the K estimate (neighbors.num_clusters.estimate_num_clusters) on planted neighbour lists (each image's
  20 neighbours from its own group, 1 in 10 from anywhere): the graph's cost, not the mining's;
- clustering_epoch: one epoch of SCAN's heads on the cached features and those lists (the method's training_step);
- selflabel_epoch: one epoch of self-labelling on the cached features (selflabel.training_step);
- predict: every image's cluster and confidence from the cached features, written to a CSV chunk by chunk (eval.py
  --predict past the trunk).
Writes benchmarks/results/scale.json ({machine, dim, steps: {step: {n, seconds, peak_gb, ...}}}), scale.md, a log-log
plot scale.png and the README block between <!-- results:scale start/end -->.
"""
import argparse
import importlib
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

LATENT, NOISE, TOPK, K = 32, 0.3, 20, 10
STEPS = ('mine', 'mine_approximate', 'num_clusters', 'clustering_epoch', 'selflabel_epoch', 'predict')
CHUNK = 65536


def write_vectors(path, n, dim, groups, seed=0):
    """n synthetic unit vectors [n, dim] float32 from `groups` groups into a .npy, CHUNK rows at a time (never all in
    memory); returns the group of each [n]."""
    rng = np.random.default_rng(seed)
    latent = min(LATENT, dim)
    basis = np.linalg.qr(rng.standard_normal((dim, latent)))[0].T.astype(np.float32)  # [latent, dim], orthonormal
    centres = rng.standard_normal((groups, latent)).astype(np.float32)
    group = rng.integers(groups, size=n)
    out = np.lib.format.open_memmap(path, mode='w+', dtype=np.float32, shape=(n, dim))
    for start in range(0, n, CHUNK):
        g = group[start:start + CHUNK]
        z = centres[g] + 0.5 * rng.standard_normal((len(g), latent), dtype=np.float32)
        x = z @ basis + NOISE * rng.standard_normal((len(g), dim), dtype=np.float32) / np.sqrt(dim / latent)
        out[start:start + len(g)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    return group


def planted_lists(groups, seed=0):
    """[n, 1 + TOPK] neighbour lists (column 0: the image): other images of its own group, 1 in 10 from anywhere."""
    rng = np.random.default_rng(seed)
    n = len(groups)
    order = np.argsort(groups, kind='stable')
    starts = np.searchsorted(groups[order], np.arange(groups.max() + 1))
    sizes = np.bincount(groups)
    g = np.repeat(groups[:, None], TOPK, 1)
    own = order[starts[g] + (rng.random((n, TOPK)) * sizes[g]).astype(np.int64)]
    anywhere = rng.integers(n, size=(n, TOPK))
    lists = np.where(rng.random((n, TOPK)) < 0.1, anywhere, own)
    itself = lists == np.arange(n)[:, None]  # another image instead
    lists[itself] = (np.nonzero(itself)[0] + 1 + rng.integers(n - 1, size=int(itself.sum()))) % n
    return np.concatenate([np.arange(n)[:, None], lists], 1)


def stage_config(stage, path):
    """The stage's settings as a config file gives them (the schema's defaults under it), criterion_kwargs
    completed."""
    from easydict import EasyDict
    from methods import get_method
    from stages.schema import SCHEMAS
    from utils.config import resolve
    cfg = EasyDict(resolve(SCHEMAS[stage], [(os.path.join(ROOT, path), 'experiment')],
                           ['num_workers=0', 'num_heads=1', 'epochs=1'], stage=stage))
    cfg.num_classes = K
    cfg.criterion = cfg.setup
    method = get_method(stage, cfg.setup)
    cfg.criterion_kwargs = method.resolve_kwargs(cfg.setup, cfg.criterion_kwargs)
    return cfg, method


def heads_model(dim):
    import torch.nn as nn
    from models.models import ClusteringModel, HeadsOnFeatures
    model = ClusteringModel({'backbone': nn.Identity(), 'dim': dim}, K)
    return model, HeadsOnFeatures(model)


def one_epoch(stage, config, features, batches_of, step_of, folder):
    """One epoch of the stage's method (its config's settings) training fresh heads on `features`, as the stage's
    runner does it (the self-label methods first get the train split's predictions)."""
    import torch
    from data.loaders import eval_loader
    from evaluation.features import predict
    from stages.epochs import train_epoch
    from utils.optim import get_optimizer
    torch.manual_seed(0)
    cfg, method_class = stage_config(stage, config)
    model, heads = heads_model(features.shape[1])
    if stage == 'clustering':
        method = method_class(cfg)
    else:
        cfg.topk_neighbors_train_path = os.path.join(folder, 'neighbours.npy')
        train = feature_set(features)
        method = method_class(cfg, train)
        method.start_epoch(lambda: predict(heads, eval_loader(train, cfg, PREDICT_BATCH), 'cpu', features=False))
    optimizer = get_optimizer(cfg, list(model.parameters()))
    return train_epoch(heads, batches_of(cfg, method), step_of(heads, model, method, cfg), optimizer, cfg, 0)


PREDICT_BATCH = 1024
STEP_MODULES = {'mine': ['stages.schema', 'neighbors.search'],
                'mine_approximate': ['stages.schema', 'neighbors.search'],
                'num_clusters': ['neighbors.num_clusters'],
                'clustering_epoch': ['scan', 'data.feature_batches', 'stages.epochs'],
                'selflabel_epoch': ['selflabel', 'data.feature_batches', 'stages.epochs'],
                'predict': ['eval', 'data.loaders', 'evaluation.features']}


def feature_set(features):
    from types import SimpleNamespace
    from data.feature_batches import FeatureSet
    return FeatureSet(features, SimpleNamespace(targets=np.full(len(features), -1), classes=[]))


def run_step(step, n, dim, folder):
    """The step on the n vectors of folder; returns {'seconds', 'peak_gb', ...} (run in a process of its own)."""
    import torch
    torch.set_num_threads(os.cpu_count())
    features = torch.from_numpy(np.load(os.path.join(folder, 'features.npy'), mmap_mode='c'))
    groups = np.load(os.path.join(folder, 'groups.npy'))
    extra = {}
    if step in ('num_clusters', 'clustering_epoch'):
        lists = np.load(os.path.join(folder, 'neighbours.npy'))
    for module in STEP_MODULES[step]:  # imported before the clock starts: a stage pays them once, not per image
        importlib.import_module(module)
    t0 = time.perf_counter()
    if step in ('mine', 'mine_approximate'):
        from neighbors.search import mine_neighbors
        from stages.schema import PRETEXT
        exact_max = PRETEXT['exact_search_max'] if step == 'mine' else 0
        indices, report = mine_neighbors(features.numpy(), TOPK, exact_max=exact_max)
        extra = {'search': report['search'], 'recall': report.get('recall'),
                 'neighbour_group_agreement': round(float((groups[indices[:, 1:]] == groups[:, None]).mean()), 4)}
    elif step == 'num_clusters':
        from neighbors.num_clusters import estimate_num_clusters
        k, _ = estimate_num_clusters(lists, [2, 2 * int(groups.max() + 1)])
        extra = {'k': k}
    elif step == 'clustering_epoch':
        from data.feature_batches import FeaturePairs
        record = one_epoch('clustering', 'configs/scan/scan_cifar10_jpg_pretrained.yml', features,
                           lambda cfg, method: FeaturePairs(features, lists[:, 1:], method.batch_views(),
                                                            cfg.batch_size, 'cpu'),
                           lambda net, model, method, cfg: lambda batch: method.training_step(net, model, batch,
                                                                                              'cpu'), folder)
        extra = {'loss': round(record['loss'], 4)}
    elif step == 'selflabel_epoch':
        from data.feature_batches import FeatureViews
        from selflabel import training_step
        one_epoch('selflabel', 'configs/selflabel/selflabel_cifar10_jpg_pretrained.yml', features,
                  lambda cfg, method: FeatureViews(features, cfg.batch_size, 'cpu'),
                  lambda net, model, method, cfg: training_step(net, model, method, cfg, 'cpu'), folder)
    elif step == 'predict':
        predict_csv(features, dim, os.path.join(folder, 'predictions.csv'))
    seconds = time.perf_counter() - t0
    return {'seconds': float(f'{seconds:.4g}'), 'peak_gb': round(peak_gib(), 3), **extra}


def peak_gib():
    """This process's peak resident memory in GiB: Linux's VmHWM, which starts afresh with the process's own memory
    (getrusage's maxrss is kept across the exec that starts a spawned process: it would show the parent's peak)."""
    try:
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith('VmHWM:')) / 2 ** 20  # KiB -> GiB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def predict_csv(features, dim, path):
    """eval.py --predict past the trunk: the heads over the cached features chunk by chunk, one CSV row each."""
    from easydict import EasyDict
    from data.loaders import eval_loader
    from eval import PREDICT_CHUNK, write_predictions
    from evaluation.features import predict
    from evaluation.names import Naming
    _, heads = heads_model(dim)
    cfg = EasyDict(batch_size=PREDICT_BATCH, num_workers=0)
    chunks = (([f'image{i}.jpg' for i in range(start, min(start + PREDICT_CHUNK, len(features)))],
               predict(heads, eval_loader(feature_set(features[start:start + PREDICT_CHUNK]), cfg), 'cpu',
                       features=False)['probs'][0])
              for start in range(0, len(features), PREDICT_CHUNK))
    write_predictions(path, chunks, Naming(K))


def _worker(args):
    return run_step(*args)


def measure(step, n, dim, folder):
    with multiprocessing.get_context('spawn').Pool(1) as pool:
        return pool.apply(_worker, ((step, n, dim, folder),))


def exponent(ns, seconds):
    """The growth exponent between the two largest n: log(t2 / t1) / log(n2 / n1)."""
    if len(ns) < 2 or min(seconds[-2:]) <= 0:
        return None
    return float(np.log(seconds[-1] / seconds[-2]) / np.log(ns[-1] / ns[-2]))


def markdown(result):
    machines = list(dict.fromkeys(row.get('machine', result['machine']) for row in result['steps'].values()))
    lines = [f"Synthetic {result['dim']}-d unit vectors ({result['groups']} groups), {TOPK} neighbours. Machines: "
             + '; '.join(f'({i + 1}) {m}' for i, m in enumerate(machines)) + '.',
             '', '| step | ' + ' | '.join(f'{n:,}' for n in result['n']) + ' | growth exponent (two largest n) | machine |',
             '|---' * (len(result['n']) + 3) + '|']
    for step, row in result['steps'].items():
        cells = [f'{s:.1f} s, {g:.2f} GB' for s, g in zip(row['seconds'], row['peak_gb'])]
        growth = exponent(row['n'], row['seconds'])
        where = machines.index(row.get('machine', result['machine'])) + 1
        lines.append(f'| {step} | ' + ' | '.join(cells) + f" | {'n/a' if growth is None else f'{growth:.2f}'} | "
                     f'({where}) |')
    for step, what in (('mine', f"the pretext stage's (exact search up to exact_search_max = "
                                f"{result.get('exact_search_max', 0):,} images)"),
                       ('mine_approximate', 'the approximate index at every n')):
        row = result['steps'].get(step, {})
        notes = [f"{n:,}: {s}" + (f", top-{TOPK} overlap with exact search {r:.3f}" if r is not None else '')
                 for n, s, r in zip(row.get('n', []), row.get('search', []), row.get('recall', []))]
        if notes:
            lines += ['', f'{step}, {what}: ' + '; '.join(notes) + '.']
    if 'num_clusters' in result['steps']:
        lines += ['', f"K found on the planted {result['groups']} groups: "
                  + ', '.join(str(k) for k in result['steps']['num_clusters']['k']) + '.']
    return '\n'.join(lines)


def plot(result, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for step, row in result['steps'].items():
        ax.loglog(row['n'], row['seconds'], marker='o', label=step)
    ax.set_xlabel('images')
    ax.set_ylabel('seconds')
    ax.legend()
    ax.grid(True, which='both', alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    from benchmarks.accuracy import machine
    from utils.checkpoint import atomic_write_text
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, nargs='+', default=[10000, 100000, 1000000])
    parser.add_argument('--dim', type=int, default=1280)
    parser.add_argument('--groups', type=int, default=100)
    parser.add_argument('--steps', nargs='+', default=list(STEPS), choices=STEPS)
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--merge', action='store_true',
                        help="measure only --steps and keep the other steps' rows of the scale.json in --results")
    parser.add_argument('--readme', default=None, help='its block\'s page (default: found)')
    parser.add_argument('--render', action='store_true', help='only write the table again from the saved JSON')
    args = parser.parse_args(argv)
    from stages.schema import PRETEXT
    saved = os.path.join(args.results, 'scale.json')
    if args.render:
        with open(saved) as f:
            return publish_scale(json.load(f), args)
    result = {'machine': machine(), 'dim': args.dim, 'groups': args.groups, 'n': sorted(args.n),
              'exact_search_max': PRETEXT['exact_search_max'], 'steps': {}}
    if args.merge and os.path.isfile(saved):
        kept = json.load(open(saved))
        if kept['n'] != result['n'] or kept['dim'] != args.dim:
            sys.exit(f"error: --merge needs the same --n and --dim as {saved} ({kept['n']}, {kept['dim']})")
        result['steps'] = {step: row for step, row in kept['steps'].items() if step not in args.steps}
    for n in sorted(args.n):
        last = {}
        with tempfile.TemporaryDirectory() as folder:
            groups = write_vectors(os.path.join(folder, 'features.npy'), n, args.dim, args.groups)
            np.save(os.path.join(folder, 'groups.npy'), groups)
            np.save(os.path.join(folder, 'neighbours.npy'), planted_lists(groups))
            for step in args.steps:
                if step == 'mine_approximate' and n > PRETEXT['exact_search_max'] and 'mine' in last:
                    row = last['mine']  # the stage's mining is the approximate index here
                else:
                    row = last[step] = measure(step, n, args.dim, folder)
                print(f'{step} n={n}: {row}', flush=True)
                entry = result['steps'].setdefault(step, {'n': [], 'machine': result['machine']})
                entry['n'].append(n)
                for key, value in row.items():
                    entry.setdefault(key, []).append(value)
    result['steps'] = {step: result['steps'][step] for step in STEPS if step in result['steps']}
    os.makedirs(args.results, exist_ok=True)
    atomic_write_text(saved, json.dumps(result, indent=2))
    plot(result, os.path.join(args.results, 'scale.png'))
    return publish_scale(result, args)


def publish_scale(result, args):
    """scale.md and the page's block 'scale': the table and the plot."""
    from benchmarks.accuracy import update_readme
    from utils.checkpoint import atomic_write_text
    text = markdown(result) + f"\n\n![scale]({os.path.relpath(os.path.join(args.results, 'scale.png'), ROOT)})"
    atomic_write_text(os.path.join(args.results, 'scale.md'), text + '\n')
    update_readme('scale', text, args.readme)
    print(text)
    return result


if __name__ == '__main__':
    main()
