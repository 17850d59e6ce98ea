"""The feature cache the stages over a frozen trunk share (stages/feature_cache.py): computed once, keyed on the
trunk's weights, the images and the evaluation transform; image folders decoded only when an image is needed."""
import os

import numpy as np
import torch
from easydict import EasyDict

import stages.feature_cache as feature_cache
from benchmarks.digits_folder import write_digits
from data import build_dataset
from data.transforms import val_transform
from models import get_contrastive_model
from stages.feature_cache import cache_key, trunk_features
from utils.errors import UserError


def folder_set(root, **transform):
    kwargs = {'crop_size': 16, 'normalize': {'mean': [0.5] * 3, 'std': [0.25] * 3}, **transform}
    return build_dataset('image_folder', str(root), '', {'path': 'digits', 'image_size': 16}, channels=3,
                         transform=val_transform(kwargs))


def small_model():
    torch.manual_seed(0)
    cfg = EasyDict(backbone='small_cnn', backbone_kwargs={'widths': [4, 8, 8, 8]}, channels=3, head='mlp',
                   features_dim=8)
    return get_contrastive_model(cfg).eval()


def test_the_key_follows_weights_images_and_transform(tmp_path):
    write_digits(str(tmp_path / 'digits'), size=16, classes=[0, 1], limit=12)
    model = small_model()
    key = cache_key([model.backbone], folder_set(tmp_path))
    assert cache_key([model.backbone], folder_set(tmp_path)) == key  # a fresh dataset object of the same files
    assert folder_set(tmp_path)._data is None  # the key reads no image
    assert cache_key([model.backbone], folder_set(tmp_path, crop_size=14)) != key
    assert cache_key([model.backbone, model.contrastive_head], folder_set(tmp_path)) != key
    with torch.no_grad():
        next(model.backbone.parameters()).view(-1)[0] += 1e-3
    assert cache_key([model.backbone], folder_set(tmp_path)) != key
    model = small_model()
    first = sorted((tmp_path / 'digits' / '0').iterdir())[0]
    os.utime(first, ns=(0, 0))  # the same bytes, another modification time: treated as another image
    assert cache_key([model.backbone], folder_set(tmp_path)) != key


def counted_trunk(tmp_path, monkeypatch):
    """A digits folder, a small model, a cache config and the list that counts the trunk's passes over images."""
    write_digits(str(tmp_path / 'digits'), size=16, classes=[0, 1], limit=12)
    cfg = EasyDict(pretext_dir=str(tmp_path / 'pretext'), batch_size=5, num_workers=0)
    calls = []
    real = feature_cache.extract_features
    monkeypatch.setattr(feature_cache, 'extract_features', lambda *a, **kw: calls.append(1) or real(*a, **kw))
    return small_model(), folder_set(tmp_path), cfg, calls


def test_trunk_features_are_computed_once_then_read(tmp_path, monkeypatch):
    model, dataset, cfg, calls = counted_trunk(tmp_path, monkeypatch)
    first = trunk_features(model, [model.backbone], dataset, cfg, 'cpu')
    again = trunk_features(model, [model.backbone], folder_set(tmp_path), cfg, 'cpu')
    assert len(calls) == 1 and torch.equal(first, again)
    images = torch.stack([dataset[i]['image'] for i in range(len(dataset))])
    with torch.no_grad():
        assert torch.allclose(first, model.backbone(images), atol=1e-5)  # unnormalised, in order
    assert len(os.listdir(tmp_path / 'pretext' / 'feature_cache')) == 1


def test_the_trunk_computes_in_the_precision_of_amp(tmp_path):
    """amp: bf16 runs the frozen trunk under bfloat16 autocast: features within its rounding of float32's, not
    theirs; the cache holds float32 either way."""
    write_digits(str(tmp_path / 'digits'), size=16, classes=[0, 1], limit=12)
    model, dataset = small_model(), folder_set(tmp_path)
    full = trunk_features(model, [model.backbone], dataset, EasyDict(pretext_dir=str(tmp_path / 'a'), batch_size=5,
                                                                    num_workers=0, amp='none'), 'cpu')
    bf16 = trunk_features(model, [model.backbone], dataset, EasyDict(pretext_dir=str(tmp_path / 'b'), batch_size=5,
                                                                    num_workers=0, amp='bf16'), 'cpu')
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, full)
    assert torch.allclose(bf16, full, rtol=0.05, atol=0.05 * float(full.abs().max()))


def test_an_image_folder_decodes_on_first_use(tmp_path):
    write_digits(str(tmp_path / 'digits'), size=20, classes=[0, 1], limit=6)
    dataset = folder_set(tmp_path)
    one = np.asarray(dataset.get_image(3))  # a single file, resized as the whole folder is
    assert dataset._data is None
    assert dataset.uint8_tensor().shape == (6, 3, 16, 16) and dataset._data is not None
    assert (np.asarray(dataset.get_image(3)) == one).all()


def test_a_damaged_or_unwritable_cache_never_stops_the_stage(tmp_path, monkeypatch, capsys):
    write_digits(str(tmp_path / 'digits'), size=16, classes=[0, 1], limit=12)
    model, dataset = small_model(), folder_set(tmp_path)
    cfg = EasyDict(pretext_dir=str(tmp_path / 'pretext'), batch_size=5, num_workers=0)
    first = trunk_features(model, [model.backbone], dataset, cfg, 'cpu')
    [path] = (tmp_path / 'pretext' / 'feature_cache').iterdir()
    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert torch.equal(trunk_features(model, [model.backbone], dataset, cfg, 'cpu'), first)
    assert 'unreadable' in capsys.readouterr().out
    assert torch.equal(torch.from_numpy(np.load(path)), first)  # rewritten whole

    def full_disk(obj, target):
        raise UserError(f'cannot write {target}: No space left on device')
    monkeypatch.setattr(feature_cache, 'atomic_save_npy', full_disk)
    path.unlink()
    assert torch.equal(trunk_features(model, [model.backbone], dataset, cfg, 'cpu'), first)
    assert 'not cached (cannot write' in capsys.readouterr().out and not path.exists()


def test_features_no_head_can_cluster_stop_the_stage_and_are_not_cached(tmp_path):
    """A trunk that yields NaN for one image (a damaged weights file) stops with one line naming the setting to check;
    features beyond float16's range stop a float16 cache; nothing is written either time."""
    import pytest
    write_digits(str(tmp_path / 'digits'), size=16, classes=[0, 1], limit=12)
    model, dataset = small_model(), folder_set(tmp_path)
    cfg = EasyDict(pretext_dir=str(tmp_path / 'pretext'), batch_size=5, num_workers=0)
    image3 = dataset[3]['image']

    class Trunk(torch.nn.Module):
        def __init__(self, scale=1.0, nan_image=None):
            super().__init__()
            self.backbone, self.scale, self.nan_image = model.backbone, scale, nan_image

        def forward(self, x, forward_pass='backbone'):
            out = self.scale * self.backbone(x)
            if self.nan_image is None:
                return out
            return torch.where(torch.isclose(x, self.nan_image).flatten(1).all(1, keepdim=True), torch.nan, out)
    with pytest.raises(UserError, match=r'NaN or infinite features for 1 of 12 images \(the first: image 3\).*'
                                        'backbone_weights'):
        trunk_features(Trunk(nan_image=image3), [model.backbone], dataset, cfg, 'cpu')
    with pytest.raises(UserError, match="beyond float16's range: set feature_cache_dtype: float32"):
        trunk_features(Trunk(scale=1e6), [model.backbone], dataset, EasyDict(cfg, feature_cache_dtype='float16'), 'cpu')
    kept = trunk_features(Trunk(scale=1e6), [model.backbone], dataset, cfg, 'cpu')
    assert kept.abs().max() > 7e4  # float32 holds them
    os.remove(next((tmp_path / 'pretext' / 'feature_cache').iterdir()))
    assert not os.listdir(tmp_path / 'pretext' / 'feature_cache')


def test_a_subset_decodes_its_own_images_once(tmp_path, monkeypatch):
    """train_subset of a large folder: only its images are decoded, and the whole folder's decoding later reuses
    them; a grey image among colour ones gets the same pixels either way."""
    import data.base
    from data.base import SubsetDataset
    from PIL import Image
    write_digits(str(tmp_path / 'digits'), size=20, classes=[0, 1], limit=8)
    colour = sorted((tmp_path / 'digits' / '1').iterdir())[0]
    Image.open(colour).convert('RGB').save(colour)  # one RGB file among grey ones
    opened = []
    real = data.base.open_image
    monkeypatch.setattr(data.base, 'open_image', lambda path: opened.append(path) or real(path))
    dataset = build_dataset('image_folder', str(tmp_path), '', {'path': 'digits', 'image_size': 16}, channels=3)
    part = SubsetDataset(dataset, [0, 2, 5])
    first = part.uint8_tensor()
    assert len(opened) == 3 and dataset._data is None and first.shape == (3, 3, 16, 16)
    whole = dataset.uint8_tensor()
    assert len(opened) == len(dataset) and torch.equal(whole[[0, 2, 5]], first)
    assert torch.equal(part.uint8_tensor(), first) and len(opened) == len(dataset)  # now indexed in memory


def test_a_float16_cache_takes_half_the_space_and_is_read_memory_mapped_as_float32_batches(tmp_path, monkeypatch):
    from data.feature_batches import FeaturePairs, FeatureSet
    model, dataset, cfg, passes = counted_trunk(tmp_path, monkeypatch)
    full = trunk_features(model, [model.backbone], dataset, cfg, 'cpu')
    half = trunk_features(model, [model.backbone], dataset, EasyDict(cfg, feature_cache_dtype='float16'), 'cpu')
    assert half.dtype == torch.float16 and torch.equal(half, full.half())
    assert len(passes) == 1  # the float16 file made from the float32 one, not by the trunk again
    fresh = trunk_features(model, [model.backbone], dataset, EasyDict(cfg, feature_cache_dtype='float16',
                                                                      pretext_dir=str(tmp_path / 'other')), 'cpu')
    assert len(passes) == 2 and torch.equal(fresh, half)  # with no float32 file, from the trunk
    files = {p.name.rpartition('-')[2]: p.stat().st_size for p in (tmp_path / 'pretext' / 'feature_cache').iterdir()}
    header = 128  # the .npy header
    assert files['float16.npy'] - header == (files['float32.npy'] - header) // 2
    again = trunk_features(model, [model.backbone], dataset, EasyDict(cfg, feature_cache_dtype='float16'), 'cpu')
    assert torch.equal(again, half)
    [path] = [p for p in (tmp_path / 'pretext' / 'feature_cache').iterdir() if p.name.endswith('float16.npy')]
    if os.path.isfile('/proc/self/maps'):  # Linux: read through a memory map of the file, not loaded whole
        assert str(path) in open('/proc/self/maps').read()
    views = {'anchor': ('self', 'strong'), 'neighbor': ('neighbor', 'strong')}
    batch = FeaturePairs(again, np.tile(np.arange(12)[:, None], (1, 3)), views, 4, 'cpu').batch(torch.arange(4))
    assert batch['anchor'].dtype == torch.float32 and torch.equal(batch['anchor'], half[:4].float())
    assert FeatureSet(again, dataset)[3]['image'].dtype == torch.float32
