import os

import numpy as np
import pytest
import yaml

import simclr
from stages.schema import ENV, PRETEXT, SCHEMAS
from utils.config import base_parser, load_config, parse_args, read_layers
from utils.errors import UserError

from conftest import DIGITS_CFG, ROOT


def cfg_from(argv):
    return load_config(parse_args(base_parser('t'), argv), ENV, PRETEXT)


def test_overrides_reach_both_files_and_nested_keys(env_file, tmp_path):
    cfg = cfg_from(['--config_env', env_file, '--config_exp', DIGITS_CFG, 'root_dir=elsewhere', 'seed=3',
                    'epochs=2', 'optimizer_kwargs.lr=0.05', 'augmentation_kwargs.random_affine.degrees=5',
                    'train_subset=null'])
    assert cfg.root_dir == 'elsewhere' and cfg.seed == 3 and cfg.epochs == 2
    assert cfg.optimizer_kwargs.lr == 0.05 and cfg.optimizer_kwargs.momentum == 0.9  # siblings kept
    assert cfg.augmentation_kwargs.random_affine.degrees == 5
    assert cfg.augmentation_kwargs.random_affine.shear == 12
    assert cfg.train_subset is None and cfg.data_root == str(tmp_path / 'data')


def test_auto_in_a_file_takes_a_value_of_any_type_from_an_override(env_file, tmp_path):
    """A nested value keeps its type (lr=fast is refused above), except 'auto', which stands for any value: the
    template's horizontal_flip: auto takes =false, and a flag takes =auto back."""
    extra = write(tmp_path, 'flip.yml', 'augmentation_kwargs: {horizontal_flip: auto}\n')
    cfg = cfg_from(['--config_env', env_file, '--config_exp', DIGITS_CFG, str(extra),
                    'augmentation_kwargs.horizontal_flip=false'])
    assert cfg.augmentation_kwargs.horizontal_flip is False
    cfg = cfg_from(['--config_env', env_file, '--config_exp', DIGITS_CFG, 'augmentation_kwargs.horizontal_flip=auto'])
    assert cfg.augmentation_kwargs.horizontal_flip == 'auto'


def test_layered_experiment_files_and_flags(env_file, tmp_path):
    extra = tmp_path / 'more.yml'
    extra.write_text('epochs: 7\noptimizer_kwargs: {lr: 0.01}\n')
    args = parse_args(base_parser('t'), ['--config_env', env_file, '--config_exp', DIGITS_CFG, str(extra),
                                         'batch_size=32', '--seed', '11'])
    assert args.overrides == ['batch_size=32']
    cfg = load_config(args, ENV, PRETEXT)
    assert (cfg.epochs, cfg.batch_size, cfg.seed) == (7, 32, 11)
    assert cfg.optimizer_kwargs == {'lr': 0.01, 'momentum': 0.9, 'nesterov': False, 'weight_decay': 0.0005}


def test_numbers_in_scientific_notation(env_file, tmp_path):
    extra = tmp_path / 'lr.yml'
    extra.write_text('optimizer_kwargs: {lr: 1e-4, weight_decay: 5E-4}\n')
    cfg = cfg_from(['--config_env', env_file, '--config_exp', DIGITS_CFG, str(extra)])
    assert cfg.optimizer_kwargs.lr == 1e-4 and cfg.optimizer_kwargs.weight_decay == 5e-4
    cfg = cfg_from(['--config_env', env_file, '--config_exp', DIGITS_CFG, 'optimizer_kwargs.lr=2e-3',
                    'optimizer_kwargs.weight_decay=+0.5e-4'])
    assert cfg.optimizer_kwargs.lr == 2e-3 and cfg.optimizer_kwargs.weight_decay == 5e-5
    with pytest.raises(UserError, match="'optimizer_kwargs.lr' must be a number, got '1e-4x'"):
        cfg_from(['--config_env', env_file, '--config_exp', DIGITS_CFG, 'optimizer_kwargs.lr=1e-4x'])


def test_an_empty_mapping_override_empties_it(env_file):
    cfg = cfg_from(['--config_env', env_file, '--config_exp', DIGITS_CFG, 'optimizer_kwargs={momentum: 0.5}',
                    'augmentation_kwargs.random_affine={}', 'scheduler_kwargs={}'])
    assert cfg.optimizer_kwargs.momentum == 0.5 and cfg.optimizer_kwargs.lr == 0.5  # a mapping merges
    assert cfg.augmentation_kwargs.random_affine == {} and cfg.scheduler_kwargs == {}  # {} replaces


def test_stage_sections(env_file, tmp_path):
    """One file for every stage: a stage reads the shared keys, then its own section (and `stage.key=` overrides);
    other stages' sections are skipped, not checked against this stage's schema."""
    both = tmp_path / 'both.yml'
    both.write_text('epochs: 5\nbatch_size: 64\noptimizer_kwargs: {lr: 0.1, momentum: 0.9}\n'
                    'pretext: {setup: simclr, epochs: 9, optimizer_kwargs: {lr: 0.2}}\n'
                    'clustering: {setup: scan, epochs: 3, k_range: [2, 4], head_init: kmeans}\n')
    base = ['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'digits.yml'), str(both)]
    pretext = load_config(parse_args(base_parser('t'), base + ['clustering.epochs=4', 'pretext.batch_size=32']),
                          ENV, PRETEXT, 'pretext')
    assert (pretext.epochs, pretext.batch_size, pretext.optimizer_kwargs.lr) == (9, 32, 0.2)
    assert pretext.optimizer_kwargs.momentum == 0.9  # the section merges into the base file's mapping
    clustering = load_config(parse_args(base_parser('t'), base + ['clustering.epochs=4', 'pretext.batch_size=32']),
                             ENV, SCHEMAS['clustering'], 'clustering')
    assert (clustering.epochs, clustering.batch_size, clustering.k_range) == (4, 64, [2, 4])
    bad = tmp_path / 'bad.yml'
    bad.write_text('clustering: 3\n')
    with pytest.raises(UserError, match="'clustering' must be a mapping"):
        load_config(parse_args(base_parser('t'), base + [str(bad)]), ENV, PRETEXT, 'pretext')
    with pytest.raises(UserError, match=r"override 'pretext.k_range=\[2, 3\]': unknown key 'k_range'"):
        load_config(parse_args(base_parser('t'), base + ['pretext.k_range=[2, 3]']), ENV, PRETEXT, 'pretext')
    bad.write_text('pretext: {k_range: [2, 3]}\n')
    with pytest.raises(UserError, match="section 'pretext': unknown key 'k_range'"):
        load_config(parse_args(base_parser('t'), base + [str(bad)]), ENV, PRETEXT, 'pretext')


def test_advice_names_a_stage_key_as_the_config_in_use_takes_it(env_file, tmp_path):
    """With the one-file template, the clustering stage's num_neighbors is typed clustering.num_neighbors=...; with
    a stage's own file it is num_neighbors=...: the advice of a neighbours file too short says which."""
    from neighbors.search import neighbor_lists
    from utils.config import typed
    template = ['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'image_folder.yml')]
    own = ['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'scan', 'scan_digits.yml')]
    for argv, expected in ((template, 'clustering.num_neighbors'), (own, 'num_neighbors')):
        cfg = load_config(parse_args(base_parser('t'), argv), ENV, SCHEMAS['clustering'], 'clustering')
        assert typed(cfg, 'num_neighbors') == expected
        with pytest.raises(UserError, match=rf'; set {expected}=1 \('):
            neighbor_lists(np.array([[0, 1], [1, 0]]), 3, typed(cfg, 'num_neighbors'))


def test_a_key_of_another_stage_is_named_with_its_stage_and_works_so(env_file):
    """num_neighbors is the clustering stage's: given to self-labelling it is refused with the override that works
    for every stage's command, and that override then passes."""
    base = ['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'image_folder.yml')]
    others = {s: SCHEMAS[s] for s in SCHEMAS if s != 'selflabel'}
    with pytest.raises(UserError, match=r"'num_neighbors' is a key of the clustering stage, not of this one; "
                                        r"give it as clustering.num_neighbors=\.\.\."):
        load_config(parse_args(base_parser('t'), base + ['num_neighbors=4']), ENV, SCHEMAS['selflabel'],
                    'selflabel', others)
    argv = base + ['clustering.num_neighbors=4']
    assert 'num_neighbors' not in load_config(parse_args(base_parser('t'), argv), ENV, SCHEMAS['selflabel'],
                                              'selflabel', others)
    assert load_config(parse_args(base_parser('t'), argv), ENV, SCHEMAS['clustering'], 'clustering').num_neighbors == 4


def test_defaults_fill_unset_keys(env_file):
    cfg = cfg_from(['--config_env', env_file, '--config_exp', DIGITS_CFG])
    assert cfg.device == 'auto' and cfg.num_val_neighbors == 5 and cfg.criterion_kwargs.temperature == 0.2


@pytest.mark.parametrize('override, expected', [
    ('epochz=3', "unknown key 'epochz'; did you mean 'epochs'?"),
    ('qwerty=3', "unknown key 'qwerty'; remove it; this stage's keys: "),
    ('k_range=[2, 5]', "'k_range' is a key of the clustering stage, not of this one; give it as clustering.k_range="),
    ('epochs=three', "'epochs' must be a int, got 'three'"),
    ('epochs=true', "'epochs' must be a int, got True"),
    ('device=tpu', "'device' is 'tpu'; valid choices: auto, cpu, cuda"),
    ('backbone=resnet19', "valid choices: resnet18, resnet18_cifar, resnet18_stl, resnet50, small_cnn"),
    ('train_db_name=mnist', "valid choices: cifar-10, cifar-20, stl-10, imagenet, image_folder, digits"),
    ('optimizer_kwargs.lr=fast', "'optimizer_kwargs.lr' must be a number, got 'fast'"),
    ('optimizer_kwargs.lr=-1', 'do not fit sgd: Invalid learning rate: -1'),
    ('optimizer_kwargs.weight_decay=-1', 'do not fit sgd: Invalid weight_decay value: -1'),
    ('optimizer_kwargs.betas=[0.9, 0.99]', "do not fit sgd: SGD.__init__() got an unexpected keyword argument 'betas'"),
    ('optimizer_kwargs.lr=null', 'optimizer_kwargs.lr must be set to a number, got None'),
    ('batch_size=0', "'batch_size' must be at least 1, got 0"),
    ('epochs=-3', "'epochs' must be at least 1, got -3"),
    ('epochs', "must look like key=value"),
    ('root_dir=[1, 2]', "'root_dir' must be a str"),
])
def test_bad_overrides_are_one_line_errors(env_file, tmp_path, capsys, override, expected):
    with pytest.raises(SystemExit) as exit_info:
        simclr.main(['--config_env', env_file, '--config_exp', DIGITS_CFG, override])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err and expected in err
    assert not (tmp_path / 'results').exists()  # nothing written


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def flattened(path):
    """A config file with the files it builds on laid into one mapping."""
    out = {}
    for _, layer in read_layers(path, 'experiment'):
        out.update(layer)
    return out


def test_base_files_come_first_and_the_file_wins(env_file, tmp_path):
    (tmp_path / 'shared').mkdir()
    write(tmp_path / 'shared', 'data.yml', yaml.safe_dump({**flattened(DIGITS_CFG), 'epochs': 7, 'seed': 4}))
    write(tmp_path / 'shared', 'more.yml', '_base_: data.yml\nseed: 5\n')  # relative to its own folder
    stage = write(tmp_path, 'stage.yml', '_base_: [shared/more.yml]\nepochs: 3\noptimizer_kwargs: {lr: 0.2}\n')
    cfg = cfg_from(['--config_env', env_file, '--config_exp', stage])
    assert (cfg.epochs, cfg.seed, cfg.optimizer_kwargs.lr, cfg.optimizer_kwargs.momentum) == (3, 5, 0.2, 0.9)
    assert cfg_from(['--config_env', env_file, '--config_exp', DIGITS_CFG]) == cfg_from(
        ['--config_env', env_file, '--config_exp', write(tmp_path, 'flat.yml', yaml.safe_dump(flattened(DIGITS_CFG)))])
    loop = write(tmp_path, 'loop.yml', '_base_: loop2.yml\n')
    write(tmp_path, 'loop2.yml', '_base_: loop.yml\n')
    with pytest.raises(UserError, match='builds on itself'):
        cfg_from(['--config_env', env_file, '--config_exp', loop])
    with pytest.raises(UserError, match="'_base_' must be a file name"):
        cfg_from(['--config_env', env_file, '--config_exp', write(tmp_path, 'bad.yml', '_base_: {a: 1}\n')])
    with pytest.raises(UserError, match='experiment file not found: .*absent.yml'):
        cfg_from(['--config_env', env_file, '--config_exp', write(tmp_path, 'gone.yml', '_base_: absent.yml\n')])



def test_a_files_backbone_kwargs_replace_the_base_files(env_file, tmp_path):
    """backbone_kwargs belong to one backbone: a file that sets them (even to {}) replaces its base file's, as the
    override backbone_kwargs={...} does; the other mappings still merge key by key."""
    base = write(tmp_path, 'base.yml', yaml.safe_dump(flattened(DIGITS_CFG)))
    pretrained = write(tmp_path, 'pretrained.yml', '_base_: base.yml\nbackbone: timm/resnet18\n'
                                                   'backbone_kwargs: {pretrained: true}\noptimizer_kwargs: {lr: 0.2}\n')
    cfg = cfg_from(['--config_env', env_file, '--config_exp', pretrained])
    assert cfg.backbone_kwargs == {'pretrained': True}
    assert (cfg.optimizer_kwargs.lr, cfg.optimizer_kwargs.momentum) == (0.2, 0.9)  # merged into the base's
    empty = write(tmp_path, 'empty.yml', '_base_: base.yml\nbackbone: timm/resnet18\nbackbone_kwargs: {}\n')
    assert cfg_from(['--config_env', env_file, '--config_exp', empty]).backbone_kwargs == {}
    assert flattened(DIGITS_CFG)['backbone_kwargs']  # the base file did set some
    override = cfg_from(['--config_env', env_file, '--config_exp', base, 'backbone_kwargs={pretrained: true}'])
    assert override.backbone_kwargs == {'pretrained': True}


def test_file_errors(env_file, tmp_path):
    base = flattened(DIGITS_CFG)
    missing_key = {k: v for k, v in base.items() if k != 'backbone'}
    cases = [
        (write(tmp_path, 'a.yml', yaml.safe_dump(missing_key)), "'backbone' is required"),
        (write(tmp_path, 'b.yml', 'epochs: [1,\n'), 'malformed YAML in experiment file'),
        (write(tmp_path, 'c.yml', yaml.safe_dump({**base, 'colour': 1})), "unknown key 'colour'"),
        (write(tmp_path, 'd.yml', yaml.safe_dump({**base, 'epochs': 'many'})), "'epochs' must be a int"),
        (write(tmp_path, 'e.yml', '- a\n- b\n'), 'must hold a mapping'),
        (str(tmp_path / 'absent.yml'), 'experiment file not found'),
    ]
    for path, expected in cases:
        with pytest.raises(UserError, match=expected) as e:
            cfg_from(['--config_env', env_file, '--config_exp', path])
        assert path in str(e.value) or 'required' in expected
    with pytest.raises(UserError, match='env file not found'):
        cfg_from(['--config_env', str(tmp_path / 'none.yml'), '--config_exp', DIGITS_CFG])
    env_missing = write(tmp_path, 'env2.yml', 'root_dir: x\n')
    with pytest.raises(UserError, match="'data_root' is required"):
        cfg_from(['--config_env', env_missing, '--config_exp', DIGITS_CFG])


def test_resolved_config_is_written_into_the_run_folder(env_file, tmp_path):
    from conftest import tiny_digits_args
    simclr.main(tiny_digits_args(env_file, 'epochs=1', 'seed=5'))
    saved = yaml.safe_load(open(tmp_path / 'results' / 'digits' / 'pretext' / 'config.yml'))
    assert saved['seed'] == 5 and saved['epochs'] == 1 and saved['backbone_kwargs']['widths'] == [8, 16, 16, 16]
    assert os.path.isabs(saved['root_dir'])
