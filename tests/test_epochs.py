"""The epoch loop every stage runs (stages/epochs.py): one optimiser step per batch that gives a loss, the logs'
means and ratios, the step's `after` hook, and best-epoch selection."""
import pytest
import torch
from easydict import EasyDict

from stages.epochs import EpochRunner, train_epoch


def sgd_config(lr=0.1, epochs=1):
    return EasyDict(optimizer='sgd', optimizer_kwargs={'lr': lr}, scheduler='constant', scheduler_kwargs={},
                    epochs=epochs)


def test_train_epoch_steps_logs_and_skips():
    """w minimises (w - x)^2 over the batches x; the batch None gives no loss (no step, counted as skipped). With a
    constant lr each step is w <- w - lr * 2 (w - x): checked against that closed form."""
    w = torch.nn.Parameter(torch.zeros(()))
    cfg = sgd_config()
    optimizer = torch.optim.SGD([w], lr=cfg.optimizer_kwargs['lr'])
    batches = [1.0, None, 3.0, 2.0]
    after_calls = []

    def step(x):
        logs = {'share': (0 if x is None else 1, 2)}
        if x is None:
            return None, logs, None
        loss = (w - x) ** 2
        logs['loss'] = loss.item()
        return loss, logs, lambda: after_calls.append(w.item())

    record = train_epoch(torch.nn.Identity(), batches, step, optimizer, cfg, 0)
    expected, losses = 0.0, []
    for x in (1.0, 3.0, 2.0):
        losses.append((expected - x) ** 2)
        expected -= 0.1 * 2 * (expected - x)
    assert w.item() == pytest.approx(expected)
    assert after_calls == pytest.approx([0.2, 0.2 - 0.2 * (0.2 - 3.0), expected])  # after each optimiser step
    assert record['loss'] == pytest.approx(sum(losses) / 3)  # over the steps that gave a loss
    assert record['share'] == pytest.approx(3 / 8)  # sum of numerators over sum of denominators
    assert record['skipped_batches'] == 1 and record['lr'] == 0.1


def test_train_epoch_reads_tensor_logs_once_and_checks_the_loss_every_few_steps(monkeypatch):
    """Log values may be tensors (summed on their device, no host read per step); a non-finite loss is caught at
    the next check (every CHECK_EVERY steps), so the steps between ran on."""
    from stages import epochs
    from utils.errors import UserError
    w = torch.nn.Parameter(torch.zeros(()))
    cfg = sgd_config()
    optimizer = torch.optim.SGD([w], lr=0.1)
    steps = []

    def step(x):
        steps.append(x)
        loss = (w - x) ** 2
        return loss, {'loss': loss.detach(), 'share': (torch.tensor(1), 2)}, None

    record = train_epoch(torch.nn.Identity(), [1.0, 3.0], step, optimizer, cfg, 0)
    assert record['loss'] == pytest.approx((1.0 + (0.2 - 3.0) ** 2) / 2) and record['share'] == 0.5
    assert record['steps'] == 2 and record['train_seconds'] >= 0
    monkeypatch.setattr(epochs, 'CHECK_EVERY', 3)
    steps.clear()
    with pytest.raises(UserError, match='loss became nan in epoch 4; lower the learning rate'):
        train_epoch(torch.nn.Identity(), [1.0, float('nan'), 2.0, 2.0, 2.0], step, optimizer, cfg, 3)
    assert len(steps) == 3


def test_train_epoch_schedule_follows_the_epoch_within_rounds():
    """A run of several rounds (AND's) restarts the schedule every cfg.epochs: the lr of epoch e is lr_at(e % epochs)."""
    w = torch.nn.Parameter(torch.zeros(()))
    cfg = sgd_config(epochs=4)
    cfg.scheduler_kwargs = {'warmup_epochs': 2}
    optimizer = torch.optim.SGD([w], lr=0.1)
    seen = []

    def step(_):
        seen.append(optimizer.param_groups[0]['lr'])
        return None, {}, None

    train_epoch(torch.nn.Identity(), [0, 1], step, optimizer, cfg, 5)  # epoch 5 of round 2 = epoch 1 of its round
    assert seen == pytest.approx([0.1 * (1 + 1e-3) / 2, 0.1 * (1.5 + 1e-3) / 2])


def test_keep_selects_the_lowest_loss_and_last_keeps_every_epoch(tmp_path):
    model = torch.nn.Linear(2, 2)
    cfg = EasyDict(sgd_config(), scan_dir=str(tmp_path), scan_checkpoint=str(tmp_path / 'checkpoint.pth.tar'),
                   amp='none')
    runner = EpochRunner(cfg, 'clustering', model, model.parameters(), method=None, state=None,
                         device=torch.device('cpu'))
    saved = []
    for epoch, loss in enumerate([0.5, 0.7, 0.3, 0.3]):
        runner.keep(epoch, loss, lambda e=epoch: saved.append(e), tag=epoch)
    assert saved == [0, 2] and runner.best == {'epoch': 2, 'loss': 0.3, 'tag': 2}  # ties keep the earlier epoch
    runner.keep(4, None, lambda: saved.append(4))
    assert saved == [0, 2, 4] and runner.best['epoch'] == 4
