"""Cluster names, and merges through them (eval.py --names FILE).

A names file maps cluster ids to names, as YAML (`3: cats`) or CSV (`3,cats`; a header line `cluster,name` is
allowed). Ids given the same name are one cluster from then on: its probability is the sum of theirs, so metrics,
the confusion matrix, the report, the predictions and the export all see the merged labelling. Ids the file leaves
out keep their own cluster, named `cluster <id>`. A malformed line or an id the model does not have stops with one
line that names the line of the file.
"""
import csv
import json
import os

import numpy as np
import torch
import yaml

from utils.checkpoint import atomic_write_text
from utils.errors import UserError


class Naming:
    """The merged clusters of a model with `num_clusters` clusters: names [C'] (in the order of their lowest id),
    groups [C] (each of the model's clusters' merged index) and first [C'] (each merged cluster's lowest id, the id
    the predictions and the report give it)."""

    def __init__(self, num_clusters, names_by_id=None):
        names_by_id = names_by_id or {}
        self.names, self.groups = [], []
        for c in range(num_clusters):
            name = names_by_id.get(c, f'cluster {c}')
            if name not in self.names:
                self.names.append(name)
            self.groups.append(self.names.index(name))
        self.groups = np.array(self.groups)
        self.first = [self.members(m)[0] for m in range(len(self.names))]
        self.given = bool(names_by_id)

    def name_of(self, c):
        """The name of the model's cluster c."""
        return self.names[self.groups[c]]

    def merge_probs(self, probs):
        """probs [N, C] -> [N, C']: each merged cluster's probability, the sum of its members'."""
        out = torch.zeros(probs.shape[0], len(self.names), dtype=probs.dtype)
        return out.index_add_(1, torch.as_tensor(self.groups), probs)

    def members(self, merged):
        """The original ids of merged cluster `merged`."""
        return [int(c) for c in np.nonzero(self.groups == merged)[0]]


def file_line_error(path, line, what):
    return UserError(f'{path}, line {line}: {what}')


def _id(value, path, line, num_clusters):
    try:
        c = int(str(value).strip())
    except ValueError:
        raise file_line_error(path, line, f"'{value}' is not a cluster id (a whole number from 0 to "
                              f'{num_clusters - 1})') from None
    if not 0 <= c < num_clusters:
        raise file_line_error(path, line, f'cluster {c} does not exist: the model has clusters 0 to {num_clusters - 1}')
    return c


def _name(value, path, line):
    name = '' if value is None else str(value).strip()
    if not name or '/' in name or '\\' in name or name in ('.', '..') or name.startswith('_'):
        raise file_line_error(path, line, f"'{name}' is not a usable name: give a non-empty name without / or \\ "
                              'that does not start with _')
    return name


def add(names, c, name, path, line):
    if c in names:
        raise file_line_error(path, line, f'cluster {c} is named a second time')
    names[c] = name


def read_names(path, num_clusters):
    """{cluster id: name} from a YAML or CSV names file, every line checked (module docstring)."""
    if not os.path.isfile(path):
        raise UserError(f'--names: no such file: {path}')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    names = {}
    if path.lower().endswith('.csv'):
        for line, row in enumerate(csv.reader(text.splitlines()), 1):
            if not row or not ''.join(row).strip() or row[0].lstrip().startswith('#'):
                continue
            if line == 1 and row[0].strip().lower() in ('cluster', 'id'):
                continue
            if len(row) != 2:
                raise file_line_error(path, line, f'expected two columns (cluster id, name), found {len(row)}')
            add(names, _id(row[0], path, line, num_clusters), _name(row[1], path, line), path, line)
        return names
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        raise file_line_error(path, mark.line + 1 if mark else 1, "not YAML of 'ID: name' lines") from None
    if root is None:
        return names
    if not isinstance(root, yaml.MappingNode):
        raise file_line_error(path, root.start_mark.line + 1, "expected 'ID: name' lines")
    for key, value in root.value:
        line = key.start_mark.line + 1
        if not isinstance(value, yaml.ScalarNode):
            raise file_line_error(path, line, f"expected 'ID: name', the name of {key.value} is not one word or text")
        add(names, _id(key.value, path, line, num_clusters), _name(value.value, path, line), path, line)
    return names


def write_names_template(path, naming, sizes):
    """A names file to fill in: one line per cluster of the model with its current name and size."""
    lines = ['# Cluster names for eval.py --names: write a name after each id; ids with the same name become one',
             '# cluster. Lines left as they are keep their cluster.']
    for c, size in enumerate(sizes):
        lines.append(f"{c}: {json.dumps(naming.name_of(c), ensure_ascii=False)}  # {size} images")
    atomic_write_text(path, '\n'.join(lines) + '\n')
    return path
