"""Clustering stage: SCAN or NNM heads trained so that mined neighbours agree.

    python scan.py --config_env configs/env.yml --config_exp configs/scan/scan_cifar10.yml

Reads <root_dir>/<name>/pretext/{model.pth.tar, topk-*-neighbors.npy} from simclr.py and writes
<root_dir>/<name>/scan/: config.yml, log.jsonl, training_curve.png, checkpoint.pth.tar (--resume),
model.pth.tar = {'model': state_dict, 'head': int} (SCAN's layout; the epoch and head with the
lowest label-free val loss) and metrics.json {acc, nmi, ari, head, seconds}.
"""
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from data import get_dataset, same_data
from data.loaders import eval_loader, neighbor_batches
from losses import get_criterion
from models import get_clustering_model
from utils.checkpoint import atomic_save, load_file, load_weights
from utils.clustering import clustering_data, global_neighbor_probs, head_losses, neighbor_lists, predict
from utils.common import seed_all
from utils.config import base_parser, parse_args
from utils.distributed import gather
from utils.errors import UserError
from utils.logger import RunLog, progress, write_json
from utils.metrics import cluster_metrics
from utils.optim import autocast, get_optimizer, grad_scaler, lr_at, optimizer_step, set_lr
from utils.schema import CLUSTERING
from utils.stage import prepare, run_cli, save_checkpoint, start_run, training_model


@dataclass
class Setup:
    second_view: bool = False       # a second strong view of each anchor
    global_neighbors: bool = False  # dataset-level neighbours refreshed after every epoch


SETUPS = {'scan': Setup(), 'nnm': Setup(second_view=True, global_neighbors=True)}


def train_one_epoch(net, model, batches, criterion, optimizer, cfg, epoch, device, global_probs, scaler):
    """One epoch; `net` is the module to train (`model`, or its DDP/compiled wrapper). Under torchrun every loss
    is computed on the whole global batch, gathered from every process."""
    net.train()
    if cfg.update_cluster_head_only:
        model.backbone.eval()
    sums, steps = {}, len(batches)
    for step, batch in enumerate(progress(batches, steps, f'epoch {epoch + 1}/{cfg.epochs}')):
        set_lr(optimizer, lr_at(cfg, epoch + step / steps))
        views = [batch[k] for k in ('anchor', 'neighbor', 'second') if k in batch]
        b = len(views[0])
        x = torch.cat(views).to(device, non_blocking=True)  # [views * b, C, H, W]
        with autocast(cfg, device):
            out = net(x, forward_pass='return_all')
        local = out['features'][:b]
        if 'weak' in batch:  # NNM's in-batch neighbours from the weak view (local_neighbor_view: weak)
            local = weak_features(model, batch['weak'].to(device, non_blocking=True), cfg)
        index = gather(batch['index'].to(device))
        total, parts = 0.0, {}
        for h, logits in enumerate(out['output']):
            chunks = [gather(c.float()) for c in logits.split(b)]  # anchors, neighbours[, second views]
            inputs = {'anchors': chunks[0], 'neighbors': chunks[1]}
            if SETUPS[cfg.setup].second_view:
                inputs.update(second=chunks[2], features=gather(local.detach().float()),
                              global_probs=None if global_probs is None else global_probs[h, index.cpu()].to(device))
            loss = criterion(**inputs)
            total = total + loss['total']
            for k, v in loss.items():
                parts[k] = parts.get(k, 0.0) + v.item() / cfg.num_heads
        optimizer_step(optimizer, total, epoch, scaler)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
    return {('loss' if k == 'total' else k): v / max(steps, 1) for k, v in sums.items()}


@torch.no_grad()
def weak_features(model, x, cfg):
    """Backbone features of weak views in eval mode (BatchNorm running statistics, which it leaves as they were)."""
    model.backbone.eval()
    features = model(x, forward_pass='backbone')
    model.backbone.train(not cfg.update_cluster_head_only)
    return features


def evaluate(model, cfg, device, val_set, val_lists, num_classes):
    """Label-free head selection on val (loss on mined pairs, entropy weight 1); metrics only to report."""
    pred = predict(model, eval_loader(val_set, cfg), device)
    losses = head_losses(pred['probs'], val_lists)
    head = int(losses.argmin())
    labels = pred['targets']
    report = {'val_loss': [round(float(v), 5) for v in losses], 'head': head}
    if val_set.has_labels:
        per_head = [cluster_metrics(p.argmax(1).numpy(), labels, p.numpy(), num_classes) for p in pred['probs']]
        report['acc'] = [round(m['acc'], 5) for m in per_head]
        report['best'] = per_head[head]
    sizes = np.bincount(pred['probs'][head].argmax(1).numpy(), minlength=cfg.num_classes)
    report['cluster_sizes'] = sorted(sizes.tolist(), reverse=True)
    return report, pred


def load_neighbors(path, n, k, what):
    if not os.path.isfile(path):
        raise UserError(f'{what} neighbours not found: {path}; run simclr.py with the same env file and config '
                        '(name, datasets, subsets) first')
    indices = np.load(path)
    if indices.ndim != 2 or len(indices) != n or indices.max() >= n or indices.min() < 0:
        raise UserError(f'{path} has shape {indices.shape} but the {what} split has {n} images: it was mined for '
                        'another dataset or subset; rerun simclr.py with this config')
    return neighbor_lists(indices, k if k is not None else indices.shape[1] - 1)


def load_pretext_backbone(model, path):
    if not os.path.isfile(path):
        raise UserError(f'pretext model not found: {path}; run simclr.py first (or place a downloaded one there)')
    state = load_file(path, 'pretext model')
    state = state.get('model', state)
    backbone = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    load_weights(model.backbone, backbone, f'pretext model {path} (backbone)')


def main(argv=None):
    args = parse_args(base_parser('Clustering stage: SCAN / NNM.'), argv)
    return run_cli(lambda: run(args))


def run(args):
    t_start = time.time()
    cfg, device = prepare(args, CLUSTERING)
    evaluation, train_set, val_set = clustering_data(cfg)
    train_lists = load_neighbors(cfg.topk_neighbors_train_path, len(train_set), cfg.num_neighbors, 'train')
    val_lists = load_neighbors(cfg.topk_neighbors_val_path, len(val_set), None, 'val')
    model = get_clustering_model(cfg).to(device)
    load_pretext_backbone(model, cfg.pretext_model)
    state = start_run(cfg.scan_dir, cfg, CLUSTERING, cfg.scan_checkpoint, args.resume)
    setup = SETUPS[cfg.setup]

    criterion = get_criterion(cfg)
    if cfg.update_cluster_head_only:
        model.backbone.requires_grad_(False)
    optimizer = get_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    scaler = grad_scaler(cfg, device)
    start_epoch, best, global_probs = 0, {'loss': float('inf'), 'metrics': {}}, None
    if state is not None:
        load_weights(model, state['model'], 'checkpoint')
        optimizer.load_state_dict(state['optimizer'])
        start_epoch, best, global_probs = state['epoch'], state['best'], state.get('global_probs')
        print(f'resuming {cfg.scan_checkpoint} at epoch {start_epoch + 1}/{cfg.epochs}')
    print(f'{cfg.setup}: {len(train_set)} train images, {cfg.num_heads} heads, {cfg.epochs} epochs, device {device}')
    train_eval = val_set if same_data(cfg) else get_dataset(cfg, 'train', evaluation)
    weak = evaluation if setup.second_view and cfg.local_neighbor_view == 'weak' else None
    batches = neighbor_batches(train_set, train_lists, cfg, device, second=setup.second_view, weak_transform=weak)
    net = training_model(model, cfg, device)
    log = RunLog(cfg.scan_dir)
    for epoch in range(start_epoch, cfg.epochs):
        seed_all(cfg.seed, epoch)
        t0 = time.time()
        record = {'epoch': epoch + 1, **train_one_epoch(net, model, batches, criterion, optimizer, cfg, epoch, device,
                                                          global_probs, scaler)}
        report, val_pred = evaluate(model, cfg, device, val_set, val_lists, cfg.num_classes)
        if setup.global_neighbors:
            train_pred = val_pred if train_eval is val_set else predict(model, eval_loader(train_eval, cfg), device)
            global_probs = global_neighbor_probs(train_pred)
        head_loss = report['val_loss'][report['head']]
        if head_loss < best['loss']:
            metrics = report.get('best', {})
            best = {'loss': head_loss, 'epoch': epoch + 1, 'metrics': {k: metrics.get(k) for k in ('acc', 'nmi', 'ari')},
                    'head': report['head']}
            atomic_save({'model': model.state_dict(), 'head': report['head']}, cfg.scan_model)
        record.update({k: v for k, v in report.items() if k != 'best'}, seconds=round(time.time() - t0, 2))
        if 'best' in report:
            record.update(nmi=round(report['best']['nmi'], 5), ari=round(report['best']['ari'], 5))
        save_checkpoint(cfg.scan_checkpoint, cfg, CLUSTERING, model=model.state_dict(),
                        optimizer=optimizer.state_dict(), epoch=epoch + 1, head=report['head'], best=best,
                        global_probs=global_probs)
        log.log(record)
    log.plot(os.path.join(cfg.scan_dir, 'training_curve.png'), ['loss', 'val_loss', 'acc', 'entropy'])
    result = {**best['metrics'], 'head': best.get('head'), 'seconds': round(time.time() - t_start, 1)}
    write_json(os.path.join(cfg.scan_dir, 'metrics.json'), result)
    print(f"selected head {result['head']} (epoch {best.get('epoch')}, val loss {best['loss']:.4f}): "
          + ', '.join(f'{k} {v:.4f}' for k, v in best['metrics'].items() if v is not None))
    return result


if __name__ == '__main__':
    main()
