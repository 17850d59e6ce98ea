import datetime
import errno
import os
import pickle
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image
from easydict import EasyDict

from utils.checkpoint import atomic_save, atomic_save_npy, atomic_write_text, load_file
from utils.errors import UserError


class _CreatesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # unpickling this calls open(path, 'w'): code execution
        return (open, (self.path, 'w'))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    target = tmp_path / 'pwned'
    path = tmp_path / 'model.pth.tar'
    torch.save({'model': {}, 'x': _CreatesFile(str(target))}, path)
    assert not target.exists()
    with pytest.raises(UserError, match='refusing to load checkpoint .*holds more than weights'):
        load_file(str(path))
    assert not target.exists()


class _RunsShell:
    def __reduce__(self):  # os.system: torch names this global on another line of its message than the others
        return (os.system, ('true',))


@pytest.mark.parametrize('payload, name', [(_RunsShell(), 'system'), (datetime.date(2020, 1, 1), 'datetime.date')])
def test_a_file_naming_code_is_refused_as_such(tmp_path, payload, name):
    path = tmp_path / 'model.pth.tar'
    torch.save({'model': {}, 'x': payload}, path)
    with pytest.raises(UserError) as info:
        load_file(str(path))
    message = str(info.value)
    assert 'holds more than weights' in message and name in message and 'damaged' not in message


def test_scan_clustering_layout_with_numpy_head_loads(tmp_path):
    path = tmp_path / 'model.pth.tar'
    torch.save({'model': {'cluster_head.0.weight': torch.ones(2, 3)}, 'head': np.int64(1),
                'best_loss': np.float64(0.5)}, path)
    state = load_file(str(path))
    assert int(state['head']) == 1 and float(state['best_loss']) == 0.5


def test_damaged_and_missing_files(tmp_path):
    bad = tmp_path / 'bad.pth.tar'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(UserError, match='cannot read checkpoint .*damaged') as e:
        load_file(str(bad))
    assert '\n' not in str(e.value)
    with pytest.raises(UserError, match='pretext model not found'):
        load_file(str(tmp_path / 'none'), 'pretext model')


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / 'checkpoint.pth.tar'
    atomic_save({'epoch': 1}, path)

    class Unsaveable:
        def __reduce__(self):
            raise pickle.PicklingError('no')

    with pytest.raises(pickle.PicklingError):
        atomic_save({'epoch': 2, 'x': Unsaveable()}, path)
    assert torch.load(path)['epoch'] == 1 and os.listdir(tmp_path) == ['checkpoint.pth.tar']


@pytest.mark.parametrize('umask', [0o022, 0o002, 0o077])
def test_saved_files_follow_the_umask_like_open(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_save({'a': torch.zeros(1)}, str(tmp_path / 'model.pth.tar'))
        atomic_save_npy(np.zeros(3), str(tmp_path / 'n.npy'))
        atomic_write_text(str(tmp_path / 'config.yml'), 'a: 1\n')
        with open(tmp_path / 'plain.txt', 'w') as f:
            f.write('x')
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {name: 0o666 & ~umask for name in ('model.pth.tar', 'n.npy', 'config.yml', 'plain.txt')}


def test_non_finite_values_are_never_saved(tmp_path):
    path = tmp_path / 'checkpoint.pth.tar'
    good = {'model': {'bn.running_var': torch.ones(3)}, 'optimizer': {'state': {0: {'exp_avg': torch.zeros(2)}}}}
    with pytest.raises(UserError, match='no good checkpoint.pth.tar was written before'):
        atomic_save({'model': {'bn.running_var': torch.tensor([1.0, float('nan')])}}, str(path))
    assert not path.exists()
    atomic_save(good, str(path))
    before = path.read_bytes()
    bad = {'model': good['model'], 'optimizer': {'state': {0: {'exp_avg': torch.tensor([float('inf'), 0.0])}}}}
    with pytest.raises(UserError) as info:
        atomic_save(bad, str(path))
    assert ('optimizer.state.0.exp_avg holds NaN or infinite values' in str(info.value)
            and 'the last good checkpoint.pth.tar is kept' in str(info.value))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ['checkpoint.pth.tar']
    atomic_save({'counts': torch.tensor([1, 2]), 'best': float('inf')}, str(tmp_path / 'ints.pth'))  # not tensors


def test_a_file_with_non_finite_weights_is_refused_on_load(tmp_path):
    path = tmp_path / 'model.pth.tar'
    torch.save({'backbone.bn.running_var': torch.tensor([float('nan')])}, path)
    with pytest.raises(UserError, match='backbone.bn.running_var holds NaN or infinite values'):
        load_file(str(path), 'pretext model')


@pytest.mark.parametrize('failure, reason', [
    # what torch.save and np.save raise on a full disk (measured on a 64 KiB tmpfs), and a refused write
    (RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598'), 'is the disk full?'),
    (OSError('100000 requested and 7664 written'), 'is the disk full?'),
    (OSError(errno.ENOSPC, 'No space left on device'), 'No space left on device'),
    (PermissionError(errno.EACCES, 'Permission denied'), 'Permission denied'),
])
def test_a_failed_write_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch, failure, reason):
    path = tmp_path / 'checkpoint.pth.tar'
    atomic_save({'epoch': 1}, str(path))
    before = path.read_bytes()

    def fail(obj, f):
        raise failure
    monkeypatch.setattr(torch, 'save', fail)
    with pytest.raises(UserError) as info:
        atomic_save({'epoch': 2}, str(path))
    assert reason in str(info.value) and 'writable root_dir' in str(info.value) and '\n' not in str(info.value)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ['checkpoint.pth.tar']


def test_an_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, 'Permission denied')
    monkeypatch.setattr(tempfile, 'mkstemp', refuse)
    with pytest.raises(UserError, match='cannot write .*model.pth.tar: Permission denied; free some space or give'):
        atomic_save({}, str(tmp_path / 'model.pth.tar'))


def test_a_new_run_removes_the_temporary_files_a_killed_save_left(tmp_path):
    from stages.run import lock_run_folder
    (tmp_path / '.checkpoint.pth.tar.x1y2.tmp').write_bytes(b'half')
    (tmp_path / 'model.pth.tar').write_bytes(b'kept')
    lock_run_folder(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.run.lock', 'model.pth.tar']


def test_max_steps_caps_whole_epochs(capsys):
    from stages.run import cap_epochs
    cfg = EasyDict(epochs=10, batch_size=10, max_steps=40)
    cap_epochs(cfg, 95)  # 9 steps an epoch: 90 steps > 40, so ceil(40 / 9) = 5 epochs
    assert cfg.epochs == 5 and 'max_steps 40: 5 epochs of 9 steps instead of 10' in capsys.readouterr().out
    cap_epochs(cfg, 95)  # idempotent: a resumed run caps to the same epochs
    assert cfg.epochs == 5
    for images, max_steps, epochs in [(95, 90, 10), (95, None, 10), (5, 3, 3)]:  # under the cap; none; tiny data
        cfg = EasyDict(epochs=10, batch_size=10, max_steps=max_steps)
        cap_epochs(cfg, images)
        assert cfg.epochs == epochs


@pytest.mark.parametrize('images, epochs', [
    (200, 30),     # 2 steps an epoch (batch 100): ceil(60 / 2) = 30 epochs
    (50, 60),      # a batch of all 50 images: one step an epoch, 60 epochs
    (5000, 5),     # 50 steps an epoch: ceil(60 / 50) = 2 epochs, raised to min_epochs 5
    (10, 60),      # fewer images than the batch: one step an epoch
])
def test_steps_set_the_epochs_between_min_epochs_and_epochs(images, epochs):
    from stages.run import cap_epochs
    cfg = EasyDict(epochs=100, min_epochs=5, batch_size=100, steps=60)
    cap_epochs(cfg, images)
    assert cfg.epochs == epochs
    cap_epochs(cfg, images)  # idempotent
    assert cfg.epochs == epochs
    cfg = EasyDict(epochs=40, batch_size=100, steps=60)  # the ceiling
    cap_epochs(cfg, 50)
    assert cfg.epochs == 40


def test_steps_and_max_steps_are_not_given_together():
    from stages.run import cap_epochs
    with pytest.raises(UserError, match='give steps .* or max_steps .*, not both'):
        cap_epochs(EasyDict(epochs=10, batch_size=10, steps=5, max_steps=5), 100)


def test_only_rank_zero_writes_pictures_and_each_write_has_a_temporary_file_of_its_own(tmp_path, monkeypatch):
    """Under torchrun every process may draw a picture (the K estimate's num_clusters.png): two processes that wrote
    through one temporary name raced (one renamed the other's file away: FileNotFoundError on rank 1)."""
    from utils import checkpoint, plots
    report = {'community_sizes': [30, 20], 'cluster_sizes': [30, 20], 'min_size': 5, 'max_size': 40}
    monkeypatch.setattr(checkpoint, 'is_main', lambda: False)
    plots.save_num_clusters_plot(report, 2, str(tmp_path / 'k.png'))
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(checkpoint, 'is_main', lambda: True)
    names = []
    monkeypatch.setattr(os, 'replace', lambda src, dst, replace=os.replace: names.append(src) or replace(src, dst))
    for _ in range(2):
        plots.save_num_clusters_plot(report, 2, str(tmp_path / 'k.png'))
    assert os.listdir(tmp_path) == ['k.png'] and len(set(names)) == 2
    assert Image.open(tmp_path / 'k.png').format == 'PNG'
