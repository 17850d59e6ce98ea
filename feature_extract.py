"""Extract the L2-normalised pretext features of every image of a dataset or a folder.

    python feature_extract.py --config_env configs/env.yml --config_exp configs/pretext/simclr_cifar10_jpg.yml \
        --pretext_model results/cifar10-jpg/pretext/model.pth.tar --db path/to/images --save_feature_name pool

--db is a folder (`<class>/*.jpg` trees are labelled by folder, flat folders are unlabelled) or a dataset
name of the config (its train_split unless --split). Writes NAME.npy (float32 [N, D]) and NAME.csv
(index, path, label); --csv_features also writes NAME_features.csv in the original tools' form
(path, label, f0 ... f{D-1}). nn_maker.py reads either.
"""
import os

from data import DATASETS, build_dataset, complete_from_train, outside_image_size
from data.loaders import eval_loader
from data.transforms import val_transform
from evaluation.features import pretext_features
from models import get_contrastive_model
from models.files import load_pretext_model
from stages.run import prepare, run_cli
from utils.config import base_parser, parse_args
from utils.errors import UserError
from utils.feature_files import write_features
from utils.logger import progress


def open_db(cfg, db, split):
    """--db as a dataset under the evaluation transform, and the folder paths are written relative to (or None).
    A folder's images are resized as the training images were (data.outside_image_size)."""
    complete_from_train(cfg)
    transform = val_transform(cfg.transformation_kwargs)
    if os.path.isdir(db):
        size = {'image_size': outside_image_size(cfg)}
        return build_dataset('image_folder', db, '', size, cfg.channels, False, transform), os.path.abspath(db)
    if db in DATASETS:
        return build_dataset(db, cfg.data_root, split or cfg.train_split, cfg.db_kwargs, cfg.channels, cfg.download,
                             transform), None
    raise UserError(f"--db {db!r} is neither a folder nor a dataset ({', '.join(DATASETS)})")


def main(argv=None):
    parser = base_parser('Extract pretext features of a dataset or an image folder.', resume=False)
    parser.add_argument('--pretext_model', required=True, help='pretext model.pth.tar (ours or SCAN\'s)')
    parser.add_argument('--db', required=True, help='an image folder, or a dataset name')
    parser.add_argument('--split', default=None, help='split of a named dataset (default: train_split)')
    parser.add_argument('--save_feature_name', required=True, help='output path without extension')
    parser.add_argument('--csv_features', action='store_true', help='also write NAME_features.csv (original form)')
    args = parse_args(parser, argv)
    return run_cli(lambda: run(args))


def run(args):
    cfg, _, device = prepare(args, 'pretext')
    model = get_contrastive_model(cfg)
    load_pretext_model(model, args.pretext_model)
    dataset, root = open_db(cfg, args.db, args.split)
    loader = eval_loader(dataset, cfg)
    features, _ = pretext_features(model.to(device), progress(loader, len(loader), 'features'), cfg, device)
    if hasattr(dataset, 'paths'):
        paths = [os.path.relpath(p, root) if root else p for p in dataset.paths]
    else:
        paths = [f'{args.db}/{args.split or cfg.train_split}/{i}' for i in range(len(dataset))]
    labels = [dataset.classes[t] if t >= 0 and dataset.classes else '' for t in dataset.targets.tolist()]
    folder = os.path.dirname(os.path.abspath(args.save_feature_name))
    os.makedirs(folder, exist_ok=True)
    write_features(args.save_feature_name, features.numpy(), paths, labels, args.csv_features)
    print(f'wrote {len(paths)} x {features.shape[1]} features: {args.save_feature_name}.npy / .csv'
          + (f' (paths relative to {root})' if root else ''))
    return args.save_feature_name


if __name__ == '__main__':
    main()
