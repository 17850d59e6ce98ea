"""configs/image_folder.yml as a user runs it: one file, the folder's path, nothing else but small epochs."""
import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import eval as evaluate
import feature_extract
import scan
import selflabel
import simclr
from benchmarks.digits_folder import write_digits
from conftest import ROOT
from data import build_dataset, complete_transforms
from data.base import FileDataset
from stages.schema import run_name
from utils.config import base_parser, load_config, parse_args, read_yaml
from utils.errors import UserError
from stages.schema import ENV, PRETEXT

TEMPLATE = os.path.join(ROOT, 'configs', 'image_folder.yml')
SMALL = ['db_kwargs.image_size=16', 'backbone_kwargs.widths=[8, 16, 16, 16]', 'pretext.epochs=2',
         'clustering.epochs=1', 'selflabel.epochs=1', 'clustering.k_range=[2, 5]', 'clustering.num_heads=2']


def stage_args(env_file, folder, *extra):
    return ['--config_env', env_file, '--config_exp', TEMPLATE, f'db_kwargs.path={folder}', *SMALL, *extra]


def run_all(env_file, folder, *extra):
    simclr.main(stage_args(env_file, folder, *extra))
    clustering = scan.main(stage_args(env_file, folder, *extra))
    labelled = selflabel.main(stage_args(env_file, folder, *extra))
    return clustering, labelled


@pytest.mark.parametrize('flat', [True, False])
def test_template_runs_every_stage(tmp_path, env_file, flat, capsys):
    folder = tmp_path / 'my_digits'
    assert write_digits(str(folder), size=20, classes=[0, 1, 7], flat=flat, limit=300) == 300
    clustering, labelled = run_all(env_file, folder)
    out = tmp_path / 'results' / 'my_digits'  # the run is named after the folder
    k = clustering['num_classes']
    report = clustering['k_estimate']
    assert 2 <= k <= 5 and sum(report['community_sizes']) == sum(report['cluster_sizes']) == 300
    assert len(report['cluster_sizes']) == k
    assert (out / 'scan' / 'num_clusters.png').is_file()
    pretext_cfg = read_yaml(str(out / 'pretext' / 'config.yml'), 'run config')
    assert pretext_cfg['transformation_kwargs']['crop_size'] == 16  # the images' size after resizing
    assert len(pretext_cfg['transformation_kwargs']['normalize']['mean']) == 3
    result = evaluate.main(['--config_env', env_file, '--config_exp', TEMPLATE, f'db_kwargs.path={folder}', *SMALL,
                            '--model', str(out / 'selflabel' / 'model.pth.tar'), '--predict', str(folder), '--report'])
    assert len(result['cluster_sizes']) == k and sum(result['cluster_sizes']) == 300  # K from the checkpoint
    if flat:
        assert labelled['acc'] is None and 'acc' not in result
    else:
        assert 0 <= labelled['acc'] <= 1 and 'acc' in result
        assert 'nmi' in json.load(open(out / 'selflabel' / 'eval.json'))
    rows = open(out / 'selflabel' / 'predictions_my_digits.csv').read().splitlines()
    assert len(rows) == 301
    page = ReportPage(out / 'selflabel' / 'report.html')
    assert page.clusters == sum(size > 0 for size in result['cluster_sizes'])  # one section per non-empty cluster
    assert page.images and all((out / 'selflabel' / src).is_file() for src in page.images)
    assert 'predictions_my_digits.csv' in page.links
    eval_json = json.load(open(out / 'selflabel' / 'eval.json'))
    assert page.metrics == {k: f'{v:.4f}' for k, v in eval_json.items() if isinstance(v, float)}
    assert bool(page.metrics) == (not flat)  # unlabelled: no metrics, and no error
    # predictions of other images: their own file, named in the output; nothing written before changes
    written = {p: p.read_bytes() for p in (out / 'selflabel').rglob('*') if p.is_file()}
    new = tmp_path / 'new_photos'
    new.mkdir()
    for name in ('a.png', 'b.jpg'):
        Image.new('RGB', (40, 30), (200, 20, 20)).save(new / name)
    eval_args = ['--config_env', env_file, '--config_exp', TEMPLATE, f'db_kwargs.path={folder}', *SMALL,
                 '--model', str(out / 'selflabel' / 'model.pth.tar')]
    evaluate.main(eval_args + ['--predict', str(new)])
    assert f"predictions of 2 images: {out / 'selflabel' / 'predictions_new_photos.csv'}" in capsys.readouterr().out
    assert all(p.read_bytes() == data for p, data in written.items())
    assert len(open(out / 'selflabel' / 'predictions_new_photos.csv').read().splitlines()) == 3
    with pytest.raises(SystemExit) as e:  # the full evaluation again would replace them: refused without --force
        evaluate.main(eval_args + ['--report'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'already holds eval.json' in err and '--force' in err and err.count('\n') == 1
    assert all(p.read_bytes() == data for p, data in written.items())
    feature_extract.main(stage_args(env_file, folder, '--pretext_model', str(out / 'pretext' / 'model.pth.tar'),
                                    '--db', str(folder), '--save_feature_name', str(tmp_path / 'feats')))
    assert np.load(tmp_path / 'feats.npy').shape == (300, 16)  # the backbone's, as the pretext stage mined on


class ReportPage(HTMLParser):
    """What report.html shows: its cluster sections, image sources, links and metric cells."""

    def __init__(self, path):
        super().__init__()
        self.clusters, self.images, self.links, self.metrics, self.cell = 0, [], [], {}, None
        self.feed(open(path).read())

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.clusters += tag == 'details' and attrs.get('class') == 'cluster'
        if tag == 'img':
            self.images.append(attrs['src'])
        if tag == 'a':
            self.links.append(attrs['href'])
        self.cell = attrs.get('data-metric')

    def handle_data(self, data):
        if self.cell:
            self.metrics[self.cell] = data.strip()
            self.cell = None


def test_images_of_any_size_become_one_tensor(tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(40, 30), (30, 50), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f'{i}.jpg')
    wide = np.zeros((30, 60, 3), np.uint8)
    wide[:, 15:45] = 255  # the centre square of a 60x30 image is all white
    Image.fromarray(wide).save(folder / '3.png')
    ds = build_dataset('image_folder', str(tmp_path), '', {'path': 'photos', 'image_size': 12}, channels=3)
    x = ds.uint8_tensor()
    assert x.shape == (4, 3, 12, 12) and x.dtype.is_floating_point is False
    # aspect kept: resized by the shorter side, then the centre square (only bicubic's edge taps see the black)
    assert int(x[3][:, :, 1:-1].min()) == 255 and int(x[3].min()) > 200
    grey = build_dataset('image_folder', str(tmp_path), '', {'path': 'photos', 'image_size': 12}, channels=1)
    assert grey.uint8_tensor().shape == (4, 1, 12, 12)
    # eval.py --predict reads files one by one: each resized exactly as the training folder's images were
    files = FileDataset(ds.paths, [-1] * 4, [], 3, image_size=12)
    assert all(np.array_equal(np.asarray(files.get_image(i)), x[i].permute(1, 2, 0).numpy()) for i in range(4))


def test_normalisation_and_crop_from_the_images(tmp_path, env_file):
    folder = tmp_path / 'two'
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / 'a.png')
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(folder / 'b.png')
    args = parse_args(base_parser('t'), ['--config_env', env_file, '--config_exp', TEMPLATE, f'db_kwargs.path={folder}',
                                         'db_kwargs.image_size=8'])
    cfg = load_config(args, ENV, PRETEXT, 'pretext')
    assert cfg.epochs == 100 and run_name(cfg) == 'two'  # the pretext section, the folder's name
    train = build_dataset('image_folder', cfg.data_root, '', cfg.db_kwargs, channels=3)
    complete_transforms(cfg, train)
    # half the pixels 0, half 1: mean 0.5, sample std sqrt(N / (N - 1)) / 2 over N = 128 pixels per channel
    assert cfg.transformation_kwargs['normalize'] == {'mean': [0.5] * 3, 'std': [round(np.sqrt(128 / 127) / 2, 4)] * 3}
    assert cfg.augmentation_kwargs['normalize'] == cfg.transformation_kwargs['normalize']
    assert cfg.augmentation_kwargs['random_resized_crop'] == {'scale': [0.3, 1.0], 'size': 8}
    cfg.transformation_kwargs = {'crop_size': 12}
    with pytest.raises(UserError, match='crop_size 12 is larger than the images'):
        complete_transforms(cfg, train)


def test_template_input_errors(tmp_path, env_file, capsys):
    def error(*extra):
        with pytest.raises(SystemExit) as e:
            simclr.main(['--config_env', env_file, '--config_exp', TEMPLATE, *extra])
        assert e.value.code == 2
        return capsys.readouterr().err
    assert 'db_kwargs.path is not set' in error()
    splits = tmp_path / 'splits'
    for split in ('train', 'test'):
        write_digits(str(splits / split), size=8, classes=[0], limit=2)
    assert 'set train_split=train' in error(f'db_kwargs.path={splits}')
    assert "num_classes must be a number or auto, got 'many'" in error(f'db_kwargs.path={splits}', 'num_classes=many')
    assert not (tmp_path / 'results').exists()


def test_restyled_digits_are_the_same_digits_as_dark_thick_strokes_on_light_paper(tmp_path):
    plain, restyled = tmp_path / 'plain', tmp_path / 'restyled'
    assert write_digits(str(plain), 40, classes=[1], limit=5) == write_digits(str(restyled), 40, classes=[1],
                                                                              limit=5, restyle=True) == 5
    assert sorted(os.listdir(plain / '1')) == sorted(os.listdir(restyled / '1'))
    for name in os.listdir(plain / '1'):
        ink = np.asarray(Image.open(plain / '1' / name), dtype=np.float64)
        paper = np.asarray(Image.open(restyled / '1' / name), dtype=np.float64)
        assert ink.mean() < 128 < paper.mean()  # light strokes on black become dark strokes on white
        strokes, dark = ink > 128, paper < 128
        assert dark.sum() > strokes.sum()  # thicker
        assert np.corrcoef(ink.ravel(), paper.ravel())[0, 1] < -0.7  # the same digit, inverted (noise aside)


def test_a_class_folder_holds_the_images_of_its_sub_folders(tmp_path):
    """photos/x/deep/*.png belong to class x (torchvision's ImageFolder reads class folders so), through a linked
    folder too; a link back up to its own class folder ends instead of looping; hidden folders are left out."""
    from data.folder import ImageFolder
    for path in ('x/deep/a.png', 'x/deep/b.png', 'x/c.png', 'y/d.png', 'y/.hidden/e.png'):
        (tmp_path / 'photos' / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (8, 8), (10, 20, 30)).save(tmp_path / 'photos' / path)
    os.symlink(tmp_path / 'photos' / 'y', tmp_path / 'photos' / 'y' / 'loop')
    (tmp_path / 'elsewhere').mkdir()
    Image.new('RGB', (8, 8)).save(tmp_path / 'elsewhere' / 'f.png')
    os.symlink(tmp_path / 'elsewhere', tmp_path / 'photos' / 'x' / 'linked')
    data = ImageFolder('', '', path=str(tmp_path / 'photos'))
    names = [os.path.relpath(p, tmp_path / 'photos') for p in data.paths]
    assert data.classes == ['x', 'y'] and list(data.targets) == [0, 0, 0, 0, 1]
    assert names == ['x/c.png', 'x/deep/a.png', 'x/deep/b.png', 'x/linked/f.png', 'y/d.png']
    assert not any('.hidden' in n for n in names)


def test_the_run_is_named_after_the_folder_even_when_given_as_dot(tmp_path, monkeypatch):
    from easydict import EasyDict
    (tmp_path / 'my photos').mkdir()
    monkeypatch.chdir(tmp_path / 'my photos')
    for path in ('.', './', str(tmp_path / 'my photos') + '/'):
        assert run_name(EasyDict(train_db_name='image_folder', db_kwargs={'path': path})) == 'my photos'
    assert run_name(EasyDict(train_db_name='image_folder', db_kwargs={'path': '.'}, name='mine')) == 'mine'
