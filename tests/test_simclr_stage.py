"""simclr.py main() end to end on tiny data."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import simclr
from stages import epochs
from conftest import ROOT, interrupt_on_call, tiny_digits_args, write_env


def out_dir(tmp_path, name='digits'):
    return tmp_path / 'results' / name / 'pretext'


def test_tiny_run_writes_every_output(env_file, tmp_path):
    result = simclr.main(tiny_digits_args(env_file))
    out = out_dir(tmp_path)
    for name in ('config.yml', 'log.jsonl', 'training_curve.png', 'checkpoint.pth.tar', 'model.pth.tar',
                 'topk-train-neighbors.npy', 'topk-val-neighbors.npy', 'metrics.json'):
        assert (out / name).is_file(), name
    train_nn = np.load(out / 'topk-train-neighbors.npy')
    val_nn = np.load(out / 'topk-val-neighbors.npy')
    assert train_nn.shape == (256, 21) and val_nn.shape == (256, 6)
    assert np.array_equal(train_nn[:, 0], np.arange(256))
    metrics = json.load(open(out / 'metrics.json'))
    assert set(metrics) == {'neighbor_acc', 'knn_acc', 'search', 'seconds'} and metrics == result
    assert metrics['search'] == {'search': 'exact'}
    assert 0.1 < metrics['neighbor_acc'] <= 1 and 0.1 < metrics['knn_acc'] <= 1
    log = [json.loads(line) for line in open(out / 'log.jsonl')]
    assert [r['epoch'] for r in log] == [1, 2] and all('knn_acc' in r and 'loss' in r for r in log)
    state = torch.load(out / 'model.pth.tar', weights_only=True)
    assert 'backbone.features.0.weight' in state and 'contrastive_head.2.weight' in state  # bare state_dict
    assert Image.open(out / 'training_curve.png').size[0] > 100


def test_resume_after_interruption_matches_uninterrupted_run(env_file, tmp_path, monkeypatch):
    args = tiny_digits_args(env_file, 'epochs=3')
    simclr.main(args + [f'root_dir={tmp_path}/full'])
    reference = torch.load(tmp_path / 'full' / 'digits' / 'pretext' / 'model.pth.tar', weights_only=True)

    restore = interrupt_on_call(monkeypatch, epochs, 'train_epoch', 3)
    with pytest.raises(SystemExit) as e:
        simclr.main(args + [f'root_dir={tmp_path}/cut'])
    assert e.value.code == 130
    cut = tmp_path / 'cut' / 'digits' / 'pretext'
    assert not (cut / 'model.pth.tar').exists()
    assert torch.load(cut / 'checkpoint.pth.tar', weights_only=True)['epoch'] == 2
    restore()
    simclr.main(args + [f'root_dir={tmp_path}/cut', '--resume'])
    resumed = torch.load(cut / 'model.pth.tar', weights_only=True)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    assert [json.loads(line)['epoch'] for line in open(cut / 'log.jsonl')] == [1, 2, 3]


def test_existing_run_needs_resume_and_an_unchanged_config(env_file, tmp_path, capsys):
    simclr.main(tiny_digits_args(env_file, 'epochs=1'))
    checkpoint = out_dir(tmp_path) / 'checkpoint.pth.tar'
    before = checkpoint.read_bytes()
    with pytest.raises(SystemExit) as e:
        simclr.main(tiny_digits_args(env_file, 'epochs=1'))
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'pass --resume' in err and 'name=NEW' in err
    with pytest.raises(SystemExit):
        simclr.main(tiny_digits_args(env_file, 'epochs=1', 'optimizer_kwargs.lr=0.1',
                                     'augmentation_kwargs.random_affine.degrees=20', '--resume'))
    err = capsys.readouterr().err
    # only the keys that differ, dotted as typed, not both configs
    assert err.count('\n') == 1 and len(err) < 400, err
    assert 'augmentation_kwargs.random_affine.degrees (15 -> 20)' in err and 'optimizer_kwargs.lr (' in err
    assert checkpoint.read_bytes() == before
    # resuming a finished run re-mines without training again, and keeps the run's stage time
    trained = json.load(open(out_dir(tmp_path) / 'metrics.json'))
    simclr.main(tiny_digits_args(env_file, 'epochs=1', 'device=cpu', '--resume'))
    assert checkpoint.read_bytes() == before
    again = json.load(open(out_dir(tmp_path) / 'metrics.json'))
    assert again['seconds'] == trained['seconds'] and again['rerun_seconds'] > 0 and 'rerun_seconds' not in trained


def test_mine_only_from_a_scan_layout_pretext_model(env_file, tmp_path, capsys):
    from easydict import EasyDict
    from models import get_contrastive_model
    torch.manual_seed(0)
    cfg = EasyDict(backbone='small_cnn', train_db_name='digits', channels=1,
                   backbone_kwargs={'widths': [8, 16, 16, 16], 'pools': [False, True, False, True]},
                   model_kwargs={'head': 'mlp', 'features_dim': 64})
    model = get_contrastive_model(cfg)
    out = out_dir(tmp_path)
    out.mkdir(parents=True)
    torch.save(model.state_dict(), out / 'model.pth.tar')  # what SCAN releases: a bare state_dict
    simclr.main(tiny_digits_args(env_file))
    assert 'mine-only' in capsys.readouterr().out
    assert not (out / 'checkpoint.pth.tar').exists() and not (out / 'log.jsonl').exists()
    assert np.load(out / 'topk-train-neighbors.npy').shape == (256, 21)
    # the downloaded file is untouched
    assert all(torch.equal(v, torch.load(out / 'model.pth.tar')[k]) for k, v in model.state_dict().items())


def test_pil_path_and_unlabelled_folder(tmp_path, env_file):
    rng = np.random.default_rng(0)
    folder = tmp_path / 'data' / 'pool'
    folder.mkdir(parents=True)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), 'L').save(folder / f'{i:02d}.png')
    result = simclr.main(tiny_digits_args(env_file, 'train_db_name=image_folder', 'val_db_name=image_folder',
                                          'train_split=""', 'val_split=""', 'db_kwargs={path: pool}',
                                          'name=pool', 'augment_on_device=false', 'epochs=1', 'batch_size=8',
                                          'num_neighbors=5', 'knn_k=5'))
    assert result['neighbor_acc'] is None and result['knn_acc'] is None
    assert np.load(out_dir(tmp_path, 'pool') / 'topk-train-neighbors.npy').shape == (24, 6)


def test_mine_only_without_a_model_is_an_error(env_file, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        simclr.main(tiny_digits_args(env_file, '--mine_only'))
    assert e.value.code == 2 and 'pretext model not found' in capsys.readouterr().err
    assert not os.path.exists(out_dir(tmp_path))


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_mixed_precision_and_channels_last_train_close_to_fp32(env_file, tmp_path, amp):
    import json
    reference = simclr.main(tiny_digits_args(env_file, 'epochs=1', 'device=cpu'))
    (tmp_path / amp).mkdir()
    env = write_env(tmp_path / amp)
    fast = simclr.main(tiny_digits_args(env, 'epochs=1', 'device=cpu', f'amp={amp}', 'channels_last=true'))
    log = [json.loads(line) for line in open(tmp_path / amp / 'results' / 'digits' / 'pretext' / 'log.jsonl')]
    first = [json.loads(line) for line in open(tmp_path / 'results' / 'digits' / 'pretext' / 'log.jsonl')]
    assert log[0]['loss'] == pytest.approx(first[0]['loss'], rel=0.02) and log[0]['loss'] != first[0]['loss']
    assert abs(fast['neighbor_acc'] - reference['neighbor_acc']) < 0.1


def test_a_diverging_run_stops_before_saving_non_finite_weights(env_file, tmp_path, capsys):
    # lr 1e6: epoch 1 still has a finite loss, its update leaves NaN in BatchNorm statistics
    with pytest.raises(SystemExit) as exit_info:
        simclr.main(tiny_digits_args(env_file, 'optimizer_kwargs.lr=1e6', 'epochs=4', 'knn_every=0'))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and 'holds NaN or infinite values' in err and 'lower the learning rate' in err
    out = out_dir(tmp_path)
    assert not (out / 'model.pth.tar').exists()
    if (out / 'checkpoint.pth.tar').exists():  # what was kept loads, every value finite
        from utils.checkpoint import load_file
        assert load_file(str(out / 'checkpoint.pth.tar'))['epoch'] >= 1


def test_one_run_per_folder_and_a_killed_holder_does_not_block(env_file, tmp_path, capsys):
    pytest.importorskip('fcntl')
    import subprocess
    import sys
    out = out_dir(tmp_path)
    out.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, '-c', (
        'import fcntl, os, sys, time\n'
        f'f = open({str(out / ".run.lock")!r}, "a+")\n'
        'fcntl.flock(f, fcntl.LOCK_EX)\n'
        'f.seek(0); f.truncate(); f.write(f"pid {os.getpid()} on here"); f.flush()\n'
        'print("locked", flush=True)\n'
        'time.sleep(60)\n')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(SystemExit) as exit_info:
            simclr.main(tiny_digits_args(env_file, 'epochs=1'))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert f'is in use by another run (pid {holder.pid} on here)' in err and '\n' not in err
        assert sorted(p.name for p in out.iterdir()) == ['.run.lock']  # nothing written
    finally:
        holder.kill()  # as kill -9: the kernel drops the lock
        holder.wait()
    assert simclr.main(tiny_digits_args(env_file, 'epochs=1'))['knn_acc'] is not None


def test_an_output_folder_that_cannot_be_made_is_one_line(env_file, tmp_path, capsys):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    with pytest.raises(SystemExit) as exit_info:
        simclr.main(tiny_digits_args(env_file, f'root_dir={blocker}/results'))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and '\n' not in err
    assert err.startswith(f'error: cannot write {blocker}/results') and 'writable root_dir' in err


def test_a_corrupt_image_stops_the_run_before_anything_is_written(tmp_path, env_file, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / 'data' / 'pool'
    folder.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), 'L').save(folder / f'{i:02d}.png')
    (folder / '05.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 20)  # a broken PNG
    with pytest.raises(SystemExit) as exit_info:
        simclr.main(tiny_digits_args(env_file, 'train_db_name=image_folder', 'val_db_name=image_folder',
                                     'train_split=""', 'val_split=""', 'db_kwargs={path: pool}', 'name=pool',
                                     'augment_on_device=true', 'epochs=1', 'batch_size=4', 'num_neighbors=3'))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and '\n' not in err
    assert err.startswith(f'error: cannot read image {folder / "05.png"}') and 'remove or replace the file' in err
    assert not (tmp_path / 'results').exists()


def test_nnm_name_for_the_pretext_stage_says_what_it_is(tmp_path):
    import subprocess
    import sys
    from extract_feature import NOTE
    done = subprocess.run([sys.executable, 'extract_feature.py', '--config_exp', str(tmp_path / 'missing.yml')],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2  # simclr.py's own handling of bad input
    lines = done.stderr.strip().splitlines()
    assert lines[0] == NOTE and 'missing.yml' in lines[-1] and len(lines) == 2
