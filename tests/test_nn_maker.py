"""feature_extract.py and nn_maker.py: selection against brute force, de-duplication, thresholds, files, errors."""
import csv
import json
import os

import numpy as np
import pytest
import torch
from easydict import EasyDict
from PIL import Image

import feature_extract
import nn_maker
from conftest import ROOT
from models import get_contrastive_model
from utils.errors import UserError
from utils.feature_files import read_features, write_features


def unit(rows, seed):
    x = np.random.default_rng(seed).normal(size=(rows, 8)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(target, pool, k, threshold):
    best = {}
    for t, q in enumerate(target):
        sims = pool @ q
        for p in np.argsort(-sims, kind='stable')[:k]:
            d = 1 - float(sims[p])
            if d < threshold and (p not in best or d < best[p][1]):
                best[int(p)] = (t, d)
    return best


@pytest.mark.parametrize('threshold', [0.0, 0.6, 1.0, 2.0])
def test_selection_equals_brute_force(threshold):
    target, pool = unit(15, 0), unit(200, 1)
    rows = nn_maker.select(target, pool, 7, threshold)
    expected = brute_force(target, pool, 7, threshold)
    assert {p: t for p, t, _ in rows} == {p: t for p, (t, _) in expected.items()}
    assert all(d == pytest.approx(expected[p][1], abs=1e-5) for p, _, d in rows)
    assert [d for *_, d in rows] == sorted(d for *_, d in rows)
    if threshold == 0.0:
        assert rows == []
    if threshold == 2.0:  # everything in the top-k, each pool image once
        assert len(rows) == len({p for t in range(15) for p in np.argsort(-(pool @ target[t]))[:7]})


def test_duplicates_keep_the_closest_target():
    pool = unit(5, 2)
    target = np.stack([pool[0] * 0.9 + pool[1] * 0.1, pool[0]])  # both targets pick pool[0] first
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    rows = nn_maker.select(target, pool, 1, 2.0)
    assert [(p, t) for p, t, _ in rows] == [(0, 1)] and rows[0][2] == pytest.approx(0.0, abs=1e-6)


def images(folder, classes, per_class=3):
    rng = np.random.default_rng(0)
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), 'L').save(folder / c / f'{i}.png')


def test_csv_round_trip_in_both_forms(tmp_path):
    images(tmp_path / 'imgs', ['a'])
    paths = [f'a/{i}.png' for i in range(3)]
    feats = unit(3, 3)
    write_features(str(tmp_path / 'f'), feats, paths, ['a', 'a', ''], csv_features=True)
    for name in ('f.csv', 'f_features.csv'):
        got_paths, labels, got = read_features(str(tmp_path / name), str(tmp_path / 'imgs'))
        assert got_paths == [str(tmp_path / 'imgs' / p) for p in paths] and labels == ['a', 'a', '']
        assert np.allclose(got, feats, atol=1e-6)


def run_maker(tmp_path, *extra, save='out'):
    return nn_maker.main(['--target_csv', str(tmp_path / 't.csv'), '--near_csv', str(tmp_path / 'p.csv'),
                          '--target_db', str(tmp_path / 'imgs'), '--near_db', str(tmp_path / 'imgs'),
                          '--save_dir', str(tmp_path / save), *extra])


@pytest.fixture
def feature_files(tmp_path):
    images(tmp_path / 'imgs', ['a', 'b'])
    paths = [f'{c}/{i}.png' for c in 'ab' for i in range(3)]
    write_features(str(tmp_path / 'p'), unit(6, 4), paths, ['a'] * 3 + ['b'] * 3)
    write_features(str(tmp_path / 't'), unit(2, 5), paths[:2], ['a', 'a'])
    return tmp_path


def test_outputs_and_image_folder(feature_files):
    tmp = feature_files
    summary = run_maker(tmp, '--nn_factor', '3', '--dist_thr', '2', '--copy')
    rows = list(csv.DictReader(open(tmp / 'out' / 'selected.csv')))
    assert summary['selected'] == len(rows) == len({r['path'] for r in rows}) and summary['selected'] >= 3
    assert json.load(open(tmp / 'out' / 'summary.json')) == json.loads(json.dumps(summary))
    assert sum(summary['per_class'].values()) == len(rows)
    copied = sorted(str(p.relative_to(tmp / 'out' / 'images')) for p in (tmp / 'out' / 'images').rglob('*.png'))
    assert len(copied) == len(rows) and all(c.split(os.sep)[0] in 'ab' for c in copied)
    Image.open(tmp / 'out' / 'distances.png').verify()


def test_errors_write_nothing(feature_files, capsys):
    tmp = feature_files

    def fails(expected, *extra, save='out'):
        with pytest.raises(SystemExit) as e:
            run_maker(tmp, *extra, save=save)
        assert e.value.code == 2 and expected in capsys.readouterr().err
        assert not (tmp / save).exists() or save == 'exists'
        assert not [p for p in os.listdir(tmp) if p.startswith('.nn_maker-')]

    fails('outside [0, 2]', '--dist_thr', '2.5')
    fails('outside [0, 2]', '--dist_thr', '-0.1')
    fails('between 1 and the pool size 6', '--nn_factor', '7')
    (tmp / 'exists').mkdir()
    fails('already exists', save='exists')
    write_features(str(tmp / 't'), np.ones((2, 4), np.float32), ['a/0.png', 'a/1.png'], ['a', 'a'])
    fails('target features have 4 dimensions, pool features 8')
    write_features(str(tmp / 't'), unit(2, 5), ['a/0.png', 'a/gone.png'], ['a', 'a'])
    fails('1 image paths in')


def test_feature_extract_on_a_folder(tmp_path, env_file):
    images(tmp_path / 'imgs', ['x', 'y'], per_class=4)
    torch.manual_seed(0)
    model = get_contrastive_model(EasyDict(backbone='small_cnn', train_db_name='digits', channels=1,
                                           backbone_kwargs={'widths': [8, 16, 16, 16], 'pools': [False, True, False, True]},
                                           model_kwargs={'head': 'mlp', 'features_dim': 64}))
    torch.save(model.state_dict(), tmp_path / 'pretext.pth.tar')
    cfg = os.path.join(ROOT, 'configs', 'pretext', 'simclr_digits.yml')
    feature_extract.main(['--config_env', env_file, '--config_exp', cfg, '--pretext_model', str(tmp_path / 'pretext.pth.tar'),
                          '--db', str(tmp_path / 'imgs'), '--save_feature_name', str(tmp_path / 'feats' / 'pool'),
                          '--csv_features', 'backbone_kwargs.widths=[8, 16, 16, 16]'])
    paths, labels, feats = read_features(str(tmp_path / 'feats' / 'pool.csv'), str(tmp_path / 'imgs'))
    assert feats.shape == (8, 16) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    assert labels == ['x'] * 4 + ['y'] * 4 and paths[0].endswith(os.path.join('x', '0.png'))
    assert (tmp_path / 'feats' / 'pool_features.csv').is_file()
    with pytest.raises(UserError, match='neither a folder nor a dataset'):
        plain = EasyDict(transformation_kwargs={'crop_size': 8, 'normalize': {'mean': [0.5], 'std': [0.5]}}, channels=1)
        feature_extract.open_db(plain, str(tmp_path / 'nowhere'), None)
