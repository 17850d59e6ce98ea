"""Self-labelling stage: fine-tune the best clustering head on its own confident predictions.

    python selflabel.py --config_env configs/env.yml --config_exp configs/selflabel/selflabel_cifar10.yml

Reads <root_dir>/<name>/scan/model.pth.tar ({'model', 'head'}; `scan_folder` picks another folder),
copies the selected head to cluster_head.0, and trains with the confidence-thresholded, class-balanced
cross-entropy of strong views against weak-view pseudo-labels. Writes <root_dir>/<name>/selflabel/:
config.yml, log.jsonl, training_curve.png, checkpoint.pth.tar (--resume), model.pth.tar (SCAN's
layout: a bare state_dict with cluster_head.0; the EMA weights with use_ema) and metrics.json.
"""
import os
import time
import warnings

import torch

from data import clustering_data, get_dataset
from data.feature_batches import FeatureViews
from data.loaders import eval_loader, weak_strong_batches
from evaluation.features import predict
from evaluation.metrics import cluster_metrics
from evaluation.selection import head_losses, neighbor_agreement
from models import get_clustering_model
from models.files import read_model_file
from neighbors.search import load_neighbors
from stages.epochs import EpochRunner
from stages.feature_cache import heads_input
from stages.run import cap_epochs, prepare, run_cli, start_run, trainable, training_model, write_metrics
from utils.checkpoint import atomic_save, load_weights
from utils.config import base_parser, parse_args
from utils.distributed import gather, world
from utils.ema import EMA
from utils.errors import UserError
from utils.logger import metric_words
from utils.optim import autocast


def training_step(net, model, method, cfg, device, ema=None):
    """The self-labelling step (stages/epochs.py) through `net` (`model`, its head on cached features, or their
    DDP/compiled wrapper): the method's loss of the strong view against the weak view's predictions, under torchrun
    on the whole global batch (its confidence mask and class balancing included), gathered from every process; no
    loss when nothing in the batch teaches. Logs the share of confident samples; `ema` follows the model."""
    def step(batch):
        strong = batch['image_augmented'].to(device, non_blocking=True)
        weak_logits = None
        with autocast(cfg, device):
            if method.needs_weak:
                with torch.no_grad():
                    weak_logits = gather(net(batch['image'].to(device, non_blocking=True))[0].float())
            strong_logits = net(strong)[0]
        out = method.step_loss(weak_logits, gather(strong_logits.float()), gather(batch['index'].to(device)))
        logs = {'confident_share': (out['confident'], len(strong) * world())}
        if out['total'] is not None:
            logs['loss'] = out['total'].detach()
        return out['total'], logs, (lambda: ema.update(model)) if ema is not None else None
    return step


def evaluate(model, cfg, device, val_set, val_lists=None):
    """Cluster sizes; with val_lists the label-free criteria on the val split's mined pairs: SCAN's loss (entropy
    weight 1) and the neighbours' agreement (kappa of the hard labels); the metrics when there are labels (only to
    report)."""
    pred = predict(model, eval_loader(val_set, cfg, device=device), device, features=False)
    probs = pred['probs'][0]
    report = {'cluster_sizes': sorted(torch.bincount(probs.argmax(1), minlength=cfg.num_classes).tolist(),
                                      reverse=True)}
    if val_lists is not None:
        report['val_loss'] = round(float(head_losses(pred['probs'], val_lists)[0]), 5)
        report['val_agreement'] = round(neighbor_agreement(probs.argmax(1), val_lists), 5)
    if val_set.has_labels:
        m = cluster_metrics(probs.argmax(1).numpy(), pred['targets'], probs.numpy(), len(val_set.classes) or None)
        report.update({k: round(m[k], 5) for k in ('acc', 'nmi', 'ari')})
    return report


def read_clustering_model(path):
    """SCAN's / our scan/model.pth.tar: {'model': state_dict with H heads, 'head': int}."""
    if not os.path.isfile(path):
        raise UserError(f'clustering model not found: {path}; run scan.py first (same env file, name and scan_folder)')
    found = read_model_file(path, 'clustering model', 'clustering')
    if found.head is None:
        raise UserError(f"{path} names no selected head ({{'model', 'head'}}); point scan_folder at scan.py's output")
    return found


def self_label_model(cfg, found, device):
    """The clustering model's selected head as head 0, on the device (its trunk frozen under cache_features)."""
    model = get_clustering_model(cfg, found.state).to(device)
    load_weights(model, found.single_head(), f'clustering model {cfg.scan_model}')
    if cfg.cache_features:
        model.freeze_trunk()
    return model


def keeper(runner, cfg, final):
    """keep(epoch, report): the model is kept when its label-free criterion is the best so far (model_selection:
    val_loss, the lowest loss; agreement, the highest; epoch 0 is the clustering model), or at every epoch (last)."""
    def keep(epoch, report):
        loss = {'last': None, 'val_loss': report.get('val_loss'), 'agreement': -report.get('val_agreement', 0)}
        runner.keep(epoch, loss[cfg.model_selection],
                    lambda: atomic_save(final.state_dict(), cfg.selflabel_model), report=report)
    return keep


def finish(runner, cfg, t_start):
    runner.log.plot(os.path.join(cfg.selflabel_dir, 'training_curve.png'), ['loss', 'confident_share', 'acc'])
    report = runner.best['report']  # every epoch keeps or compares (epochs >= 1), and val_loss also epoch 0
    print(f"kept epoch {runner.best['epoch']} ({cfg.model_selection})")
    result = write_metrics(cfg.selflabel_dir, {**{k: report.get(k) for k in ('acc', 'nmi', 'ari')}, 'head': 0},
                           t_start, rerun=runner.finished)
    print(f'self-label: {metric_words(result)}; wrote {cfg.selflabel_dir}')
    return result


def run(args):
    t_start = time.time()
    cfg, method_class, device = prepare(args, 'selflabel')
    found = read_clustering_model(cfg.scan_model)
    evaluation, train_set, val_set = clustering_data(cfg, found.num_clusters)
    model = self_label_model(cfg, found, device)
    method = method_class(cfg, train_set)
    label_free = cfg.model_selection != 'last'  # a label-free criterion on the val split's mined neighbours
    val_lists = load_neighbors(cfg.topk_neighbors_val_path, len(val_set), None, 'val') if label_free else None
    cap_epochs(cfg, len(train_set))
    state = start_run(cfg.selflabel_dir, cfg, 'selflabel', cfg.selflabel_checkpoint, args.resume)
    ema = EMA(model, cfg.ema_alpha) if cfg.use_ema else None
    runner = EpochRunner(cfg, 'selflabel', model, trainable(model), method, state, device, ema=ema)
    print(f'selflabel: head {found.head} of {cfg.scan_model}, {len(train_set)} train images, {cfg.epochs} epochs, '
          f'teaching: {method.selection()}, device {device}')
    final = ema.shadow if ema is not None else model  # the model saved
    val_set, train_eval, wrap = heads_input(model, cfg, device, val_set, lambda: get_dataset(cfg, 'train', evaluation))
    scorer = wrap(final)  # what predicts: the model, or its head on cached features
    if cfg.cache_features:
        batches = FeatureViews(train_eval().features, cfg.batch_size, device)
    else:
        batches = weak_strong_batches(train_set, cfg, device, evaluation)
    net = training_model(wrap(model), cfg, device)
    keep = keeper(runner, cfg, final)
    if label_free and runner.best is None:  # the clustering model itself is the one to beat
        report = evaluate(scorer, cfg, device, val_set, val_lists)
        keep(0, report)
        runner.log.log({'epoch': 0, **report})

    def end_epoch(epoch, record):
        if record['loss'] is None:
            warnings.warn(f'epoch {epoch + 1}: no sample taught ({method.selection()}); nothing was trained (let more '
                          'samples teach, e.g. a lower confidence_threshold, or train the clustering stage longer)')
        report = evaluate(scorer, cfg, device, val_set, val_lists)
        keep(epoch + 1, report)
        return {**record, **report}

    runner.fit(net, batches, training_step(net, model, method, cfg, device, ema),
               begin=lambda epoch: method.start_epoch(
                   lambda: predict(scorer, eval_loader(train_eval(), cfg, device=device), device, features=False)),
               evaluate=end_epoch)
    return finish(runner, cfg, t_start)


def main(argv=None):
    parser = base_parser('The self-labelling stage: the clustering model\'s selected head fine-tuned on its own '
                         'confident predictions (setup selflabel or selflabel_per_cluster), after scan.py.')
    return run_cli(lambda: run(parse_args(parser, argv)))


if __name__ == '__main__':
    main()
