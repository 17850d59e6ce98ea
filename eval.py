"""Evaluate a pretext, clustering or self-label model, ours or downloaded from SCAN / NNM.

    python eval.py --config_exp configs/scan/scan_cifar10.yml --model results/cifar-10/scan/model.pth.tar \
        [--visualize_prototypes] [--predict PATH_OR_FOLDER]

Clustering models: ACC, NMI, ARI, top-5 after Hungarian matching (majority-vote accuracy when there
are more clusters than classes), a row-normalised confusion matrix, optionally a grid of each
cluster's prototype images, and with --predict a CSV row per image. --report writes report.html (a map of the
images, the clusters that lie close, a gallery per cluster) and a names template; --names FILE names clusters and
merges those of the same name (evaluation/names.py); --export DIR writes the images as folders, one per cluster
(evaluation/export.py). Pretext models: top-1/5/20 neighbour accuracy, 1-NN and weighted-kNN accuracy (K = 30, 200
and the config's). Outputs go next to the model (--output to change).
"""
import csv
import json
import os
import re

import numpy as np
import torch

from data import complete_from_train, get_dataset, outside_image_size, same_data
from data.base import IMAGE_EXTENSIONS, FileDataset, open_image
from data.folder import images_under
from data.loaders import eval_loader
from data.transforms import val_transform
from evaluation.export import check_target, export
from evaluation.features import knn_accuracy, predict, pretext_features
from evaluation.html_report import write_report
from evaluation.map import close_clusters, map_2d
from evaluation.metrics import cluster_metrics, contingency, hungarian_mapping
from evaluation.names import Naming, read_names, write_names_template
from evaluation.report import FOLDERS as STAGE_FOLDERS, stage_metrics
from methods import REGISTRIES
from models import backbone_label, contrastive_model_for, get_clustering_model
from models.files import holds_projection, read_model_file
from models.models import HeadsOnFeatures
from neighbors.num_clusters import spread_words
from neighbors.search import mine_neighbors, neighbor_accuracy
from stages.feature_cache import cached
from stages.run import prepare, run_cli
from utils.checkpoint import atomic_write_text, load_weights
from utils.config import base_parser, parse_args, read_layers
from utils.errors import UserError, one_line
from utils.plots import save_confusion_matrix, save_prototype_grid
from utils.stages import STAGES


def config_stage(paths, kind):
    """The stage whose schema reads the experiment config: the one its setup belongs to; a file whose setups sit
    in stage sections (configs/image_folder.yml) is read as the model's stage."""
    setup = None
    for path in paths:
        for _, data in read_layers(path, 'experiment'):
            setup = data.get('setup', setup)
    if setup is None:
        return 'pretext' if kind == 'pretext' else 'clustering'
    stage = next((stage for stage, registry in REGISTRIES.items() if setup in registry), None)
    if stage is None:
        valid = ', '.join(name for registry in REGISTRIES.values() for name in registry)
        raise UserError(f"the experiment config's setup '{setup}' is not one of {valid}: give the config the model "
                        'was trained with (--config_exp)')
    return stage


def evaluate_pretext(cfg, model, device, out_dir):
    evaluation = val_transform(cfg.transformation_kwargs)
    train_set = get_dataset(cfg, 'train', evaluation)
    train_feats, train_targets = pretext_features(model, eval_loader(train_set, cfg), cfg, device)
    val_set = get_dataset(cfg, 'val', evaluation)
    val_feats, val_targets = pretext_features(model, eval_loader(val_set, cfg), cfg, device)
    if not val_set.has_labels:
        raise UserError('pretext evaluation reports neighbour and kNN accuracy, which need labels, and '
                        f'{cfg.val_db_name} has none: evaluate a clustering model instead, or a labelled val split')
    indices = mine_neighbors(val_feats, 20, device=device)[0]
    result = {f'top{k}_neighbor_acc': neighbor_accuracy(indices[:, :k + 1], val_targets) for k in (1, 5, 20)}
    same = same_data(cfg)
    t = cfg.get('knn_temperature', 0.1)
    # 1-NN, and weighted kNN at instance discrimination's K = 200, SNCA's K = 30 and the config's own K
    for k in sorted({1, 30, 200, cfg.get('knn_k', 100)}):
        name = 'nn1_acc' if k == 1 else f'knn{k}_acc'
        result[name] = knn_accuracy(train_feats, train_targets, val_feats, val_targets, k, t, exclude_self=same)
    return result


def prototype_indices(pred, probs, k):
    """Per cluster: among its most confident samples, the k nearest to their mean backbone feature (indices)."""
    confidence, assigned = probs.max(1)
    rows = []
    for c in range(probs.shape[1]):
        members = torch.nonzero(assigned == c).flatten()
        if len(members) == 0:
            rows.append([])
            continue
        confident = members[confidence[members].argsort(descending=True)[:max(k, len(members) // 10)]]
        feats = pred['features'][confident]
        rows.append(confident[(feats - feats.mean(0)).norm(dim=1).argsort()[:k]].tolist())
    return rows


THUMBNAIL = 128  # pixels, the longer side of a gallery image


def gallery_image(dataset, i):
    """What report.html shows of image i: its file (transparency flattened as in training) shrunk to THUMBNAIL, not
    the small training copy scaled up; the dataset's image when it has no file."""
    paths = getattr(dataset, 'paths', None)
    if paths is None or not os.path.isfile(paths[i]):
        return dataset.get_image(i)
    img = open_image(paths[i])
    img.thumbnail((THUMBNAIL, THUMBNAIL))
    return img


def cluster_gallery(pred, probs, val_set, mapping, naming, k=8, seed=0):
    """report.html's galleries: per non-empty cluster its name, matched class (when labelled), prototypes, a random
    sample and its least confident members, each image with its confidence, true class (when labelled) and whether
    that class is the cluster's."""
    confidence, assigned = probs.max(1)
    labelled = val_set.has_labels and bool(val_set.classes)
    rng = np.random.default_rng(seed)
    typical = prototype_indices(pred, probs, k)

    def item(i, c):
        truth = int(pred['targets'][i]) if labelled else None
        return {'image': gallery_image(val_set, int(i)), 'confidence': float(confidence[i]),
                'truth': val_set.classes[truth] if labelled else '',
                'wrong': labelled and mapping is not None and mapping[c] >= 0 and mapping[c] != truth}

    out = []
    for c in range(probs.shape[1]):
        members = torch.nonzero(assigned == c).flatten().numpy()
        if len(members) == 0:
            continue
        sample = np.sort(rng.choice(members, min(k, len(members)), replace=False))
        least = members[np.argsort(confidence[members].numpy(), kind='stable')[:k]]
        match = '' if mapping is None else val_set.classes[mapping[c]] if mapping[c] >= 0 else 'unmatched'
        out.append({'id': naming.first[c], 'name': naming.names[c], 'match': match, 'size': len(members),
                    'confidence': float(confidence[members].mean()),
                    'strips': [(title, [item(i, c) for i in indices]) for title, indices in (
                        ('prototypes: the most typical members', typical[c]), ('a random sample', sample),
                        ('the least confident members', least))]})
    return out


def evaluate_clustering(cfg, model, device, out_dir, args, naming):
    try:
        val_set = get_dataset(cfg, 'val', val_transform(cfg.transformation_kwargs))
    except UserError as e:
        if not args.predict_paths or args.export:  # --export writes the val split's own files
            raise
        print(f'note: no val split ({one_line(e)}); predicting only, with cluster ids (naming clusters by class '
              'needs the labelled val split)' + ('; no report without its images' if args.report else ''))
        return {'predictions': predict_files(cfg, model, device, args, None, [], out_dir, naming)}
    if val_set.has_labels and val_set.classes and cfg.num_classes != len(val_set.classes):
        print(f'note: the model has {cfg.num_classes} clusters for {len(val_set.classes)} classes: ACC counts the '
              'samples of unmatched clusters (or classes) as wrong; majority_acc maps every cluster to a class')
    if args.export:
        check_target(args.export, export_sources(val_set), args.force)
    pred = predictions(model, val_set, cfg, device)
    probs = naming.merge_probs(pred['probs'][0])  # named alike: one cluster
    clusters = probs.argmax(1).numpy()
    sizes = np.bincount(clusters, minlength=probs.shape[1])
    result, mapping = {'cluster_sizes': sizes.tolist()}, None
    if naming.given:
        result['cluster_names'] = {naming.names[m]: naming.members(m) for m in range(len(naming.names))}
    names = naming.names
    if val_set.has_labels:
        num_classes = len(val_set.classes)
        result.update(cluster_metrics(clusters, pred['targets'], probs.numpy(), num_classes))
        mapping = hungarian_mapping(clusters, pred['targets'], probs.shape[1], num_classes)
        names = [f'{n}: {val_set.classes[m]}' if m >= 0 else f'{n}: (unmatched)' for n, m in zip(names, mapping)]
    elif not predicting_only(args):
        print('the val split has no labels: metrics need labels; writing cluster sizes (and prototypes)')
    if predicting_only(args):  # the val split named the clusters; the run's evaluation files stay as they are
        result['predictions'] = predict_files(cfg, model, device, args, mapping, val_set.classes, out_dir, naming,
                                              (val_set, probs))
        return {**result, **export_clusters(args, val_set, probs, naming)}
    if val_set.has_labels:
        confusion_matrix(pred['targets'], clusters, mapping, val_set.classes, naming, out_dir)
    if args.visualize_prototypes:
        rows = [[val_set.get_image(i) for i in row] for row in prototype_indices(pred, probs, args.prototypes)]
        save_prototype_grid(rows, names, os.path.join(out_dir, 'prototypes.png'))
    if args.predict_paths:
        result['predictions'] = predict_files(cfg, model, device, args, mapping, val_set.classes, out_dir, naming,
                                              (val_set, probs))
    result.update(export_clusters(args, val_set, probs, naming))
    if args.report:
        write_names_template(os.path.join(out_dir, NAMES_TEMPLATE), naming, np.bincount(
            pred['probs'][0].argmax(1).numpy(), minlength=len(naming.groups)))
        result['report'] = report(cfg, args, out_dir, result, cluster_gallery(pred, probs, val_set, mapping, naming),
                                  map_entry(pred, probs, val_set, naming, cfg), close_clusters_named(probs, naming))
    return result


NAMES_TEMPLATE = 'names_template.yml'


def export_clusters(args, val_set, probs, naming):
    """--export: the val split's images into folders by cluster name (evaluation/export.py); {'export': counts}."""
    if not args.export:
        return {}
    confidence, clusters = probs.max(1)
    counts = export(args.export, export_sources(val_set), [naming.first[c] for c in clusters.tolist()],
                    [naming.names[c] for c in clusters.tolist()], confidence.numpy(), args.min_confidence, args.copy,
                    args.force)
    print(f'exported {len(clusters)} images to {args.export}: {counts}')
    return {'export': counts}


def export_sources(val_set):
    """The val split's image files, which --export links or copies."""
    paths = getattr(val_set, 'paths', None)
    if not paths:
        raise UserError('--export writes the val split\'s image files into folders; this dataset has no files (an '
                        'image folder has): leave out --export')
    return paths


def confusion_matrix(targets, clusters, mapping, classes, naming, out_dir):
    """confusion_matrix.png: rows the true classes; columns the matched classes, or with named clusters the
    clusters by name (ordered by their matched class)."""
    path = os.path.join(out_dir, 'confusion_matrix.png')
    num_classes = len(classes)
    if not naming.given:
        matched = np.where(mapping[clusters] >= 0, mapping[clusters], num_classes)
        counts = contingency(targets, matched, num_classes, num_classes + 1)[:, :num_classes]
        return save_confusion_matrix(counts, classes, path)
    order = np.argsort(np.where(mapping >= 0, mapping, num_classes), kind='stable')
    counts = contingency(targets, clusters, num_classes, len(naming.names))[:, order]
    save_confusion_matrix(counts, classes, path, [naming.names[c] for c in order])


def map_entry(pred, probs, val_set, naming, cfg):
    """The report's map (evaluation/map.py) of the features the heads read: its coordinates and what each point
    shows, for write_report."""
    confidence, clusters = probs.max(1)
    paths = getattr(val_set, 'paths', None)
    labels = paths if paths else [f'image {i}' for i in range(len(val_set))]
    coords = map_2d(pred['features'].numpy(), seed=cfg.get('seed') or 0)
    return {'coords': coords, 'clusters': clusters.numpy(), 'names': naming.names, 'confidences': confidence.numpy(),
            'labels': labels, 'image': (lambda i: paths[i]) if paths else val_set.get_image}


def close_clusters_named(probs, naming):
    return [(naming.names[a], [(naming.names[b], shared) for b, shared in others])
            for a, others in close_clusters(probs)]


def clusters_words(run_dir, k):
    """The number of clusters, and how sure its estimate was when the clustering stage estimated it."""
    estimate = dict(stage_metrics(run_dir)).get(STAGES['clustering'].folder, {}).get('k_estimate')
    return f'{k} (estimated: {spread_words(estimate)})' if estimate and estimate.get('k_spread') else k


def report(cfg, args, out_dir, result, clusters, map_args, close):
    """report.html next to the outputs; the run's stage folders are the model's folder's siblings."""
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(args.model)))
    plots = [('confusion matrix', os.path.join(out_dir, 'confusion_matrix.png')),
             ('number of clusters (scan.py)', os.path.join(run_dir, 'scan', 'num_clusters.png'))]
    plots += [(f'{stage} training', os.path.join(run_dir, stage, 'training_curve.png')) for stage in STAGE_FOLDERS]
    data = cfg.val_db_name + (f" ({cfg.db_kwargs['path']})" if (cfg.db_kwargs or {}).get('path') else '')
    config = [('model', os.path.abspath(args.model)), ('data', data), ('split', cfg.val_split or 'all images'),
              ('backbone', backbone_label(cfg)), ('clusters', clusters_words(run_dir, cfg.num_classes))]
    metrics = [(k, v) for k, v in result.items() if isinstance(v, float)]
    predictions = os.path.basename(result['predictions']) if result.get('predictions') else None
    return write_report(out_dir, run_dir, f'Clusters of {os.path.basename(run_dir)}',
                        f'{len(clusters)} non-empty clusters of {sum(result["cluster_sizes"])} images.', config,
                        metrics, result['cluster_sizes'], clusters, plots, predictions, map_args, close,
                        NAMES_TEMPLATE)


def prediction_paths(target):
    """The images to predict: `target` itself, or every image under the folder (recursively)."""
    if os.path.isdir(target):
        paths = images_under(target)
    elif os.path.isfile(target):
        paths = [target]
    else:
        raise UserError(f'--predict: no such file or folder: {target}')
    if not paths:
        raise UserError(f'--predict: no images ({", ".join(IMAGE_EXTENSIONS)}) under {target}')
    return paths


def predictions_file(out_dir, target):
    """<out_dir>/predictions_<name of the --predict file or folder>.csv: predictions of other images never replace
    these."""
    name = os.path.splitext(os.path.basename(os.path.normpath(os.path.abspath(target))))[0]
    return os.path.join(out_dir, f"predictions_{re.sub(r'[^A-Za-z0-9._-]', '_', name) or 'images'}.csv")


def predicting_only(args):
    """--predict without --report or --visualize_prototypes: only the predictions file is written."""
    return bool(args.predict) and not (args.report or args.visualize_prototypes)


def planned_outputs(args, out_dir, kind):
    """The files this call may write, known before any data is read: confusion_matrix.png is listed although an
    unlabelled val split gets none."""
    if kind != 'pretext' and predicting_only(args):
        return [predictions_file(out_dir, args.predict)]
    names = ['eval.json']
    if kind != 'pretext':
        names += ['confusion_matrix.png'] + ['prototypes.png'] * args.visualize_prototypes
        names += ['report.html', 'map.png', NAMES_TEMPLATE] * args.report
    paths = [os.path.join(out_dir, n) for n in names]
    return paths + ([predictions_file(out_dir, args.predict)] if args.predict and kind != 'pretext' else [])


def refuse_overwrite(paths, force):
    """Nothing an earlier call wrote is replaced without --force: checked before anything is computed."""
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not force:
        names = ', '.join(os.path.basename(p) for p in existing)
        raise UserError(f'{os.path.dirname(existing[0])} already holds {names} from an earlier eval.py; give '
                        '--output DIR to write elsewhere, or --force to replace them')


def predictions(model, dataset, cfg, device, store=True):
    """evaluation.features.predict over `dataset`; with cache_features (a frozen trunk: a pretrained backbone's run) the
    heads read the trunk's features from the pretext run's cache, computed there when missing (and kept, with
    `store`). The cache key holds the trunk's weights: a trunk that was fine-tuned never reads another's."""
    if not cfg.get('cache_features'):
        return predict(model, eval_loader(dataset, cfg), device)
    return predict(HeadsOnFeatures(model), eval_loader(cached(model, dataset, cfg, device, store), cfg), device)


PREDICT_CHUNK = 4096  # --predict images per pass: memory stays that of one chunk's features however many there are


def predict_files(cfg, model, device, args, mapping, classes, out_dir, naming, val=None):
    """One CSV row per --predict image: path, cluster, its name, matched class (when the val split has labels),
    confidence, into predictions_file, written chunk by chunk of PREDICT_CHUNK images (the file appears whole, when
    all are done). Each image is resized as the training images were (data.outside_image_size). `val`: (the val
    split, its merged probabilities), reused when --predict names the val split's own files."""
    paths = args.predict_paths
    if val is not None and [os.path.abspath(p) for p in getattr(val[0], 'paths', [])] == [
            os.path.abspath(p) for p in paths]:
        chunks = [(paths, val[1])]
    else:
        transform, size = val_transform(cfg.transformation_kwargs), outside_image_size(cfg)

        def merged_probs(part):
            files = FileDataset(part, [-1] * len(part), [], cfg.channels, transform, size)
            return naming.merge_probs(predictions(model, files, cfg, device, store=False)['probs'][0])
        chunks = ((part, merged_probs(part)) for part in (paths[i:i + PREDICT_CHUNK]
                                                          for i in range(0, len(paths), PREDICT_CHUNK)))
    out = write_predictions(predictions_file(out_dir, args.predict), chunks, naming, mapping, classes)
    print(f'predictions of {len(paths)} images: {out}')
    return out


def write_predictions(out, chunks, naming, mapping=None, classes=()):
    """The predictions CSV (path, cluster, name, matched class, confidence) from (paths, merged probs [n, C'])
    chunks, one at a time; a merged cluster is given by its lowest id. The file appears whole, when all are
    written."""
    with open(out + '.tmp', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['path', 'cluster', 'name', 'class', 'confidence'])
        for part, probs in chunks:
            confidence, cluster = probs.max(1)
            for path, c, p in zip(part, cluster.tolist(), confidence.tolist()):
                cls = classes[mapping[c]] if mapping is not None and mapping[c] >= 0 else ''
                writer.writerow([path, naming.first[c], naming.names[c], cls, f'{p:.4f}'])
    os.replace(out + '.tmp', out)
    return out


def main(argv=None):
    parser = base_parser('Evaluate a pretext, clustering or self-label model.', resume=False)
    parser.add_argument('--model', required=True, help='model.pth.tar or checkpoint.pth.tar (ours, SCAN, NNM)')
    parser.add_argument('--visualize_prototypes', action='store_true', help='write prototypes.png')
    parser.add_argument('--prototypes', type=int, default=5, help='prototype images per cluster')
    parser.add_argument('--predict', default=None, help='an image or a folder of images to assign to clusters')
    parser.add_argument('--output', default=None, help='folder for the outputs (default: the model\'s folder)')
    parser.add_argument('--force', action='store_true', help='replace outputs an earlier eval.py wrote there')
    parser.add_argument('--report', action='store_true', help='write report.html: metrics, plots, a map of the '
                        'images and a gallery of every cluster (clustering models), and names_template.yml')
    parser.add_argument('--names', default=None, help='a YAML or CSV file of cluster id to name; ids with the same '
                        'name are merged into one cluster')
    parser.add_argument('--export', default=None, metavar='DIR', help='write the val split\'s images as '
                        'DIR/<cluster name>/<file> (symbolic links) and DIR/index.csv')
    parser.add_argument('--copy', action='store_true', help='--export: copies instead of symbolic links')
    parser.add_argument('--min-confidence', type=float, default=0.0, help='--export: images under this '
                        'confidence go to DIR/_unsure/')
    args = parse_args(parser, argv)
    return run_cli(lambda: run(args))


def run(args):
    found = read_model_file(args.model)
    stage = config_stage(args.config_exp, found.kind)
    if stage == 'clustering' and found.kind != 'pretext':  # where the heads sit is the file's, not the config's
        args.overrides = [*args.overrides, f"heads_on={'projection' if holds_projection(found.state) else 'backbone'}"]
    cfg, _, device = prepare(args, stage)
    complete_from_train(cfg)
    args.predict_paths = prediction_paths(args.predict) if args.predict else None  # checked before writing
    naming = Naming(found.num_clusters, read_names(args.names, found.num_clusters) if args.names else None) \
        if found.kind != 'pretext' else None
    if not 0 <= args.min_confidence <= 1:
        raise UserError(f'--min-confidence is a probability from 0 to 1, not {args.min_confidence}')
    if args.export:
        check_target(args.export, [], args.force)
    out_dir = args.output or os.path.dirname(os.path.abspath(args.model))
    refuse_overwrite(planned_outputs(args, out_dir, found.kind), args.force)
    os.makedirs(out_dir, exist_ok=True)
    if found.kind == 'pretext':
        if args.names or args.export:
            raise UserError('--names and --export are for clusters: give a clustering or self-label model')
        model = contrastive_model_for(cfg, found.state)
        load_weights(model, found.state, f'pretext model {args.model}')
        result = evaluate_pretext(cfg, model.to(device), device, out_dir)
        if args.report:
            print('note: --report shows clusters: give a clustering or self-label model')
    else:
        if found.head is None and len(found.heads) > 1:
            print(f'note: {args.model} names no selected head; evaluating head 0 of {len(found.heads)}')
        cfg.num_classes, cfg.num_heads = found.num_clusters, 1  # the checkpoint's head says how many clusters
        model = get_clustering_model(cfg, found.state)
        load_weights(model, found.single_head(), f'clustering model {args.model}')
        result = {'head': found.head or 0, **evaluate_clustering(cfg, model.to(device), device, out_dir, args,
                                                                 naming)}
    result = {'model': os.path.abspath(args.model), 'kind': found.kind, 'dataset': cfg.val_db_name,
              'split': cfg.val_split, **result}
    if found.kind != 'pretext' and predicting_only(args):
        return result
    atomic_write_text(os.path.join(out_dir, 'eval.json'), json.dumps(result, indent=2) + '\n')
    print_table(result)
    if result.get('report'):
        print(f"report: {result['report']} (open it in a browser)")
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
