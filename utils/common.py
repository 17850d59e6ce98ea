"""Device choice and seeding."""
import ctypes
import ctypes.util
import os
import random

import numpy as np
import torch

from utils.errors import UserError


def keep_freed_memory():
    """glibc only: serve every allocation from the heap and never give freed memory back to the OS. PyTorch on a
    CPU allocates and frees the large activation buffers of every step; glibc maps and unmaps each one (zeroed
    pages every time), which showed as 25-60 % system time in training runs. Memory then stays at the run's peak.
    Returns whether it applied."""
    name = ctypes.util.find_library('c')
    if os.name != 'posix' or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 40))
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False


def get_device(cfg):
    """`device: auto|cpu|cuda` (auto = cuda when available); `gpus` restricts the visible devices. On CUDA, cuDNN's
    autotuner is on (as in SCAN's scripts)."""
    if cfg.get('gpus'):
        os.environ['CUDA_VISIBLE_DEVICES'] = str(cfg.gpus)  # before CUDA initialises
    if cfg.device == 'cpu' or (cfg.device == 'auto' and not torch.cuda.is_available()):
        return torch.device('cpu')
    if not torch.cuda.is_available():
        raise UserError("device is 'cuda' but no CUDA GPU is available; use device=auto or device=cpu")
    torch.backends.cudnn.benchmark = True  # the batches keep one shape: cuDNN times its algorithms once, keeps the best
    return torch.device('cuda')


def seed_all(*seeds):
    """Seed python, numpy and torch from one or more integers (e.g. the run seed and the epoch).

    Seeding every epoch from (seed, epoch) makes an epoch's shuffling and augmentation
    independent of what ran before it, so a resumed run repeats an uninterrupted one.
    """
    value = int(np.random.SeedSequence([int(s) for s in seeds]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
    return value
