import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_CFG = os.path.join(ROOT, 'configs', 'pretext', 'simclr_digits.yml')


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
