"""The clustering stage: heads trained so that mined neighbors agree, by setup scan, nnm, temi or turtle.

    python scan.py --config_env configs/env.yml --config_exp configs/scan/scan_cifar10.yml

Reads <root_dir>/<name>/pretext/{model.pth.tar, topk-*-neighbors.npy} from simclr.py and writes
<root_dir>/<name>/scan/: config.yml, log.jsonl, training_curve.png, checkpoint.pth.tar (--resume),
model.pth.tar = {'model': state_dict, 'head': int} (SCAN's layout; the epoch and head with the
lowest label-free val loss) and metrics.json {acc, nmi, ari, head, num_classes, seconds}. With
num_classes: auto the number of clusters is estimated first (num_clusters.png, k_estimate in metrics.json).
"""
import os
import time

import numpy as np

from data import clustering_data, get_dataset
from data.feature_batches import FeaturePairs
from data.loaders import eval_loader, neighbor_batches
from evaluation.features import predict
from evaluation.metrics import cluster_metrics
from models import get_clustering_model
from models.files import read_model_file
from neighbors.head_init import INITS, head_centroids
from neighbors.num_clusters import SPREAD, estimate_num_clusters, spread_words
from neighbors.search import load_neighbors
from stages.epochs import EpochRunner
from stages.feature_cache import check_cache, heads_input
from stages.run import cap_epochs, prepare, run_cli, start_run, trainable, training_model, write_metrics
from utils.checkpoint import atomic_save, load_weights
from utils.config import base_parser, parse_args, typed
from utils.errors import UserError
from utils.logger import metric_words
from utils.plots import save_num_clusters_plot


def evaluate(model, method, cfg, device, val_set, val_lists, features=False):
    """Label-free head selection on val (the method's own criterion on mined pairs); metrics only to report. Returns
    the report and the prediction (with the features under the heads when `features`, for reuse as the train
    split's)."""
    pred = predict(model, eval_loader(val_set, cfg, device=device), device, features)
    losses = method.val_losses(pred['probs'], val_lists)
    head = int(losses.argmin())
    labels = pred['targets']
    report = {'val_loss': [round(float(v), 5) for v in losses], 'head': head}
    if val_set.has_labels:
        classes = len(val_set.classes) or None
        per_head = [cluster_metrics(p.argmax(1).numpy(), labels, p.numpy(), classes) for p in pred['probs']]
        report['acc'] = [round(m['acc'], 5) for m in per_head]
        report['best'] = per_head[head]
    sizes = np.bincount(pred['probs'][head].argmax(1).numpy(), minlength=cfg.num_classes)
    report['cluster_sizes'] = sorted(sizes.tolist(), reverse=True)
    return report, pred


def keep_best(runner, epoch, record, report, model, cfg):
    """The epoch's log record with its evaluation; the model is saved (runner.keep) when its selected head's
    label-free val loss is the lowest so far."""
    metrics = report.get('best', {})
    runner.keep(epoch, None if cfg.model_selection == 'last' else report['val_loss'][report['head']],
                lambda: atomic_save({'model': model.plain_state(), 'head': report['head']}, cfg.scan_model),
                head=report['head'], metrics={k: metrics.get(k) for k in ('acc', 'nmi', 'ari')})
    record = {**record, **{k: v for k, v in report.items() if k != 'best'}}
    if 'best' in report:
        record.update(nmi=round(report['best']['nmi'], 5), ari=round(report['best']['ari'], 5))
    return record


def init_heads(model, cfg, train_eval, device):
    """Every head starts as a nearest-centroid classifier on the train split's features under the heads
    (neighbors/head_init.py); returns each head's softness, the mean squared distance to the nearest centroid."""
    features = predict(model, eval_loader(train_eval, cfg, device=device), device)['features'].double()
    spread = []
    for h, (centroids, softness) in enumerate(head_centroids(features, cfg)):
        model.init_head(h, centroids, softness)
        spread.append(softness)
    return spread


def choose_num_clusters(cfg):
    """num_classes: auto -> the number of communities of the train split's shared-neighbour graph, small ones
    merged and large ones split, within k_range (neighbors/num_clusters.py). Returns the estimate's report, or None
    when num_classes is given."""
    if cfg.num_classes != 'auto':
        return None
    chosen, report = estimate_num_clusters(np.load(cfg.topk_neighbors_train_path), cfg.k_range, cfg.k_median,
                                           spread=SPREAD)
    cfg.num_classes = chosen
    print(f"num_classes: auto -> {chosen} clusters ({len(report['community_sizes'])} communities in the neighbour "
          f"graph, those under {report['min_size']:g} images merged, clusters over {report['max_size']:g} split; "
          f"k_range {report['k_range']}); {spread_words(report)}")
    return report


def read_pretext_model(path):
    if not os.path.isfile(path):
        raise UserError(f'pretext model not found: {path}; run simclr.py first (or place a downloaded one there)')
    return read_model_file(path, 'pretext model')


def load_pretext_trunk(model, found):
    """The pretext model's backbone (and projection head, when the heads sit on it) into the clustering model."""
    load_weights(model.backbone, found.backbone(), f'pretext model {found.path} (backbone)')
    if hasattr(model, 'contrastive_head'):
        load_weights(model.contrastive_head, found.part('contrastive_head'),
                     f'pretext model {found.path} (projection head)')


def main(argv=None):
    parser = base_parser('The clustering stage: heads trained so that mined neighbors agree (setups scan, nnm, temi, '
                         'turtle), after simclr.py.')
    return run_cli(lambda: run(parse_args(parser, argv)))


def clustering_model(cfg, device):
    """The clustering model on the pretext model's trunk (and its projection head, when the heads sit on it)."""
    pretext = read_pretext_model(cfg.pretext_model)
    model = get_clustering_model(cfg, pretext.state if cfg.heads_on == 'projection' else None).to(device)
    load_pretext_trunk(model, pretext)
    return model


def start_heads(runner, heads, model, method, cfg, device, train_eval, val_set, val_lists):
    """head_init kmeans or graph: the heads start at centroids, and that start is the first candidate (epoch 0)."""
    print(f'heads from {INITS[cfg.head_init]} on the {cfg.heads_on} features, mean squared distance per head:',
          [round(s, 4) for s in init_heads(heads, cfg, train_eval, device)])
    report = evaluate(heads, method, cfg, device, val_set, val_lists)[0]
    runner.log.log(keep_best(runner, 0, {'epoch': 0}, report, model, cfg))


def finish(runner, cfg, k_report, t_start):
    """The training curve and metrics.json of the kept head and epoch."""
    runner.log.plot(os.path.join(cfg.scan_dir, 'training_curve.png'), ['loss', 'val_loss', 'acc', 'entropy'])
    best = runner.best
    result = {**best['metrics'], 'head': best.get('head'), 'num_classes': cfg.num_classes}
    if k_report is not None:
        result['k_estimate'] = k_report
    result = write_metrics(cfg.scan_dir, result, t_start, rerun=runner.finished)
    criterion = 'last epoch' if best['loss'] is None else f"{cfg.model_selection} {best['loss']:.4f}"
    print(f"selected head {result['head']} (epoch {best.get('epoch')}, {criterion}): "
          + metric_words(best['metrics']) + f"; wrote {cfg.scan_dir}")
    return result


def run(args):
    t_start = time.time()
    cfg, method_class, device = prepare(args, 'clustering')
    evaluation, train_set, val_set = clustering_data(cfg)
    train_lists = load_neighbors(cfg.topk_neighbors_train_path, len(train_set), cfg.num_neighbors, 'train',
                                 typed(cfg, 'num_neighbors'))
    val_lists = load_neighbors(cfg.topk_neighbors_val_path, len(val_set), None, 'val')
    k_report = choose_num_clusters(cfg)
    model = clustering_model(cfg, device)
    method = method_class(cfg)
    method.build(model)
    check_cache(cfg, method)
    cap_epochs(cfg, len(train_set))
    state = start_run(cfg.scan_dir, cfg, 'clustering', cfg.scan_checkpoint, args.resume)
    if k_report is not None:
        save_num_clusters_plot(k_report, cfg.num_classes, os.path.join(cfg.scan_dir, 'num_clusters.png'))
    if cfg.update_cluster_head_only:
        model.freeze_trunk()
    runner = EpochRunner(cfg, 'clustering', model, trainable(model), method, state, device)
    print(f'{cfg.setup}: {len(train_set)} train images, {cfg.num_heads} heads, {cfg.epochs} epochs, device {device}')
    val_set, train_eval, wrap = heads_input(model, cfg, device, val_set, lambda: get_dataset(cfg, 'train', evaluation))
    heads = wrap(model)  # what predicts, trains and evaluates: the model, or its heads on cached features
    if cfg.head_init != 'random' and state is None:
        start_heads(runner, heads, model, method, cfg, device, train_eval(), val_set, val_lists)
    if cfg.cache_features:
        batches = FeaturePairs(train_eval().features, train_lists, method.batch_views(), cfg.batch_size, device)
    else:
        batches = neighbor_batches(train_set, train_lists, method.batch_views(), cfg, device, evaluation)
    net = training_model(heads, cfg, device)

    def end_epoch(epoch, record):
        same = train_eval() is val_set
        report, val_pred = evaluate(heads, method, cfg, device, val_set, val_lists, features=same)
        method.end_epoch(lambda: val_pred if same else predict(heads, eval_loader(train_eval(), cfg, device=device),
                                                                device))
        return keep_best(runner, epoch + 1, record, report, model, cfg)

    runner.fit(net, batches, lambda batch: method.training_step(net, model, batch, device), evaluate=end_epoch)
    return finish(runner, cfg, k_report, t_start)


if __name__ == '__main__':
    main()
