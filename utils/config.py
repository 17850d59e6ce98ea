"""Configuration: SCAN's `--config_env ENV.yml --config_exp EXP.yml` plus `key=value` overrides.

Every stage declares a schema (key -> default). The env file, then the experiment
files in order (each after the files its `_base_` key names), then the overrides are
laid over it. A top-level key that the schema
does not know, a value of the wrong type, a value outside the valid choices, a
required key left unset, and an unreadable or malformed file are `UserError`s that
name the key or file and the valid choices; nothing is written before the config is
valid. Nested dicts (`optimizer_kwargs`, `augmentation_kwargs`, ...) are keyword
arguments of whatever consumes them: their keys are merged, and checked by the
consumer; a key marked `replace` (backbone_kwargs) is replaced whole by a later file.
"""
import argparse
import copy
import difflib
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import yaml
from easydict import EasyDict

from utils.checkpoint import atomic_write_text
from utils.errors import UserError
from utils.stages import STAGES

REQUIRED = object()


@dataclass
class Key:
    """One config key: its default (REQUIRED when it must be set), type and valid choices."""
    default: Any = REQUIRED
    type: Any = None  # a type or tuple of types; inferred from the default when None
    choices: Union[Sequence, Callable[[], Sequence], None] = None
    minimum: Any = None  # the smallest valid number
    # a mapping set by a later file (or an override of the whole key) replaces the earlier one instead of being
    # merged into it: backbone_kwargs, whose keys mean nothing to another backbone
    replace: bool = False

    def types(self):
        if self.type is not None:
            return self.type if isinstance(self.type, tuple) else (self.type,)
        if self.default is None or self.default is REQUIRED:
            return None
        if isinstance(self.default, float):
            return (int, float)
        return (type(self.default),)

    def valid_choices(self):
        return list(self.choices()) if callable(self.choices) else self.choices


def _type_names(types):
    return ' or '.join('number' if t is float else t.__name__ for t in types if t is not int or float not in types)


def check_value(key, spec, value, source):
    """Raise a UserError unless `value` suits `spec` (None is always allowed for optional keys)."""
    if value is None:
        if spec.default is REQUIRED:
            raise UserError(f"{source}: '{key}' must be set")
        return
    types = spec.types()
    wrong_bool = isinstance(value, bool) and bool not in (types or (bool,))
    if types and (wrong_bool or not isinstance(value, types)):
        raise UserError(f"{source}: '{key}' must be a {_type_names(types)}, got {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise UserError(f"{source}: '{key}' must be at least {spec.minimum}, got {value!r}")
    choices = spec.valid_choices()
    if choices is not None and value not in choices:
        raise UserError(f"{source}: '{key}' is {value!r}; valid choices: {', '.join(map(str, choices))}")


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads 1e-4 and 5E3 as numbers (YAML 1.1 wants a dot, 1.0e-4; people write
    learning rates without one)."""


YamlLoader.add_implicit_resolver('tag:yaml.org,2002:float',
                                 re.compile(r'^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$'),
                                 list('-+0123456789.'))


def load_yaml(stream):
    return yaml.load(stream, Loader=YamlLoader)


def read_yaml(path, what):
    """Read a YAML mapping; a missing, unreadable or malformed file is a one-line UserError."""
    if not os.path.isfile(path):
        raise UserError(f"{what} file not found: {path}")
    try:
        with open(path) as f:
            data = load_yaml(f)
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        where = f' (line {mark.line + 1}, column {mark.column + 1})' if mark else ''
        problem = getattr(e, 'problem', None) or type(e).__name__
        raise UserError(f"malformed YAML in {what} file {path}{where}: {problem}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} file {path}: {e.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{what} file {path} must hold a mapping of key: value, not a {type(data).__name__}")
    return data


BASE_KEY = '_base_'


def read_layers(path, what, _seen=()):
    """A config file and the files it builds on, in the order they are laid over each other: [(path, data)].

    `_base_: FILE` (or a list of files), relative to the file's own folder, names files that come first; the
    file's own keys win. A file that builds on itself is a UserError.
    """
    real = os.path.realpath(path)
    if real in _seen:
        raise UserError(f"{what} file {path} builds on itself through {BASE_KEY}")
    data = read_yaml(path, what)
    bases = data.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{what} file {path}: '{BASE_KEY}' must be a file name or a list of file names")
    layers = []
    for base in bases:
        layers += read_layers(os.path.join(os.path.dirname(path), base), what, _seen + (real,))
    return layers + [(path, data)]


# One file for every stage (configs/image_folder.yml): a top-level `pretext:`, `clustering:` or `selflabel:` mapping
# holds that stage's own values, laid over the file's shared keys; the other stages skip it. Overrides reach
# into it as `clustering.epochs=3`.
STAGE_SECTIONS = tuple(STAGES)


def _split_sections(data, source):
    """A file's mapping -> (its shared keys, {stage: that stage's section})."""
    shared = {k: v for k, v in data.items() if k not in STAGE_SECTIONS}
    sections = {}
    for stage in STAGE_SECTIONS:
        section = data.get(stage)
        if section is not None and not isinstance(section, dict):
            raise UserError(f"{source}: '{stage}' must be a mapping of that stage's keys, "
                            f"not a {type(section).__name__}")
        sections[stage] = section or {}
    return shared, sections


def unknown_key(source, key, schema, elsewhere=None):
    """The UserError for a key the schema lacks: where it belongs when another stage reads it (`elsewhere`: key ->
    stage), else the closest valid key."""
    owner = (elsewhere or {}).get(key)
    if owner:
        return UserError(f"{source}: '{key}' is a key of the {owner} stage, not of this one; give it as "
                         f"{owner}.{key}=... (only that stage reads it)")
    close = difflib.get_close_matches(key, sorted(schema), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"remove it; this stage's keys: {', '.join(sorted(schema))}"
    return UserError(f"{source}: unknown key '{key}'; {hint}")


def typed(cfg, key):
    """How the user types `key` for the config in use: `clustering.num_neighbors` when its files have stage
    sections (the template), else `num_neighbors`."""
    return f"{cfg.get('key_prefix') or ''}{key}"


def _merge_into(cfg, schema, data, source, elsewhere=None):
    for key, value in data.items():
        if key not in schema:
            raise unknown_key(source, key, schema, elsewhere)
        spec = schema[key]
        check_value(key, spec, value, source)
        if isinstance(cfg.get(key), dict) and isinstance(value, dict) and not spec.replace:
            cfg[key] = {**cfg[key], **copy.deepcopy(value)}
        else:
            cfg[key] = copy.deepcopy(value)


def parse_override(text):
    """'a.b=3' -> (['a', 'b'], 3); the value is parsed as YAML ('true', '[1, 2]', 'null')."""
    if '=' not in text:
        raise UserError(f"override '{text}' must look like key=value (e.g. epochs=10)")
    key, raw = text.split('=', 1)
    try:
        value = load_yaml(raw) if raw != '' else None
    except yaml.YAMLError:
        raise UserError(f"override '{text}': the value is not valid YAML") from None
    if not key or any(part == '' for part in key.split('.')):
        raise UserError(f"override '{text}' has an empty key")
    return key.split('.'), value


def _apply_override(cfg, schema, text, shown=None, elsewhere=None):
    path, value = parse_override(text)
    top = path[0]
    source = f"override '{shown or text}'"
    if top not in schema:
        raise unknown_key(source, top, schema, elsewhere)
    if len(path) == 1:
        if value == {}:  # `key={}` empties the mapping (merging nothing into it would change nothing)
            check_value(top, schema[top], value, source)
            cfg[top] = {}
        else:
            _merge_into(cfg, schema, {top: value}, source)
        return
    node = cfg.get(top)
    for i, part in enumerate(path[1:-1], start=1):
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            raise UserError(f"{source}: '{'.'.join(path[:i + 1])}' is not a nested mapping")
        node = node[part]
    if not isinstance(node, dict):
        raise UserError(f"{source}: '{top}' is not a nested mapping")
    leaf = path[-1]
    old = node.get(leaf)
    if old is not None and value is not None and 'auto' not in (old, value):  # auto stands for any value
        check_value('.'.join(path), Key(default=old), value, source)
    node[leaf] = value


def resolve(schema, files, overrides, flags=None, stage=None, elsewhere=None):
    """Defaults <- each (path, what) file in order (its shared keys, then its `stage` section) <- overrides (the
    stage's `stage.key=value` ones without the prefix) <- flags; returns a plain dict. With a `stage`, its
    'key_prefix' is how the user types this stage's keys (typed). `elsewhere` (key -> stage) names the stage of a
    key this schema lacks in the error."""
    schema = {k: v if isinstance(v, Key) else Key(default=v) for k, v in schema.items()}
    cfg = {k: v.default if v.default is REQUIRED else copy.deepcopy(v.default) for k, v in schema.items()}
    sectioned = False
    for path, what in files:
        for layer, data in read_layers(path, what):
            source = f"{what} file {layer}"
            shared, sections = _split_sections(data, source)
            sectioned = sectioned or any(sections.values())
            _merge_into(cfg, schema, shared, source, elsewhere)
            if stage is not None:
                _merge_into(cfg, schema, sections[stage], f"{source}, section '{stage}'", elsewhere)
    for text in overrides:
        head, _, rest = text.partition('.')
        if head in STAGE_SECTIONS and rest and '=' in rest:
            if head == stage:
                _apply_override(cfg, schema, rest, text)
        else:
            _apply_override(cfg, schema, text, elsewhere=elsewhere)
    if flags:
        _merge_into(cfg, schema, flags, 'command line')
    for key, spec in schema.items():
        if cfg[key] is REQUIRED:
            raise UserError(f"'{key}' is required: set it in the config file or pass {key}=VALUE")
    if stage is not None:
        cfg['key_prefix'] = f'{stage}.' if sectioned else ''
    return cfg


def base_parser(description, resume=True):
    """The flags every stage script accepts (SCAN's CLI plus overrides; --resume for training stages)."""
    p = argparse.ArgumentParser(description=description,
                                epilog='Trailing key=value arguments override either config file '
                                       '(dotted keys reach into nested mappings, values are YAML).')
    p.add_argument('--config_env', default='configs/env.yml', help='environment file (root_dir, data_root)')
    p.add_argument('--config_exp', nargs='+', required=True,
                   help='experiment config; several files are layered in order')
    p.add_argument('--gpus', default=None, help="CUDA devices to use, e.g. '0' or '0,1' (default: all visible)")
    p.add_argument('--seed', type=int, default=None, help='seed for everything (overrides the config)')
    if resume:
        p.add_argument('--resume', action='store_true', help='continue the run in the output folder')
    p.add_argument('overrides', nargs='*', help='key=value overrides')
    return p


def parse_args(parser, argv):
    args = parser.parse_args(argv)
    # `--config_exp a.yml b.yml epochs=3`: argparse hands the trailing overrides to --config_exp
    extra = [a for a in args.config_exp
             if not a.endswith(('.yml', '.yaml')) and ('=' in a or not os.path.isfile(a))]
    args.config_exp = [a for a in args.config_exp if a not in extra]
    args.overrides = extra + list(args.overrides)
    if not args.config_exp:
        parser.error('--config_exp needs at least one YAML file')
    return args


def load_config(args, env_schema, exp_schema, stage=None, others=None):
    """The resolved config of a stage as an EasyDict (env keys and experiment keys side by side); `stage` picks
    the files' sections (STAGE_SECTIONS); `others` ({stage: schema}) the other stages, named when one of their keys
    is given to this one."""
    overlap = set(env_schema) & set(exp_schema)
    assert not overlap, f'env and experiment schemas share keys: {overlap}'
    env_over = [o for o in args.overrides if o.split('=', 1)[0].split('.')[0] in env_schema]
    exp_over = [o for o in args.overrides if o not in env_over]
    env = resolve(env_schema, [(args.config_env, 'env')], env_over)
    flags = {}
    if getattr(args, 'seed', None) is not None:
        flags['seed'] = args.seed
    if getattr(args, 'gpus', None) is not None:
        flags['gpus'] = str(args.gpus)
    elsewhere = {k: name for name, schema in (others or {}).items() for k in schema if k not in exp_schema}
    exp = resolve(exp_schema, [(p, 'experiment') for p in args.config_exp], exp_over, flags, stage, elsewhere)
    return EasyDict({**env, **exp})


def save_config(cfg, path):
    """Write the resolved config (plain YAML) next to a run's outputs."""
    atomic_write_text(path, yaml.safe_dump(to_plain(cfg), sort_keys=False))


def to_plain(value):
    """EasyDict/tuples -> plain dicts/lists, for YAML, JSON and comparisons."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value
