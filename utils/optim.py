"""Optimisers, learning-rate schedules, mixed precision and the optimisation step."""
import contextlib
import math

import torch

from utils.errors import UserError
from utils.stages import override

OPTIMIZERS = {'sgd': torch.optim.SGD, 'adam': torch.optim.Adam, 'adamw': torch.optim.AdamW}


def get_optimizer(cfg, params):
    if not isinstance(cfg.optimizer_kwargs.get('lr'), (int, float)) or isinstance(cfg.optimizer_kwargs['lr'], bool):
        raise UserError(f"optimizer_kwargs.lr must be set to a number, got {cfg.optimizer_kwargs.get('lr')!r}: give "
                        f"{override(cfg, 'optimizer_kwargs.lr', '0.001')} (or the value your recipe uses)")
    try:
        return OPTIMIZERS[cfg.optimizer](params, **cfg.optimizer_kwargs)
    except (TypeError, ValueError) as e:  # an unknown keyword; torch's range checks (lr, momentum, ...)
        raise UserError(f'optimizer_kwargs {dict(cfg.optimizer_kwargs)} do not fit {cfg.optimizer}: {e}') from None


def check_optimizer(cfg):
    """The optimizer with its optimizer_kwargs, built on a stand-in parameter: a bad keyword or value is a
    UserError before the run writes anything."""
    get_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])


def lr_at(cfg, epoch_float):
    """Learning rate at a fractional epoch (steps count: epoch + step / steps_per_epoch).

    cosine: SCAN's, from lr down to lr * lr_decay_rate**3; step: x lr_decay_rate at each of
    lr_decay_epochs; constant. Any of them after `warmup_epochs` of linear warm-up from 0.
    """
    base = cfg.optimizer_kwargs['lr']
    kw = cfg.scheduler_kwargs or {}
    warmup = kw.get('warmup_epochs', 0)
    if epoch_float < warmup:
        return base * (epoch_float + 1e-3) / warmup
    if cfg.scheduler == 'cosine':
        eta_min = base * kw.get('lr_decay_rate', 0.1) ** 3
        progress = (epoch_float - warmup) / max(cfg.epochs - warmup, 1e-8)
        return eta_min + (base - eta_min) * (1 + math.cos(math.pi * min(progress, 1.0))) / 2
    if cfg.scheduler == 'step':
        passed = sum(epoch_float >= e for e in kw.get('lr_decay_epochs', []))
        return base * kw.get('lr_decay_rate', 0.1) ** passed
    return base


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group['lr'] = lr


AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def autocast(cfg, device):
    """The forward pass's precision, `amp: none|bf16|fp16` (BatchNorm and the losses stay fp32)."""
    amp = cfg.get('amp', 'none')
    if amp == 'none':
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def grad_scaler(cfg, device):
    """fp16 needs its gradients scaled against underflow; None otherwise."""
    return torch.amp.GradScaler(device.type) if cfg.amp == 'fp16' else None


def check_finite_loss(loss, epoch):
    """A non-finite loss (or a sum of losses) stops the run before the epoch is evaluated or saved, so the weights
    it spoilt are never kept. Reading it waits for the device: the epoch loop calls it every few steps."""
    if not torch.isfinite(loss):
        kept = ('no epoch had finished, nothing was saved' if epoch == 0
                else 'the last good epoch is in checkpoint.pth.tar')
        raise UserError(f'loss became {loss.item()} in epoch {epoch + 1}; lower the learning rate ({kept})')


def optimizer_step(optimizer, loss, scaler=None):
    """Backward and step (through the grad scaler under fp16)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
