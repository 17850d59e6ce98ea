"""The batched strong augmentation ('ours') against data/randaugment.py and torchvision's pipeline."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from data.batch_augment import take
from data.batch_randaugment import BATCH_OPERATIONS, NAMES, BatchStrongAugment
from data.randaugment import OPERATIONS, Cutout
from data.transforms import strong_transform
from utils.errors import UserError

NORM = {'mean': [0.5, 0.4, 0.3], 'std': [0.2, 0.25, 0.3]}


def photos(n=12, size=32, seed=0):
    """Smooth colour images (upsampled noise): real histograms for equalize/autocontrast, edges for geometry."""
    rng = np.random.default_rng(seed)
    return np.stack([np.asarray(Image.fromarray(rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8))
                                .resize((size, size), Image.BILINEAR)) for _ in range(n)])


def as_batch(arrays):
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize('name', NAMES)
def test_each_operation_matches_pil(name):
    op, bounds = OPERATIONS[name]
    imgs = photos()
    rng = np.random.default_rng(1)
    for _ in range(4):
        v = float(rng.uniform(*bounds)) if bounds else None
        ref = np.stack([np.asarray(op(Image.fromarray(im), v)) for im in imgs]).astype(np.float32)
        ours = BATCH_OPERATIONS[name](as_batch(imgs).float(), torch.full((len(imgs),), v or 0.0))
        diff = np.abs(ours.permute(0, 2, 3, 1).numpy() - ref)
        # rounding of PIL's fixed-point geometry / double-precision tables moves a few pixels at most
        assert (diff > 1).mean() < 0.005 and (diff > 0).mean() < 0.01, (name, v)


def test_operations_handle_single_channel_images():
    imgs = photos(4)[..., 0]
    for name, (op, bounds) in OPERATIONS.items():
        v = sum(bounds) / 2 if bounds else None
        ref = np.stack([np.asarray(op(Image.fromarray(im), v)) for im in imgs]).astype(np.float32)
        ours = BATCH_OPERATIONS[name](torch.from_numpy(imgs).unsqueeze(1).float(), torch.full((4,), v or 0.0))
        assert (np.abs(ours[:, 0].numpy() - ref) > 1).mean() < 0.005, name


def test_flip_and_crop_give_a_padded_window_and_cover_every_offset():
    torch.manual_seed(0)
    x = as_batch(photos(1)).repeat(2000, 1, 1, 1)
    aug = BatchStrongAugment({'crop_size': 32, 'normalize': {'mean': [0] * 3, 'std': [1 / 255] * 3},
                              'num_strong_augs': 0})
    out = aug(x).round().to(torch.uint8)
    padded = torch.nn.functional.pad(x[0], (4, 4, 4, 4))
    windows = {(dy, dx, flip): (padded.flip(-1) if flip else padded)[:, dy:dy + 32, dx:dx + 32]
               for dy in range(9) for dx in range(9) for flip in (0, 1)}
    code = torch.randint(1, 2 ** 20, (3 * 32 * 32,), generator=torch.Generator().manual_seed(0))
    keys = torch.stack(list(windows.values())).flatten(1).long() @ code  # an exact integer fingerprint
    match = (out.flatten(1).long() @ code).view(-1, 1) == keys.view(1, -1)
    assert bool(match.any(1).all())  # every output is one of torchvision's candidate windows
    counts = np.bincount(match.float().argmax(1).numpy(), minlength=len(windows))
    assert (counts > 0).sum() == len(windows)  # all 9 x 9 offsets, both flips
    assert 0.45 < counts[1::2].sum() / 2000 < 0.55


def test_operation_choice_and_magnitudes_are_uniform_and_per_sample():
    torch.manual_seed(0)
    aug = BatchStrongAugment({'crop_size': 32, 'normalize': NORM, 'cutout_kwargs': {'n_holes': 1, 'length': 16}})
    p = aug.sample(14000, (3, 32, 32), 'cpu')
    counts = torch.bincount(p['ops'].flatten(), minlength=len(NAMES)).float()
    expected = 14000 * 4 / len(NAMES)
    assert bool(((counts - expected).abs() < 5 * expected ** 0.5).all())
    assert 0 <= float(p['magnitudes'].min()) and float(p['magnitudes'].max()) < 1
    assert abs(float(p['magnitudes'].mean()) - 0.5) < 0.01
    # slots and samples independent: op pairs of slots 0 and 1 cover all 14 x 14 combinations
    assert len(set((p['ops'][:, 0] * 14 + p['ops'][:, 1]).tolist())) == 196


def test_each_sample_depends_only_on_its_own_parameters():
    torch.manual_seed(0)
    x = as_batch(photos(1)).repeat(48, 1, 1, 1)
    aug = BatchStrongAugment({'crop_size': 32, 'normalize': NORM, 'cutout_kwargs': {'n_holes': 1, 'length': 16}})
    p = aug.sample(48, x.shape[1:], 'cpu')
    out = aug.apply(x, p)
    distinct = torch.cdist(out.flatten(1), out.flatten(1))[~torch.eye(48, dtype=torch.bool)]
    assert bool((distinct > 1e-3).all())
    part = torch.tensor([5, 17, 30])  # a share of the batch (one process's, under torchrun)
    assert torch.allclose(aug.apply(x[part], take(p, part)), out[part], atol=1e-5)


def test_cutout_area_matches_the_reference():
    torch.manual_seed(0)
    np.random.seed(0)
    aug = BatchStrongAugment({'crop_size': 32, 'normalize': {'mean': [0.5] * 3, 'std': [1] * 3},  # padding != 0
                              'num_strong_augs': 0, 'cutout_kwargs': {'n_holes': 1, 'length': 16}})
    ones = torch.full((4000, 3, 32, 32), 255, dtype=torch.uint8)
    ours = (aug(ones) == 0).all(1).flatten(1).float().mean(1)
    ref = torch.stack([(Cutout(1, 16)(torch.ones(3, 32, 32)) == 0).all(0).float().mean() for _ in range(4000)])
    assert float(ours.mean()) == pytest.approx(float(ref.mean()), abs=0.006)  # about 0.19 of the image
    assert float(ours.std()) == pytest.approx(float(ref.std()), abs=0.006)


def two_sample_z(a, b):
    """z of the difference of the means of two samples (dim 0), one per remaining entry."""
    return (a.mean(0) - b.mean(0)) / ((a.var(0) + b.var(0)) / len(a)).sqrt()


def test_pipeline_output_statistics_match_the_reference():
    # the PIL path draws its operations with Python's random module, the batch path with torch and numpy
    random.seed(0)
    torch.manual_seed(0)
    np.random.seed(0)
    imgs = photos(16, seed=3)
    aug = {'crop_size': 32, 'normalize': NORM, 'num_strong_augs': 4, 'cutout_kwargs': {'n_holes': 1, 'length': 16}}
    reps = 60
    pil = strong_transform(aug)
    ref = torch.stack([pil(Image.fromarray(im)) for im in imgs for _ in range(reps)])
    ours = BatchStrongAugment(aug)(as_batch(imgs).repeat_interleave(reps, 0))
    # per output and channel: mean, mean square (hence std) and share of zeros (Cutout), compared as samples of
    # 960 draws each; a fixed tolerance would be about two standard errors (0.024 for a channel mean) and flaky
    for stat in (lambda t: t.mean((2, 3)), lambda t: t.pow(2).mean((2, 3)), lambda t: (t == 0).float().mean((2, 3))):
        assert float(two_sample_z(stat(ours), stat(ref)).abs().max()) < 4
    # per image, the mean of an output has the same distribution on both paths
    a, b = (t.view(len(imgs), reps, -1).mean(2) for t in (ours, ref))
    assert float(two_sample_z(a.T, b.T).abs().max()) < 4


def test_strong_keys_are_checked_on_both_paths():
    for build in (strong_transform, BatchStrongAugment):
        with pytest.raises(UserError, match="unknown keys \\['blur'\\]"):
            build({'crop_size': 32, 'normalize': NORM, 'blur': 1})
        with pytest.raises(UserError, match='crop_size is required'):
            build({'normalize': NORM})


@pytest.mark.parametrize('strong', [True, False])
def test_whole_batch_selection_gives_what_subset_selection_gives(monkeypatch, strong):
    """On a CUDA device each operation runs on the whole batch and torch.where keeps the chosen samples (no host
    synchronisation); on the CPU only the chosen samples are computed. Forced both ways here: the same images."""
    import functools
    from data import batch_augment, batch_randaugment
    torch.manual_seed(0)
    x = as_batch(photos(40))
    if strong:
        aug = BatchStrongAugment({'crop_size': 32, 'normalize': NORM, 'num_strong_augs': 4})
    else:
        aug = batch_augment.BatchAugment({'color_jitter': {'brightness': 0.4, 'contrast': 0.4, 'saturation': 0.4,
                                                           'hue': 0.1}, 'normalize': NORM})
    p = aug.sample(40, x.shape[1:], 'cpu')
    outs, chosen = [], batch_augment.apply_chosen
    for whole in (False, True):
        module = batch_randaugment if strong else batch_augment
        monkeypatch.setattr(module, 'apply_chosen', functools.partial(chosen, whole=whole))
        outs.append(aug.apply(x, p))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], aug.apply(x, aug.sample(40, x.shape[1:], 'cpu')))  # the draw matters
