"""simclr.py main() for the memory-bank setups on tiny data, including resume in the middle of an AND round."""
import json
import os

import numpy as np
import pytest
import torch

import simclr
from conftest import ROOT, interrupted_then_resumed

TINY = ['batch_size=64', 'train_subset=256', 'val_subset=256', 'backbone_kwargs.widths=[8, 16, 16, 16]',
        'knn_every=1', 'knn_k=20']


def args(env_file, setup, *extra):
    return ['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'pretext', f'{setup}_digits.yml'),
            *TINY, *extra]


@pytest.mark.parametrize('setup, supervised', [('instdisc', False), ('snca', True)])
def test_memory_setups_train_and_mine(env_file, tmp_path, setup, supervised):
    result = simclr.main(args(env_file, setup, 'epochs=2'))
    out = tmp_path / 'results' / 'digits' / 'pretext'
    assert np.load(out / 'topk-train-neighbors.npy').shape == (256, 21)
    assert result.get('supervised', False) == supervised and 0 < result['neighbor_acc'] <= 1
    memory = torch.load(out / 'checkpoint.pth.tar', weights_only=True)['memory']['bank']['features']
    assert memory.shape == (256, 128) and torch.allclose(memory.norm(dim=1), torch.ones(256), atol=1e-5)


def test_and_rounds_grow_the_anchors_and_resume_mid_round(env_file, tmp_path, monkeypatch):
    run = args(env_file, 'and', 'epochs=2', 'and_rounds=2')  # rounds 0, 1, 2 of 2 epochs: 6 epochs
    simclr.main(run + [f'root_dir={tmp_path}/full'])
    full = tmp_path / 'full' / 'digits' / 'pretext'
    log = [json.loads(line) for line in open(full / 'log.jsonl')]
    assert [r.get('round') for r in log] == [0, None, 1, None, 2, None]
    assert [r['anchor_share'] for r in log if 'round' in r] == [0.0, 0.5, 1.0]
    assert 0 <= log[2]['anchor_agreement'] <= 1
    interrupted_then_resumed(monkeypatch, simclr, run, epoch=4)  # stopped in round 1's second epoch
    cut = tmp_path / 'results' / 'digits' / 'pretext'
    a = torch.load(full / 'checkpoint.pth.tar', weights_only=True)
    b = torch.load(cut / 'checkpoint.pth.tar', weights_only=True)
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert torch.equal(a['memory']['bank']['features'], b['memory']['bank']['features'])
    assert torch.equal(a['memory']['neighbors'], b['memory']['neighbors'])


def test_snca_needs_labels(env_file, tmp_path, capsys):
    from PIL import Image
    folder = tmp_path / 'data' / 'pool'
    folder.mkdir(parents=True)
    for i in range(8):
        Image.fromarray(np.full((8, 8), i * 20, np.uint8), 'L').save(folder / f'{i}.png')
    with pytest.raises(SystemExit):
        simclr.main(args(env_file, 'snca', 'train_db_name=image_folder', 'val_db_name=image_folder',
                         'train_split=""', 'val_split=""', 'db_kwargs={path: pool}', 'train_subset=null',
                         'val_subset=null'))
    assert 'snca is supervised' in capsys.readouterr().err


def test_instdisc_nce_resumes_with_its_normaliser(env_file, tmp_path, monkeypatch):
    run = args(env_file, 'instdisc', 'epochs=3', 'criterion_kwargs.nce_k=32')
    simclr.main(run + [f'root_dir={tmp_path}/full'])
    interrupted_then_resumed(monkeypatch, simclr, run, epoch=2)
    a = torch.load(tmp_path / 'full' / 'digits' / 'pretext' / 'checkpoint.pth.tar', weights_only=True)
    b = torch.load(tmp_path / 'results' / 'digits' / 'pretext' / 'checkpoint.pth.tar', weights_only=True)
    assert torch.isfinite(a['criterion']['log_z']) and torch.equal(a['criterion']['log_z'], b['criterion']['log_z'])
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
