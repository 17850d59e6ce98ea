"""Feature files of feature_extract.py and nn_maker.py.

Our form: NAME.npy (float32 [N, D], rows L2-normalised) next to NAME.csv with columns index, path, label.
The original tools' form: one CSV with columns path, label, f0 ... f{D-1}. Both are read; both can be written.
"""
import csv
import io
import os

import numpy as np

from utils.checkpoint import atomic_save_npy, atomic_write_text
from utils.errors import UserError


def csv_text(rows):
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def write_features(stem, features, paths, labels, csv_features=False):
    """stem.npy + stem.csv (and, with csv_features, stem_features.csv in the original form)."""
    features = np.asarray(features, dtype=np.float32)
    atomic_save_npy(features, stem + '.npy')
    atomic_write_text(stem + '.csv', csv_text([['index', 'path', 'label']]
                                               + [[i, p, l] for i, (p, l) in enumerate(zip(paths, labels))]))
    if csv_features:
        header = ['path', 'label'] + [f'f{j}' for j in range(features.shape[1])]
        rows = [[p, l] + [f'{v:.7g}' for v in f] for p, l, f in zip(paths, labels, features)]
        atomic_write_text(stem + '_features.csv', csv_text([header] + rows))


def read_features(csv_path, db_root=None, what='features'):
    """(paths, labels, features [N, D] L2-normalised) from either form; relative paths are taken under db_root,
    and every path must exist."""
    if not os.path.isfile(csv_path):
        raise UserError(f'{what} file not found: {csv_path}; write it with feature_extract.py')
    with open(csv_path, newline='') as f:
        rows = list(csv.reader(f))
    if not rows or 'path' not in rows[0]:
        raise UserError(f'{csv_path} has no header with a path column; write it with feature_extract.py')
    header, rows = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    paths = [r[col['path']] for r in rows]
    labels = [r[col['label']] if 'label' in col else '' for r in rows]
    feature_cols = [i for i, name in enumerate(header) if name.startswith('f') and name[1:].isdigit()]
    if feature_cols:
        features = np.array([[float(r[i]) for i in feature_cols] for r in rows], dtype=np.float32)
    else:
        npy = os.path.splitext(csv_path)[0] + '.npy'
        if not os.path.isfile(npy):
            raise UserError(f'{csv_path} has no feature columns and {npy} is missing')
        features = np.load(npy).astype(np.float32)
    if len(features) != len(paths):
        raise UserError(f'{csv_path} lists {len(paths)} images but holds {len(features)} feature rows')
    if db_root:
        paths = [p if os.path.isabs(p) else os.path.join(db_root, p) for p in paths]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise UserError(f'{len(missing)} image paths in {csv_path} no longer exist (e.g. {missing[0]}); '
                        'set the db root (--target_db / --near_db) or re-extract the features')
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return paths, labels, features / np.maximum(norms, 1e-12)
