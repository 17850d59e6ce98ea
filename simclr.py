"""The pretext stage: learn features (setup simclr, byol, instdisc, and or snca; setup pretrained uses a pretrained
backbone as it is), then mine every image's neighbors.

    python simclr.py --config_env configs/env.yml --config_exp configs/pretext/simclr_cifar10.yml

Writes into <root_dir>/<name>/pretext/: config.yml, log.jsonl, training_curve.png,
checkpoint.pth.tar (resume with --resume), model.pth.tar (SCAN's layout: the contrastive
model's state_dict), topk-train-neighbors.npy [N, K+1], topk-val-neighbors.npy [N_val, 6],
metrics.json. With a model.pth.tar there and no checkpoint (e.g. SCAN's released pretext
model), or with --mine_only, it loads the model and only mines.
"""
import os
import time

from data import complete_transforms, get_dataset, same_data
from data.loaders import eval_loader, view_batches
from data.transforms import val_transform
from evaluation.features import knn_accuracy, normalise_spaces, pretext_features
from models import backbone_label, get_backbone, get_contrastive_model
from models.files import load_pretext_model
from models.pretrained import check_input_size, names_weights
from neighbors.search import mine_neighbors, neighbor_accuracy
from stages.epochs import EpochRunner
from stages.feature_cache import trunk_features
from stages.run import cap_epochs, prepare, run_cli, start_run, training_model, write_metrics
from utils.checkpoint import atomic_save, atomic_save_npy
from utils.config import base_parser, parse_args, save_config
from utils.errors import UserError


def training_step(net, method, device):
    """The pretext step (stages/epochs.py): the method's training_step on the batch's views ([b, views, C, H, W],
    this process's share; under torchrun its loss is computed on the projections of the whole global batch,
    gathered from every process with their gradients), then its after_step. Logs the loss's parts."""
    def step(batch):
        parts, context = method.training_step(net, batch['image'].to(device, non_blocking=True), batch['index'])
        logs = {('loss' if k == 'total' else k): v.detach() for k, v in parts.items()}
        return parts['total'], logs, lambda: method.after_step(*context)
    return step


def mining_features(model, dataset, cfg, device, cache=False):
    """The features the stage mines on ([N, D], L2-normalised) and the targets. With `cache` (a frozen backbone:
    setup pretrained) the backbone's go through the feature cache that the later stages read; backbones side by side
    weigh the same (normalise_spaces)."""
    if cache:
        features = trunk_features(model, [model.backbone], dataset, cfg, device).float()
        return normalise_spaces(features, getattr(model.backbone, 'dims', None)), dataset.targets
    return pretext_features(model, eval_loader(dataset, cfg, device=device), cfg, device)


def evaluate(model, cfg, device, train_eval, val_set, cache=False):
    """Features of both splits (for mining), plus the weighted-kNN accuracy on val."""
    train_feats, train_targets = mining_features(model, train_eval, cfg, device, cache)
    if val_set is train_eval:
        val_feats, val_targets = train_feats, train_targets
    else:
        val_feats, val_targets = mining_features(model, val_set, cfg, device, cache)
    acc = knn_accuracy(train_feats, train_targets, val_feats, val_targets, cfg.knn_k, cfg.knn_temperature,
                       exclude_self=val_set is train_eval, device=device)
    return (train_feats, train_targets), (val_feats, val_targets), acc


def train(cfg, model, method, batches, train_eval, val_set, device, state):
    own = method.build(model)  # the method's trainable modules (a predictor), on the model's device
    params = list(model.parameters()) + (list(own.parameters()) if own is not None else [])
    runner = EpochRunner(cfg, 'pretext', model, params, method, state, device, epochs=method.total_epochs())
    net = training_model(model, cfg, device)

    def knn(epoch, record):
        if cfg.knn_every and (epoch + 1) % cfg.knn_every == 0:
            record['knn_acc'] = evaluate(model, cfg, device, train_eval, val_set)[2]
        return record

    runner.fit(net, batches, training_step(net, method, device), begin=method.start_epoch, evaluate=knn)
    runner.log.plot(os.path.join(cfg.pretext_dir, 'training_curve.png'), ['loss', 'knn_acc', 'lr'])
    atomic_save(model.state_dict(), cfg.pretext_model)


def main(argv=None):
    parser = base_parser('The pretext stage: features learnt by setup simclr, byol, instdisc, and or snca, or a '
                         'pretrained backbone used as it is (setup pretrained); then every image\'s neighbours mined.')
    parser.add_argument('--mine_only', action='store_true', help='load pretext/model.pth.tar and only mine')
    args = parse_args(parser, argv)
    return run_cli(lambda: run(args))


def check_setup(cfg, method_class):
    """The backbone settings a setup cannot use, before anything is read or written."""
    if cfg.get('backbones') and method_class.trains:
        raise UserError(f"backbones: (several backbones side by side) is for setup: pretrained, not '{cfg.setup}': "
                        'their features are used as they are; to train one, give it as backbone: NAME')
    if cfg.get('backbones') and (cfg.transformation_kwargs or {}).get('normalize') not in (None, 'auto'):
        raise UserError('with backbones: each backbone normalises its own input; leave transformation_kwargs.'
                        "normalize unset (or give an entry's own as its normalize: {mean, std})")
    if not method_class.trains and not (cfg.get('backbones') or cfg.get('backbone_weights') or names_weights(cfg)):
        raise UserError('setup: pretrained needs pretrained weights: backbone_kwargs: {pretrained: true} for '
                        'timm/<name>, {weights: NAME} for torchvision/<name>, or backbone_weights: PATH')


def data_and_model(cfg, device):
    """The train split (no transform yet), the train and val splits under the evaluation transform, and the
    contrastive model. The backbone's weights (fetched or read from the cache) come first, before anything is
    written: they bring their normalisation, which completes the transforms."""
    backbone = get_backbone(cfg, load_weights=True)
    train_set = get_dataset(cfg, 'train')
    complete_transforms(cfg, train_set, backbone['preprocessing'])
    check_input_size(backbone['backbone'], backbone_label(cfg), cfg.transformation_kwargs['crop_size'])
    evaluation = val_transform(cfg.transformation_kwargs)
    train_eval = get_dataset(cfg, 'train', evaluation)
    val_set = train_eval if same_data(cfg) else get_dataset(cfg, 'val', evaluation)
    return train_set, train_eval, val_set, get_contrastive_model(cfg, backbone).to(device)


def mine(cfg, model, device, train_eval, val_set, frozen):
    """Each split's top-K neighbors mined and saved, their accuracy when labelled, and the weighted kNN accuracy:
    the stage's result (before metrics.json)."""
    (train_feats, train_targets), (val_feats, val_targets), knn_acc = evaluate(
        model, cfg, device, train_eval, val_set, cache=frozen)
    metrics = {}
    for split, feats, targets, k in (('train', train_feats, train_targets, cfg.num_neighbors),
                                     ('val', val_feats, val_targets, cfg.num_val_neighbors)):
        indices, search_report = mine_neighbors(feats, k, device=device, exact_max=cfg.exact_search_max)
        metrics[f'{split}_search'] = search_report
        atomic_save_npy(indices, cfg[f'topk_neighbors_{split}_path'])
        metrics[split] = neighbor_accuracy(indices, targets)
        acc = 'n/a (no labels)' if metrics[split] is None else f'{metrics[split]:.4f}'
        print(f'accuracy of top-{k} neighbours on {split}: {acc}')
    return {'neighbor_acc': metrics['train'], 'knn_acc': knn_acc, 'search': metrics['train_search']}


def run(args):
    t_start = time.time()
    cfg, method_class, device = prepare(args, 'pretext')
    check_setup(cfg, method_class)
    train_set, train_eval, val_set, model = data_and_model(cfg, device)
    mine_only = args.mine_only or (os.path.isfile(cfg.pretext_model) and not os.path.isfile(cfg.pretext_checkpoint))
    rerun = mine_only  # nothing trained in this call: the run's own time is kept (write_metrics)
    if mine_only:
        load_pretext_model(model, cfg.pretext_model)
        print(f'mine-only: loaded {cfg.pretext_model}; no training, mining neighbours')
        save_config(cfg, os.path.join(cfg.pretext_dir, 'config.yml'))
    elif not method_class.trains:
        cfg.mining_features = 'backbone'  # the projection head is untrained
        start_run(cfg.pretext_dir, cfg, 'pretext', cfg.pretext_checkpoint, args.resume)
        atomic_save(model.state_dict(), cfg.pretext_model)
        weights = 'their weights' if cfg.get('backbones') else cfg.get('backbone_weights') or 'its named weights'
        print(f"pretrained: {backbone_label(cfg)} with {weights}, no training; mining on the backbone features")
    else:
        method = method_class(cfg, train_set, device)  # e.g. the memory bank (after the model: same random draws)
        # on the device path every image is decoded here: a bad file stops the run before its folder is claimed
        batches = view_batches(train_set, cfg, device, method.views)
        cap_epochs(cfg, len(train_set))
        state = start_run(cfg.pretext_dir, cfg, 'pretext', cfg.pretext_checkpoint, args.resume)
        print(f'pretext: {len(train_set)} train images, {cfg.backbone}, {cfg.epochs} epochs, device {device}')
        rerun = state is not None and state['epoch'] >= method.total_epochs()
        train(cfg, model, method, batches, train_eval, val_set, device, state)
    result = mine(cfg, model, device, train_eval, val_set, frozen=not method_class.trains)
    if method_class.supervised:
        result['supervised'] = True  # trained with labels: an upper bound, not a clustering result
    result = write_metrics(cfg.pretext_dir, result, t_start, rerun)
    knn = 'n/a (no labels)' if result['knn_acc'] is None else f"{result['knn_acc']:.4f}"
    print(f'weighted kNN accuracy on val: {knn}; wrote {cfg.pretext_dir}')
    return result


if __name__ == '__main__':
    main()
