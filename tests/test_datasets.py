"""Every dataset class on small files written in its real on-disk format."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from data import build_dataset, get_dataset
from data.loaders import eval_loader
from data.transforms import val_transform
from utils.errors import UserError, one_line

RNG = np.random.default_rng(0)


def _pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as f:
        pickle.dump(obj, f)


def test_cifar10_pickles(tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    images = {}
    for i, name in enumerate([f'data_batch_{j}' for j in range(1, 6)] + ['test_batch']):
        data = RNG.integers(0, 256, (2, 3 * 32 * 32), dtype=np.uint8)
        images[name] = data
        _pickle(folder / name, {'data': data, 'labels': [i % 10, (i + 3) % 10]})
    _pickle(folder / 'batches.meta', {'label_names': [f'class{i}' for i in range(10)]})
    train = build_dataset('cifar-10', str(tmp_path), 'train', download=False)
    test = build_dataset('cifar-10', str(tmp_path), 'test', download=False)
    assert len(train) == 10 and len(test) == 2 and train.classes[3] == 'class3'
    item = train[2]  # first image of data_batch_2
    assert item['index'] == 2 and item['target'] == 1
    expected = images['data_batch_2'][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(np.asarray(item['image']), expected)
    assert train.uint8_tensor().shape == (10, 3, 32, 32)
    assert torch.equal(train.uint8_tensor()[2], torch.from_numpy(expected).permute(2, 0, 1))
    assert test[1]['target'] == 8


def test_cifar20_uses_the_superclasses(tmp_path):
    folder = tmp_path / 'cifar-100-python'
    for name, n in (('train', 4), ('test', 3)):
        _pickle(folder / name, {'data': RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
                                'fine_labels': list(range(50, 50 + n)), 'coarse_labels': list(range(n))})
    _pickle(folder / 'meta', {'coarse_label_names': [f'super{i}' for i in range(20)],
                              'fine_label_names': [str(i) for i in range(100)]})
    train = build_dataset('cifar-20', str(tmp_path), 'train', download=False)
    assert [train[i]['target'] for i in range(4)] == [0, 1, 2, 3] and len(train.classes) == 20
    assert len(build_dataset('cifar-20', str(tmp_path), 'test', download=False)) == 3


def _stl_write(folder, part, images, labels=None):
    # STL-10 stores each image as 3 x 96 x 96 in column-major order
    folder.mkdir(parents=True, exist_ok=True)
    images.transpose(0, 3, 2, 1).tofile(folder / f'{part}_X.bin')
    if labels is not None:
        (np.asarray(labels, dtype=np.uint8) + 1).tofile(folder / f'{part}_y.bin')


def test_stl10_binaries_and_splits(tmp_path):
    folder = tmp_path / 'stl10_binary'
    train = RNG.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    unlabeled = RNG.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    _stl_write(folder, 'train', train, [0, 4, 9])
    _stl_write(folder, 'test', train[:1], [7])
    _stl_write(folder, 'unlabeled', unlabeled)
    ds = build_dataset('stl-10', str(tmp_path), 'train', download=False)
    assert len(ds) == 3 and [ds[i]['target'] for i in range(3)] == [0, 4, 9]
    assert np.array_equal(np.asarray(ds[1]['image']), train[1])  # orientation restored
    both = build_dataset('stl-10', str(tmp_path), 'train+unlabeled', download=False)
    assert len(both) == 5 and list(both.targets) == [0, 4, 9, -1, -1] and not both.has_labels
    assert np.array_equal(np.asarray(both[4]['image']), unlabeled[1])
    assert torch.equal(both.uint8_tensor()[3], torch.from_numpy(unlabeled[0]).permute(2, 0, 1))
    assert build_dataset('stl-10', str(tmp_path), 'test', download=False)[0]['target'] == 7
    with pytest.raises(UserError, match='train, test, unlabeled, train\\+unlabeled'):
        build_dataset('stl-10', str(tmp_path), 'val', download=False)


def _save(path, size=(12, 10), mode='RGB', value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == 'RGB' else (size[1], size[0])
    array = RNG.integers(0, 256, shape, dtype=np.uint8) if value is None else np.full(shape, value, np.uint8)
    Image.fromarray(array, mode).save(path)
    return array


def test_image_folder_labelled_and_channel_switch(tmp_path):
    _save(tmp_path / 'imgs' / 'train' / 'cat' / 'a.png')
    _save(tmp_path / 'imgs' / 'train' / 'cat' / 'b.jpg')
    grey = _save(tmp_path / 'imgs' / 'train' / 'dog' / 'c.png', mode='L')
    (tmp_path / 'imgs' / 'train' / 'dog' / 'notes.txt').write_text('not an image')
    ds = build_dataset('image_folder', str(tmp_path), 'train', {'path': 'imgs'}, channels=3)
    assert ds.classes == ['cat', 'dog'] and list(ds.targets) == [0, 0, 1] and ds.has_labels
    assert ds[2]['image'].mode == 'RGB' and np.array_equal(np.asarray(ds[2]['image'])[..., 1], grey)
    assert ds.uint8_tensor().shape == (3, 3, 10, 12)
    grey_ds = build_dataset('image_folder', str(tmp_path), 'train', {'path': 'imgs'}, channels=1)
    assert grey_ds[0]['image'].mode == 'L' and grey_ds.uint8_tensor().shape == (3, 1, 10, 12)
    unlabelled = build_dataset('image_folder', str(tmp_path), 'train', {'path': 'imgs', 'labels': False})
    assert list(unlabelled.targets) == [-1, -1, -1]


def test_unlabelled_flat_folder(tmp_path):
    for name in ('x.png', 'y.png'):
        _save(tmp_path / 'pool' / name)
    ds = build_dataset('image_folder', str(tmp_path), '', {'path': 'pool'})
    assert len(ds) == 2 and not ds.has_labels and ds[1] == {**ds[1], 'index': 1, 'target': -1}


def test_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match='image folder not found'):
        build_dataset('image_folder', str(tmp_path), 'train', {'path': 'none'})
    _save(tmp_path / 'mixed' / 'cat' / 'a.png')
    _save(tmp_path / 'mixed' / 'loose.png')
    with pytest.raises(UserError, match='mixes class folders with loose images'):
        build_dataset('image_folder', str(tmp_path), '', {'path': 'mixed'})
    with pytest.raises(UserError, match="db_kwargs \\['colour'\\] not understood by 'image_folder'"):
        build_dataset('image_folder', str(tmp_path), '', {'path': 'mixed', 'colour': 1})
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        build_dataset('mnist', str(tmp_path), 'train')


@pytest.mark.parametrize('workers', [0, 1])
def test_corrupt_image_names_its_file(tmp_path, workers):
    _save(tmp_path / 'imgs' / 'cat' / 'good.png')
    bad = tmp_path / 'imgs' / 'cat' / 'bad.jpg'
    bad.write_bytes(b'\xff\xd8 truncated jpeg')
    ds = build_dataset('image_folder', str(tmp_path), '', {'path': 'imgs'},
                       transform=val_transform({'crop_size': 8, 'normalize': {'mean': [0.5] * 3, 'std': [0.5] * 3}}))
    from easydict import EasyDict
    loader = eval_loader(ds, EasyDict(batch_size=2, num_workers=workers))
    with pytest.raises(UserError) as e:
        list(loader)
    assert one_line(e.value).startswith(f'cannot read image {bad}')


def test_imagenet_subset(tmp_path):
    for wnid in ('n01', 'n02', 'n03'):
        _save(tmp_path / 'imagenet' / 'train' / wnid / f'{wnid}_1.JPEG')
    subset = tmp_path / 'subset.txt'
    subset.write_text('n03 goldfish, Carassius auratus\nn01 tench\n')
    ds = build_dataset('imagenet', str(tmp_path), 'train', {'subset_file': str(subset)})
    assert ds.classes == ['goldfish, Carassius auratus', 'tench'] and list(ds.targets) == [0, 1]
    assert ds.paths[0].endswith('n03_1.JPEG')
    subset.write_text('n09\n')
    with pytest.raises(UserError, match='class folder missing'):
        build_dataset('imagenet', str(tmp_path), 'train', {'subset_file': str(subset)})


def test_digits_and_subsets():
    ds = build_dataset('digits', None, 'all')
    assert len(ds) == 1797 and ds.uint8_tensor().shape == (1797, 1, 8, 8) and ds.uint8_tensor().max() == 255
    assert build_dataset('digits', None, 'all', channels=3).uint8_tensor().shape == (1797, 3, 8, 8)
    from easydict import EasyDict
    cfg = EasyDict(train_db_name='digits', train_split='all', data_root=None, db_kwargs={}, channels=1,
                   download=False, train_subset=100)
    a, b = get_dataset(cfg, 'train'), get_dataset(cfg, 'train')
    assert len(a) == 100 and np.array_equal(a.targets, b.targets) and a[5]['index'] == 5
    assert torch.equal(a.uint8_tensor()[5], ds.uint8_tensor()[a.indices[5]])


def test_missing_dataset_says_where_to_put_it(tmp_path):
    with pytest.raises(UserError) as e:
        build_dataset('cifar-10', str(tmp_path), 'train', download=False)
    msg = str(e.value)
    assert str(tmp_path / 'cifar-10-batches-py' / 'data_batch_1') in msg and 'cifar-10-python.tar.gz' in msg
    with pytest.raises(UserError, match='stl10_binary.tar.gz'):
        build_dataset('stl-10', str(tmp_path), 'train', download=False)
