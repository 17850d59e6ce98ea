"""The epoch loop of every stage. simclr.py, scan.py and selflabel.py give their data, their training step and their
evaluation; EpochRunner owns the rest: the optimiser and its schedule, the grad scaler (mixed precision), resume
from a checkpoint, per-epoch seeding, the log, label-free best-epoch selection and the checkpoint after every epoch.

A training step is a function of one batch returning (loss, logs, after):
- loss: the scalar to minimise (under torchrun computed on the whole global batch: the step gathers what its loss
  needs from every process), or None when the batch holds nothing to learn from (no optimiser step then);
- logs: {name: value} for the epoch's log record, averaged over the steps that gave it; a (numerator, denominator)
  pair is summed over the steps and logged as the ratio of the sums;
- after: None, or a function called after the optimiser step (memory-bank and momentum-teacher updates).
"""
import time

import torch

from stages.run import save_checkpoint
from utils.checkpoint import restore
from utils.common import seed_all
from utils.logger import RunLog, progress
from utils.optim import check_finite_loss, get_optimizer, grad_scaler, lr_at, optimizer_step, set_lr
from utils.stages import STAGES

CHECK_EVERY = 50  # steps between the reads of the running loss on the host (non-finite check, progress)


def train_epoch(net, batches, step, optimizer, cfg, epoch, scaler=None, total_epochs=None):
    """One pass over `batches` with `step` (see the module's docstring); the learning rate follows the schedule
    within the epoch (a run of several rounds, AND's, restarts it every cfg.epochs). Returns the epoch's log
    entries: the logs' means, 'lr', 'train_seconds', 'steps' and 'skipped_batches' when a batch gave no loss.

    Nothing inside a step waits for the device: a log value may be a tensor, summed where it lives and read once
    per epoch, and the loss is checked for a non-finite value every CHECK_EVERY steps and at the end of the epoch,
    before anything of the epoch is evaluated or saved."""
    net.train()
    t0 = time.time()
    sums, counts, ratios, skipped, steps = {}, {}, set(), 0, len(batches)
    running = None  # the sum of the epoch's losses, on the device
    for i, batch in enumerate(progress(batches, steps, f'epoch {epoch + 1}/{total_epochs or cfg.epochs}')):
        set_lr(optimizer, lr_at(cfg, epoch % cfg.epochs + i / steps))
        loss, logs, after = step(batch)
        for key, value in logs.items():
            if isinstance(value, tuple):
                ratios.add(key)
            else:
                value = (value, 1)
            sums[key] = sums.get(key, 0.0) + _detached(value[0])
            counts[key] = counts.get(key, 0) + _detached(value[1])
        if loss is None:
            skipped += 1
            continue
        running = loss.detach().float() if running is None else running + loss.detach().float()
        optimizer_step(optimizer, loss, scaler)
        if after is not None:
            after()
        if (i + 1) % CHECK_EVERY == 0:
            check_finite_loss(running, epoch)
    if running is not None:
        check_finite_loss(running, epoch)
    means = {key: float(sums[key]) / max(float(counts[key]), 1) for key in sums}
    means.update({key: round(means[key], 5) for key in ratios})
    record = {'loss': None, **means, 'lr': optimizer.param_groups[0]['lr'], 'steps': steps - skipped,
              'train_seconds': round(time.time() - t0, 3)}  # the reads above waited for the device
    if skipped:
        record['skipped_batches'] = skipped
    return record


def _detached(value):
    return value.detach() if isinstance(value, torch.Tensor) else value


class EpochRunner:
    """One stage's training of `model` (its trainable `params`) by `method`, from `state` (the checkpoint start_run
    returned, or None), for `epochs` (cfg.epochs by default), with `ema` (utils.ema.EMA: its shadow restored and
    checkpointed). After __init__ the run can add candidates before the first epoch (keep(0, ...)), then fit()."""

    def __init__(self, cfg, stage, model, params, method, state, device, epochs=None, ema=None):
        self.cfg, self.stage, self.model, self.method, self.ema = cfg, stage, model, method, ema
        self.folder, self.checkpoint = cfg[f'{STAGES[stage].folder}_dir'], cfg[f'{STAGES[stage].folder}_checkpoint']
        self.epochs = epochs or cfg.epochs
        self.optimizer = get_optimizer(cfg, params)
        self.scaler = grad_scaler(cfg, device)
        self.start_epoch, self.best = 0, None  # best: the saved model's {'epoch', 'loss', ...} (keep)
        if state is not None:
            self.start_epoch = restore(state, model=model, optimizer=self.optimizer,
                                       ema=ema.shadow if ema is not None else None)
            method.load_state_dict(state)
            self.best = state.get('best')
            print(f'resuming {self.checkpoint} at epoch {self.start_epoch + 1}/{self.epochs}')
        self.log = RunLog(self.folder)

    @property
    def finished(self):
        """Whether the run had finished before this call (a --resume of a finished run trains nothing)."""
        return self.start_epoch >= self.epochs

    def keep(self, epoch, loss, save, **info):
        """Label-free best-epoch selection: the model of `epoch` is saved (save()) when its `loss` is the lowest so
        far; a loss of None (selection by the last epoch) always keeps it. `info` goes into self.best."""
        if self.best is None or loss is None or loss < self.best['loss']:
            self.best = {'epoch': epoch, 'loss': loss, **info}
            save()

    def fit(self, net, batches, step, begin=None, evaluate=None):
        """The epochs left: each seeded (cfg.seed, epoch), its record begun by begin(epoch) -> {entries}, trained
        (train_epoch through `net`: the model or its DDP/compiled wrapper), completed by evaluate(epoch, record) ->
        record (which may call keep), logged and checkpointed."""
        for epoch in range(self.start_epoch, self.epochs):
            seed_all(self.cfg.seed, epoch)
            t0 = time.time()
            record = {'epoch': epoch + 1, **(begin(epoch) if begin else {})}
            record.update(train_epoch(net, batches, step, self.optimizer, self.cfg, epoch, self.scaler, self.epochs))
            if evaluate is not None:
                record = evaluate(epoch, record)
            record['seconds'] = round(time.time() - t0, 2)
            save_checkpoint(self.checkpoint, self.cfg, self.stage, model=self.model.state_dict(),
                            optimizer=self.optimizer.state_dict(), epoch=epoch + 1, best=self.best,
                            ema=self.ema.shadow.state_dict() if self.ema is not None else None,
                            **self.method.state_dict())
            self.log.log(record)
