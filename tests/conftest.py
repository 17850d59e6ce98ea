import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_CFG = os.path.join(ROOT, 'configs', 'pretext', 'simclr_digits.yml')
PHOTOS = os.path.join(ROOT, 'configs', 'image_folder_pretrained.yml')


def write_env(folder, data_root=None):
    """An env file in `folder`: outputs under folder/results, datasets under data_root (folder/data), offline."""
    path = folder / 'env.yml'
    path.write_text(f'root_dir: {folder / "results"}\ndata_root: {data_root or folder / "data"}\ndownload: false\n')
    return str(path)


@pytest.fixture
def env_file(tmp_path):
    return write_env(tmp_path)


def interrupt_on_call(monkeypatch, module, name, call):
    """Make module.name raise KeyboardInterrupt on its `call`-th call (a user's Ctrl-C mid-run);
    returns a function that restores the original."""
    real, calls = getattr(module, name), []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(module, name, interrupted)
    return lambda: monkeypatch.setattr(module, name, real)


def interrupted_then_resumed(monkeypatch, stage, args, epoch=3):
    """stage.main(args) stopped by Ctrl-C in its `epoch`-th epoch, then continued with --resume."""
    import pytest
    from stages import epochs
    restore = interrupt_on_call(monkeypatch, epochs, 'train_epoch', epoch)
    with pytest.raises(SystemExit) as e:
        stage.main(args)
    assert e.value.code == 130
    restore()
    stage.main(args + ['--resume'])


def tiny_digits_args(env_file, *extra):
    """simclr.py arguments for a few-second run on 256 digits."""
    return ['--config_env', env_file, '--config_exp', DIGITS_CFG, 'epochs=2', 'batch_size=64',
            'train_subset=256', 'val_subset=256', 'backbone_kwargs.widths=[8, 16, 16, 16]', 'knn_every=1',
            *extra]


def photo_template_run(tmp_path, env_file, *extra, folder=None):
    """The photo template's pretext stage on `folder` (by default 40 digit photos of four classes, written to
    tmp_path/photos) over a seeded small CNN's weights file: returns (the stages' arguments, the run's folder)."""
    import torch

    import simclr
    from benchmarks.digits_folder import write_digits
    from models.small_cnn import small_cnn
    if folder is None:
        folder = tmp_path / 'photos'
        write_digits(str(folder), size=16, classes=[0, 1, 4, 7], limit=40)
    torch.manual_seed(0)
    torch.save(small_cnn(widths=[8, 16, 16, 16])['backbone'].state_dict(), tmp_path / 'trunk.pth')
    args = ['--config_env', env_file, '--config_exp', PHOTOS, f'db_kwargs.path={folder}',
            'db_kwargs.image_size=16', 'num_classes=4', *extra]
    simclr.main(args + ['pretext.backbone=small_cnn', f'pretext.backbone_weights={tmp_path / "trunk.pth"}',
                        'pretext.backbone_kwargs={widths: [8, 16, 16, 16]}'])
    return args, tmp_path / 'results' / os.path.basename(str(folder))
