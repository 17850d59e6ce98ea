"""Evaluate a pretext, clustering or self-label model, ours or downloaded from SCAN / NNM.

    python eval.py --config_exp configs/scan/scan_cifar10.yml --model results/cifar-10/scan/model.pth.tar \
        [--visualize_prototypes] [--predict PATH_OR_FOLDER]

Clustering models: ACC, NMI, ARI, top-5 after Hungarian matching (majority-vote accuracy when there
are more clusters than classes), a row-normalised confusion matrix, optionally a grid of each
cluster's prototype images, and with --predict a CSV row per image. Pretext models: top-1/5/20
neighbour accuracy, 1-NN and weighted-kNN accuracy (K = 30, 200 and the config's). Outputs go next to
the model (--output to change).
"""
import csv
import json
import os

import numpy as np
import torch

from data import complete_from_train, get_dataset, outside_image_size, same_data
from data.base import IMAGE_EXTENSIONS, FileDataset
from data.loaders import eval_loader
from data.transforms import val_transform
from methods import STAGES
from models import contrastive_model_for, get_clustering_model
from stages.run import prepare, run_cli
from utils.checkpoint import atomic_write_text, load_weights, read_model_file
from utils.config import base_parser, parse_args, read_layers
from utils.errors import UserError, one_line
from utils.features import knn_accuracy, predict, pretext_features
from utils.metrics import cluster_metrics, contingency, hungarian_mapping
from utils.neighbors import mine_neighbors, neighbor_accuracy
from utils.plots import save_confusion_matrix, save_prototype_grid

def config_stage(paths, kind):
    """The stage whose schema reads the experiment config: the one its setup belongs to; a file whose setups sit
    in stage sections (configs/image_folder.yml) is read as the model's stage."""
    setup = None
    for path in paths:
        for _, data in read_layers(path, 'experiment'):
            setup = data.get('setup', setup)
    if setup is None:
        return 'pretext' if kind == 'pretext' else 'clustering'
    stage = next((stage for stage, registry in STAGES.items() if setup in registry), None)
    if stage is None:
        valid = ', '.join(name for registry in STAGES.values() for name in registry)
        raise UserError(f"the experiment config's setup '{setup}' is not one of {valid}")
    return stage


def evaluate_pretext(cfg, model, device, out_dir):
    evaluation = val_transform(cfg.transformation_kwargs)
    train_set = get_dataset(cfg, 'train', evaluation)
    train_feats, train_targets = pretext_features(model, eval_loader(train_set, cfg), cfg, device)
    val_set = get_dataset(cfg, 'val', evaluation)
    val_feats, val_targets = pretext_features(model, eval_loader(val_set, cfg), cfg, device)
    if not val_set.has_labels:
        raise UserError('pretext evaluation reports neighbour and kNN accuracy, which need labels; '
                        f'{cfg.val_db_name} has none')
    indices = mine_neighbors(val_feats, 20, device=device)[0]
    result = {f'top{k}_neighbor_acc': neighbor_accuracy(indices[:, :k + 1], val_targets) for k in (1, 5, 20)}
    same = same_data(cfg)
    t = cfg.get('knn_temperature', 0.1)
    # 1-NN, and weighted kNN at instance discrimination's K = 200, SNCA's K = 30 and the config's own K
    for k in sorted({1, 30, 200, cfg.get('knn_k', 100)}):
        name = 'nn1_acc' if k == 1 else f'knn{k}_acc'
        result[name] = knn_accuracy(train_feats, train_targets, val_feats, val_targets, k, t, exclude_self=same)
    return result


def prototypes(pred, probs, val_set, k):
    """Per cluster: among its most confident samples, the k nearest to their mean backbone feature."""
    confidence, assigned = probs.max(1)
    rows = []
    for c in range(probs.shape[1]):
        members = torch.nonzero(assigned == c).flatten()
        if len(members) == 0:
            rows.append([])
            continue
        confident = members[confidence[members].argsort(descending=True)[:max(k, len(members) // 10)]]
        feats = pred['features'][confident]
        order = (feats - feats.mean(0)).norm(dim=1).argsort()[:k]
        rows.append([val_set.get_image(int(i)) for i in confident[order]])
    return rows


def evaluate_clustering(cfg, model, device, out_dir, args):
    try:
        val_set = get_dataset(cfg, 'val', val_transform(cfg.transformation_kwargs))
    except UserError as e:
        if not args.predict_paths:
            raise
        print(f'note: no val split ({one_line(e)}); predicting only, with cluster ids (naming clusters by class '
              'needs the labelled val split)')
        return {'predictions': predict_files(cfg, model, device, args.predict_paths, None, [], out_dir)}
    if val_set.has_labels and val_set.classes and cfg.num_classes != len(val_set.classes):
        print(f'note: the model has {cfg.num_classes} clusters for {len(val_set.classes)} classes: ACC counts the '
              'samples of unmatched clusters (or classes) as wrong; majority_acc maps every cluster to a class')
    pred = predict(model, eval_loader(val_set, cfg), device)
    probs = pred['probs'][0]
    clusters = probs.argmax(1).numpy()
    sizes = np.bincount(clusters, minlength=probs.shape[1])
    result, mapping = {'cluster_sizes': sizes.tolist()}, None
    names = [f'cluster {c}' for c in range(probs.shape[1])]
    if val_set.has_labels:
        num_classes = len(val_set.classes)
        result.update(cluster_metrics(clusters, pred['targets'], probs.numpy(), num_classes))
        mapping = hungarian_mapping(clusters, pred['targets'], probs.shape[1], num_classes)
        names = [f'{c}: {val_set.classes[m]}' if m >= 0 else f'{c}: (unmatched)' for c, m in enumerate(mapping)]
        matched = np.where(mapping[clusters] >= 0, mapping[clusters], num_classes)
        counts = contingency(pred['targets'], matched, num_classes, num_classes + 1)[:, :num_classes]
        save_confusion_matrix(counts, val_set.classes, os.path.join(out_dir, 'confusion_matrix.png'))
    else:
        print('the val split has no labels: metrics need labels; writing cluster sizes (and prototypes)')
    if args.visualize_prototypes:
        save_prototype_grid(prototypes(pred, probs, val_set, args.prototypes), names,
                            os.path.join(out_dir, 'prototypes.png'))
    if args.predict_paths:
        result['predictions'] = predict_files(cfg, model, device, args.predict_paths, mapping, val_set.classes,
                                              out_dir)
    return result


def prediction_paths(target):
    """The images to predict: `target` itself, or every image under the folder (recursively)."""
    if os.path.isdir(target):
        paths = sorted(os.path.join(d, f) for d, _, files in os.walk(target) for f in files
                       if f.lower().endswith(IMAGE_EXTENSIONS))
    elif os.path.isfile(target):
        paths = [target]
    else:
        raise UserError(f'--predict: no such file or folder: {target}')
    if not paths:
        raise UserError(f'--predict: no images ({", ".join(IMAGE_EXTENSIONS)}) under {target}')
    return paths


def predict_files(cfg, model, device, paths, mapping, classes, out_dir):
    """One CSV row per image: path, cluster, matched class (when the val split has labels), confidence. Each image
    is resized as the training images were (data.outside_image_size)."""
    files = FileDataset(paths, [-1] * len(paths), [], cfg.channels, val_transform(cfg.transformation_kwargs),
                        outside_image_size(cfg))
    probs = predict(model, eval_loader(files, cfg), device)['probs'][0]
    confidence, cluster = probs.max(1)
    lines = [['path', 'cluster', 'class', 'confidence']]
    for path, c, p in zip(paths, cluster.tolist(), confidence.tolist()):
        cls = classes[mapping[c]] if mapping is not None and mapping[c] >= 0 else ''
        lines.append([path, c, cls, f'{p:.4f}'])
    out = os.path.join(out_dir, 'predictions.csv')
    with open(out + '.tmp', 'w', newline='') as f:
        csv.writer(f).writerows(lines)
    os.replace(out + '.tmp', out)
    return out


def main(argv=None):
    parser = base_parser('Evaluate a pretext, clustering or self-label model.', resume=False)
    parser.add_argument('--model', required=True, help='model.pth.tar or checkpoint.pth.tar (ours, SCAN, NNM)')
    parser.add_argument('--visualize_prototypes', action='store_true', help='write prototypes.png')
    parser.add_argument('--prototypes', type=int, default=5, help='prototype images per cluster')
    parser.add_argument('--predict', default=None, help='an image or a folder of images to assign to clusters')
    parser.add_argument('--output', default=None, help='folder for the outputs (default: the model\'s folder)')
    args = parse_args(parser, argv)
    return run_cli(lambda: run(args))


def run(args):
    found = read_model_file(args.model)
    cfg, _, device = prepare(args, config_stage(args.config_exp, found.kind))
    complete_from_train(cfg)
    args.predict_paths = prediction_paths(args.predict) if args.predict else None  # checked before writing
    out_dir = args.output or os.path.dirname(os.path.abspath(args.model))
    os.makedirs(out_dir, exist_ok=True)
    if found.kind == 'pretext':
        model = contrastive_model_for(cfg, found.state)
        load_weights(model, found.state, f'pretext model {args.model}')
        result = evaluate_pretext(cfg, model.to(device), device, out_dir)
    else:
        if found.head is None and len(found.heads) > 1:
            print(f'note: {args.model} names no selected head; evaluating head 0 of {len(found.heads)}')
        cfg.num_classes, cfg.num_heads = found.num_clusters, 1  # the checkpoint's head says how many clusters
        model = get_clustering_model(cfg, found.state)
        load_weights(model, found.single_head(), f'clustering model {args.model}')
        result = {'head': found.head or 0, **evaluate_clustering(cfg, model.to(device), device, out_dir, args)}
    result = {'model': os.path.abspath(args.model), 'kind': found.kind, 'dataset': cfg.val_db_name,
              'split': cfg.val_split, **result}
    atomic_write_text(os.path.join(out_dir, 'eval.json'), json.dumps(result, indent=2) + '\n')
    print_table(result)
    return result


def print_table(result):
    rows = [(k, v) for k, v in result.items() if isinstance(v, float)]
    where = f"split '{result['split']}'" if result['split'] else 'all images'
    if result['kind'] == 'pretext':  # simclr.py's metrics.json holds the train split's neighbour accuracy
        where += ", val; simclr.py's metrics.json reports the train split"
    print(f"{result['kind']} model, {result['dataset']} ({where}):")
    for k, v in rows:
        print(f'  {k:<20} {v:.4f}')
    if 'cluster_sizes' in result:
        print(f"  cluster sizes        {result['cluster_sizes']}")


if __name__ == '__main__':
    main()
