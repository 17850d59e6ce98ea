"""benchmarks/speedrun.py: the one-command CIFAR-10 protocol, proven end to end on the CPU (--tiny) on an archive
written here, its data conversion read back by the stages' own CIFAR-10 reader, and every bad input one line."""
import io
import json
import os
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks'))
import speedrun  # noqa: E402
from data.cifar import CIFAR10  # noqa: E402

CLASSES = [f'class{c}' for c in range(10)]


def write_archive(path, train=10, test=4, size=32):
    """cifar10-jpg/{train,test}/<class>/NNNN.jpg: each class a colour of its own plus noise."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, 'w:gz') as tar:
        for split, n in (('train', train), ('test', test)):
            for c, name in enumerate(CLASSES):
                for i in range(n):
                    base = np.array([25 * c, 255 - 25 * c, (80 * c) % 256], dtype=np.float64)
                    pixels = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(pixels).save(buf, format='JPEG', quality=90)
                    info = tarfile.TarInfo(f'cifar10-jpg/{split}/{name}/{i:04d}.jpg')
                    info.size = len(buf.getvalue())
                    tar.addfile(info, io.BytesIO(buf.getvalue()))
    return path


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    return str(write_archive(tmp_path_factory.mktemp('archive') / 'cifar10-jpg.tar.gz'))


def expect_error(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        speedrun.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and words in err[0], err


def test_tiny_speedrun_runs_every_stage_and_reports_against_the_ceiling(archive, tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('x\n<!-- results:speedrun start -->\nold\n<!-- results:speedrun end -->\ny\n')
    out = tmp_path / 'out'
    speedrun.main([archive, str(out), '--tiny', '--readme', str(readme)])
    result = json.loads((out / 'speedrun.json').read_text())
    assert result['finished'] and result['mode'] == 'tiny' and result['device'] == 'CPU'
    assert result['data']['train'] == 100 and result['data']['reported_on'] == 40
    assert list(result['stages']) == ['pretext', 'scan', 'selflabel']
    for name, stage in result['stages'].items():
        assert stage['seconds'] > 0 and stage['ceiling_step_seconds'] > 0, name
        # 100 images in batches of 16: 6 optimiser steps, each timed against the model-only step of that batch
        assert stage['images_per_second'] == pytest.approx(stage['images_per_step'] / stage['step_seconds'])
        assert stage['of_ceiling'] == pytest.approx(stage['ceiling_step_seconds'] / stage['step_seconds'])
        assert stage['images_per_step'] == 16 * (2 if name in ('pretext', 'scan') else 1)
    log = [json.loads(line) for line in open(out / 'runs' / 'cifar-10' / 'pretext' / 'log.jsonl')]
    assert log[0]['steps'] == 6
    assert result['stages']['pretext']['train_seconds'] == pytest.approx(log[0]['train_seconds'], abs=0.01)
    (seconds, epoch, knn), = result['stages']['pretext']['knn_curve']
    assert epoch == 1 and knn == log[0]['knn_acc'] and seconds == log[0]['seconds']
    for name in ('scan', 'selflabel'):
        metrics = json.loads((out / 'runs' / 'cifar-10' / name / 'metrics.json').read_text())
        assert result['stages'][name]['metrics'] == {k: metrics[k] for k in ('acc', 'nmi', 'ari')}
    table = (out / 'speedrun.md').read_text()
    assert 'on CPU: finished' in table and '| SCAN + self-label |' in table
    assert 'old' in readme.read_text()  # a tiny run is a check: it leaves the README's results alone
    speedrun.main(['--render', str(out / 'speedrun.json'), '--readme', str(readme), '--results',
                   str(tmp_path / 'kept')])
    assert readme.read_text() == f'x\n<!-- results:speedrun start -->\n{table}<!-- results:speedrun end -->\ny\n'


def test_the_decoded_data_reads_back_as_cifar10_and_heldout_is_a_split_of_train(archive, tmp_path):
    splits, classes = speedrun.read_archive(archive, tiny=False)
    assert classes == CLASSES and splits['train'][0].shape == (100, 32, 32, 3)
    with tarfile.open(archive) as tar:  # the third training image of class 1, decoded here as PIL does
        raw = tar.extractfile('cifar10-jpg/train/class1/0002.jpg').read()
    assert np.array_equal(splits['train'][0][12], np.asarray(Image.open(io.BytesIO(raw)).convert('RGB')))
    speedrun.write_cifar_layout(splits, classes, str(tmp_path / 'full'), heldout=False)
    train, test = CIFAR10(str(tmp_path / 'full'), 'train', download=False), CIFAR10(str(tmp_path / 'full'), 'test',
                                                                                    download=False)
    assert np.array_equal(train.data, splits['train'][0]) and np.array_equal(train.targets, splits['train'][1])
    assert np.array_equal(test.data, splits['test'][0]) and train.classes == CLASSES
    speedrun.write_cifar_layout(splits, classes, str(tmp_path / 'held'), heldout=True)
    kept, held = CIFAR10(str(tmp_path / 'held'), 'train', download=False), CIFAR10(str(tmp_path / 'held'), 'test',
                                                                                   download=False)
    assert len(kept) == 90 and len(held) == 10  # a tenth of these 100 (HELDOUT of 50,000)
    rows = lambda x: {a.tobytes() for a in x}  # noqa: E731
    assert rows(kept.data) | rows(held.data) == rows(splits['train'][0]) and not rows(kept.data) & rows(held.data)


def test_bad_input_is_one_line_before_any_training(archive, tmp_path, capsys):
    expect_error(capsys, [str(tmp_path / 'missing.tar.gz'), str(tmp_path / 'o1'), '--tiny'], 'data archive not found')
    damaged = tmp_path / 'damaged.tar.gz'
    damaged.write_bytes(open(archive, 'rb').read()[:3000])
    expect_error(capsys, [str(damaged), str(tmp_path / 'o2'), '--tiny'], 'cannot read the data archive')
    wrong = tmp_path / 'wrong.tar.gz'
    with tarfile.open(wrong, 'w:gz') as tar:
        info = tarfile.TarInfo('photos/a.jpg')
        tar.addfile(info, io.BytesIO(b''))
    expect_error(capsys, [str(wrong), str(tmp_path / 'o3'), '--tiny'], 'does not hold cifar10-jpg/')
    (tmp_path / 'o4' / 'runs').mkdir(parents=True)
    expect_error(capsys, [archive, str(tmp_path / 'o4'), '--tiny'], 'holds a speedrun already')
    if not torch.cuda.is_available():
        expect_error(capsys, [archive, str(tmp_path / 'o5')], 'no CUDA device')
    assert not any((tmp_path / f'o{i}' / 'data').exists() for i in range(1, 6))


def test_a_batch_that_does_not_fit_is_one_line(archive, tmp_path, capsys, monkeypatch):
    def out_of_memory(*args):
        def step():
            raise torch.cuda.OutOfMemoryError('CUDA out of memory')
        return step

    monkeypatch.setattr(speedrun, 'model_only_step', out_of_memory)
    expect_error(capsys, [archive, str(tmp_path / 'o'), '--tiny'], 'pretext: a batch of 16 (32 images a step) does '
                 'not fit the GPU; give a smaller batch_size')
    assert not (tmp_path / 'o' / 'runs').exists() and not (tmp_path / 'o' / 'speedrun.json').exists()


def test_a_run_stopped_in_a_stage_leaves_the_finished_stages_and_the_timings_so_far(archive, tmp_path, monkeypatch):
    """A time limit's SIGTERM becomes KeyboardInterrupt (speedrun.stop): here the clustering stage is stopped
    after its first epoch, as the stage's own Ctrl-C handling reports it (exit 130)."""
    real = speedrun.MAINS['scan']

    def stopped_after_an_epoch(argv):
        real(argv)  # one epoch: its log record is written
        raise SystemExit(130)

    monkeypatch.setitem(speedrun.MAINS, 'scan', stopped_after_an_epoch)
    out = tmp_path / 'out'
    with pytest.raises(SystemExit):
        speedrun.main([archive, str(out), '--tiny'])
    result = json.loads((out / 'speedrun.json').read_text())
    assert not result['finished'] and result['total_seconds'] > 0
    assert 'metrics' in result['stages']['pretext'] and 'stopped' not in result['stages']['pretext']
    scan = result['stages']['scan']
    assert scan['stopped'] and 'metrics' not in scan and scan['step_seconds'] > 0 and scan['seconds'] > 0
    assert 'seconds' not in result['stages']['selflabel']  # not started: its ceiling only
    with pytest.raises(KeyboardInterrupt):
        speedrun.stop(15, None)
