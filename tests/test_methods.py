"""The method registries: a new method is one module plus one registry line; a method's keyword arguments are
checked (names and types) before a run writes anything."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

import methods
import scan
import selflabel
import simclr
from conftest import ROOT, tiny_digits_args, write_env
from helpers.toy_method import Toy
from helpers.two_neighbors import TwoNeighbors

SCAN_CFG = os.path.join(ROOT, 'configs', 'scan', 'scan_digits.yml')
TINY = ['epochs=2', 'batch_size=64', 'train_subset=256', 'val_subset=256', 'backbone_kwargs.widths=[8, 16, 16, 16]',
        'num_heads=2']


@pytest.fixture(scope='module')
def pretext(tmp_path_factory):
    root = tmp_path_factory.mktemp('pretext')
    simclr.main(tiny_digits_args(write_env(root, data_root=root), 'epochs=1'))
    return root / 'results' / 'digits' / 'pretext'


@pytest.fixture
def run_root(tmp_path, pretext):
    shutil.copytree(pretext, tmp_path / 'results' / 'digits' / 'pretext')
    return tmp_path / 'results' / 'digits'


def test_a_registered_toy_method_trains_through_scan_main(env_file, run_root, monkeypatch):
    monkeypatch.setitem(methods.CLUSTERING, 'toy', Toy)  # the registry line
    monkeypatch.setattr(Toy, 'val_calls', 0)
    result = scan.main(['--config_env', env_file, '--config_exp', SCAN_CFG, *TINY, 'setup=toy',
                        'criterion_kwargs.entropy_weight=2.0'])
    log = [json.loads(line) for line in open(run_root / 'scan' / 'log.jsonl')]
    assert {'distance', 'entropy', 'loss'} <= set(log[0]) and 'consistency' not in log[0]  # its named parts
    assert Toy.val_calls == 2 and all(0 <= v <= 2 for r in log for v in r['val_loss'])  # its own criterion
    assert result['head'] in (0, 1) and (run_root / 'scan' / 'model.pth.tar').is_file()
    saved = torch.load(run_root / 'scan' / 'checkpoint.pth.tar', weights_only=True)['config']
    assert saved['setup'] == 'toy' and saved['criterion_kwargs'] == {'entropy_weight': 2.0}


@pytest.mark.parametrize('on_device', [False, True])
def test_a_method_with_a_view_of_its_own_is_its_module_its_loss_one_registry_line_and_its_config(
        env_file, run_root, monkeypatch, on_device):
    """The new view 'neighbor2' reaches the method's loss on either augmentation path; nothing else was edited."""
    monkeypatch.setitem(methods.CLUSTERING, 'two_neighbors', TwoNeighbors)  # the registry line
    monkeypatch.setattr(TwoNeighbors, 'seen', [])
    result = scan.main(['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'tests', 'helpers',
                                                                               'two_neighbors.yml'),
                        *TINY, f'augment_on_device={str(on_device).lower()}'])
    log = [json.loads(line) for line in open(run_root / 'scan' / 'log.jsonl')]
    assert {'first', 'second', 'entropy', 'loss'} <= set(log[-1]) and 'consistency' not in log[-1]
    assert TwoNeighbors.seen and all(s == ['anchor', 'neighbor', 'neighbor2'] for s in TwoNeighbors.seen)
    assert len(TwoNeighbors.seen) == 2 * 2 * (256 // 64)  # two heads, two epochs of four steps
    assert 0 <= result['acc'] <= 1 and (run_root / 'scan' / 'model.pth.tar').is_file()


def test_an_unregistered_setup_lists_the_registered_ones(env_file, run_root, capsys):
    with pytest.raises(SystemExit) as e:
        scan.main(['--config_env', env_file, '--config_exp', SCAN_CFG, *TINY, 'setup=toy'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "'setup' is 'toy'; valid choices: scan, nnm" in err


@pytest.mark.parametrize('stage, config, override, message', [
    (scan, 'scan/scan_digits.yml', 'criterion_kwargs.entropy_weight=abc',
     "'criterion_kwargs.entropy_weight' must be a number, got 'abc'"),
    (scan, 'scan/scan_digits.yml', 'criterion_kwargs.tau=0.1',
     "setup 'scan' does not take criterion_kwargs.tau; valid: entropy_weight"),
    (scan, 'scan/nnm_digits.yml', 'criterion_kwargs={entropy_weight: [5]}',
     "setup 'nnm': 'criterion_kwargs.entropy_weight' must be a number, got [5]"),
    (selflabel, 'selflabel/selflabel_digits.yml', 'criterion_kwargs.apply_class_balancing=sometimes',
     "'criterion_kwargs.apply_class_balancing' must be a bool, got 'sometimes'"),
    (simclr, 'pretext/instdisc_digits.yml', 'criterion_kwargs.nce_k=1.5',
     "setup 'instdisc': 'criterion_kwargs.nce_k' must be a int, got 1.5"),
    (simclr, 'pretext/simclr_digits.yml', 'criterion_kwargs.entropy_weight=1',
     "setup 'simclr' does not take criterion_kwargs.entropy_weight; valid: symmetric, temperature"),
])
def test_mistyped_method_kwargs_are_one_line_and_write_nothing(env_file, tmp_path, capsys, stage, config, override,
                                                               message):
    with pytest.raises(SystemExit) as e:
        stage.main(['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', config), 'epochs=1',
                    override])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and message in err, err
    assert not (tmp_path / 'results').exists()


def test_method_defaults_fill_what_the_config_leaves_out():
    assert methods.get_method('clustering', 'nnm').resolve_kwargs('nnm', {}) == {'entropy_weight': 5.0}
    assert methods.get_method('pretext', 'instdisc').resolve_kwargs('instdisc', {'nce_k': 64}) == {
        'temperature': 0.1, 'nce_k': 64}
    assert methods.get_method('pretext', 'simclr').resolve_kwargs('simclr', {'temperature': None}) == {
        'temperature': 0.1, 'symmetric': True}  # null keeps the default


def test_later_stages_take_the_backbone_from_the_pretext_run(env_file, run_root, tmp_path, capsys):
    stripped = tmp_path / 'scan.yml'  # a digits SCAN config without backbone, backbone_kwargs, transform
    stripped.write_text(yaml.safe_dump({
        'setup': 'scan', 'train_db_name': 'digits', 'val_db_name': 'digits', 'train_split': 'all', 'val_split': 'all',
        'channels': 1, 'num_classes': 10, 'epochs': 1, 'batch_size': 64, 'train_subset': 256, 'val_subset': 256,
        'optimizer': 'adam', 'optimizer_kwargs': {'lr': 0.001}, 'augmentation_strategy': 'simclr',
        'augment_on_device': True, 'augmentation_kwargs': {'horizontal_flip': False, 'random_affine': {'degrees': 15},
                                                           'normalize': {'mean': [0.33], 'std': [0.38]}}}))
    result = scan.main(['--config_env', env_file, '--config_exp', str(stripped)])
    assert 0 < result['acc'] <= 1
    saved = yaml.safe_load(open(run_root / 'scan' / 'config.yml'))
    pretext = yaml.safe_load(open(run_root / 'pretext' / 'config.yml'))
    for key in ('backbone', 'backbone_kwargs', 'transformation_kwargs'):
        assert saved[key] == pretext[key]
    os.remove(run_root / 'pretext' / 'config.yml')
    with pytest.raises(SystemExit):
        scan.main(['--config_env', env_file, '--config_exp', str(stripped), 'root_dir=' + str(tmp_path / 'other')])
    assert "'backbone' is not set and there is no pretext run config" in capsys.readouterr().err


def test_extract_feature_is_nnms_name_for_the_pretext_stage(tmp_path):
    env = write_env(tmp_path)
    done = subprocess.run([sys.executable, 'extract_feature.py', *tiny_digits_args(env, 'epochs=1')], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = tmp_path / 'results' / 'digits' / 'pretext'
    assert (out / 'model.pth.tar').is_file() and (out / 'topk-train-neighbors.npy').is_file()
