"""torchrun support: one process per device; without torchrun (WORLD_SIZE unset or 1) nothing here does anything.

    torchrun --nproc_per_node=4 scan.py --config_env ... --config_exp ...

`batch_size` stays the global batch: each of the W processes trains on its 1/W share, and every loss is
computed on the outputs gathered (with gradients) from all processes, so W processes follow the same loss
curve as one (with `sync_bn`). Files are written by rank 0 only; every rank reads them.
"""
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn

from utils.errors import UserError


def launched():
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def init(device):
    """Join torchrun's process group (nccl on CUDA, gloo on the CPU); returns this process's device.
    Ranks other than 0 print nothing."""
    if not launched() or dist.is_initialized():
        return device
    if device.type == 'cuda':
        local = int(os.environ.get('LOCAL_RANK', '0'))
        torch.cuda.set_device(local)
        device = torch.device('cuda', local)
    dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    if dist.get_rank() != 0:
        sys.stdout = open(os.devnull, 'w')
    return device


def shutdown():
    """Leave the process group before the interpreter exits (gloo's threads torn down at exit can abort a rank:
    'terminate called without an active exception')."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world():
    return dist.get_world_size() if dist.is_initialized() else 1


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def is_main():
    return rank() == 0


def local_part(n):
    """This process's contiguous share of a global batch of n: a slice."""
    w = world()
    if n % w:
        raise UserError(f'batch_size {n} must be divisible by the number of processes ({w})')
    return slice(rank() * n // w, (rank() + 1) * n // w)


def gather(x):
    """Concatenate x [b, ...] of every process along dim 0 in rank order, with gradients to every part."""
    if world() == 1:
        return x
    import torch.distributed.nn.functional as dnn
    return torch.cat(dnn.all_gather(x.contiguous()))


@torch.no_grad()
def gather_uneven(x):
    """As gather, without gradients, for parts of different lengths (dataset shards)."""
    if world() == 1:
        return x
    sizes = [torch.zeros((), dtype=torch.long, device=x.device) for _ in range(world())]
    dist.all_gather(sizes, torch.tensor(len(x), device=x.device))
    longest = int(max(sizes))
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(world())]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(s)] for p, s in zip(parts, sizes)])


@torch.no_grad()
def gather_columns(x):
    """x [M, k] of every process side by side: [M, W k], in rank order (equal shapes)."""
    parts = [torch.empty_like(x) for _ in range(world())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=1)


def shard(n):
    """This process's contiguous range of n dataset items (the last ones may be shorter)."""
    per = -(-n // world())
    return range(min(rank() * per, n), min((rank() + 1) * per, n))


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the batch of every process (statistics all-reduced with gradients); works on the CPU,
    where torch's SyncBatchNorm does not."""

    def forward(self, x):
        if not self.training or world() == 1:
            return super().forward(x)
        import torch.distributed.nn.functional as dnn
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count])
        stats = dnn.all_reduce(stats)
        c = x.shape[1]
        n = stats[-1]
        mu = stats[:c] / n
        var = stats[c:2 * c] / n - mu * mu
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mu.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
            self.num_batches_tracked += 1
        y = (x - mu.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1) if self.affine else y


def sync_batchnorm(module, device):
    """Every BatchNorm2d -> torch's SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere, keeping the same parameter
    and buffer objects (an optimiser built before still updates them)."""
    if device.type == 'cuda':
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            new._parameters, new._buffers = child._parameters, child._buffers
            setattr(module, name, new)
        else:
            sync_batchnorm(child, device)
    return module


def wrap(model, cfg, device):
    """DistributedDataParallel around `model` under torchrun (after sync_bn when asked); `model` itself otherwise."""
    if world() == 1:
        return model
    if cfg.get('sync_bn'):
        sync_batchnorm(model, device)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None)

