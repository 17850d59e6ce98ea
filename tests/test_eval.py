"""eval.py on the checkpoint layouts users download from SCAN and NNM, plots, unlabelled data, --predict."""
import csv
import os

import numpy as np
import pytest
import torch
from easydict import EasyDict
from PIL import Image

import eval as evaluate
from conftest import ROOT
from data.transforms import val_transform
from models import get_clustering_model, get_contrastive_model
from utils.plots import confusion_figure_size, prototype_grid_size

SCAN_CFG = os.path.join(ROOT, 'configs', 'scan', 'scan_digits.yml')
PRETEXT_CFG = os.path.join(ROOT, 'configs', 'pretext', 'simclr_digits.yml')
TINY = ['val_subset=120', 'backbone_kwargs.widths=[8, 16, 16, 16]', 'batch_size=64']
MODEL_CFG = EasyDict(backbone='small_cnn', train_db_name='digits', channels=1, num_classes=10, num_heads=3,
                     backbone_kwargs={'widths': [8, 16, 16, 16], 'pools': [False, True, False, True]},
                     model_kwargs={'head': 'mlp', 'features_dim': 64})


@pytest.fixture(scope='module')
def source():
    torch.manual_seed(0)
    model = get_clustering_model(MODEL_CFG).eval()
    for p in model.cluster_head.parameters():  # spread the logits so predictions differ per head
        p.data.mul_(20)
    return model


@pytest.fixture
def images(tmp_path):
    from sklearn.datasets import load_digits
    folder = tmp_path / 'new' / 'sub'
    folder.mkdir(parents=True)
    digits = load_digits()
    for i in range(12):
        Image.fromarray(np.round(digits.images[i] * 255 / 16).astype(np.uint8), 'L').save(folder / f'{i:02d}.png')
    return tmp_path / 'new'


def expected_clusters(model, head, folder):
    transform = val_transform({'crop_size': 8, 'normalize': {'mean': [0.33], 'std': [0.38]}})
    paths = sorted(str(p) for p in folder.rglob('*.png'))
    x = torch.stack([transform(Image.open(p)) for p in paths])
    with torch.no_grad():
        return paths, model(x)[head].argmax(1).tolist()


def layouts(model, head):
    state = model.state_dict()
    module = {'module.' + k: v for k, v in state.items()}
    single = {k.replace(f'cluster_head.{head}.', 'cluster_head.0.'): v for k, v in state.items()
              if k.startswith('backbone.') or k.startswith(f'cluster_head.{head}.')}
    return {
        'scan_model': {'model': state, 'head': np.int64(head)},
        'scan_checkpoint': {'optimizer': {'state': {}, 'param_groups': []}, 'model': module, 'head': np.int64(head),
                            'epoch': 7, 'best_loss': np.float64(-1.5), 'best_loss_head': np.int64(head)},
        'nnm_checkpoint': {'optimizer': {}, 'model': module, 'epoch': 7, 'best_acc': 0.5, 'best_loss': -1.5,
                           'best_loss_head': head, 'clustering_results': [torch.rand(4, 10) for _ in range(3)]},
        'selflabel_model': single,
    }


@pytest.mark.parametrize('layout', ['scan_model', 'scan_checkpoint', 'nnm_checkpoint', 'selflabel_model'])
def test_downloaded_layouts_predict_like_the_source_model(tmp_path, env_file, source, images, layout):
    head = 2
    path = tmp_path / f'{layout}.pth.tar'
    torch.save(layouts(source, head)[layout], path)
    result = evaluate.main(['--config_env', env_file, '--config_exp', SCAN_CFG, '--model', str(path),
                            '--predict', str(images), *TINY])
    assert result['kind'] == 'clustering' and result['head'] == (0 if layout == 'selflabel_model' else head)
    paths, clusters = expected_clusters(source, head, images)
    rows = list(csv.DictReader(open(tmp_path / f'predictions_{images.name}.csv')))
    assert [r['path'] for r in rows] == paths and [int(r['cluster']) for r in rows] == clusters
    assert all(0 < float(r['confidence']) <= 1 for r in rows) and all(r['class'] for r in rows)
    assert set(result) >= {'acc', 'nmi', 'ari', 'top5', 'cluster_sizes'} and sum(result['cluster_sizes']) == 120
    assert not (tmp_path / 'eval.json').exists()  # predicting only: the evaluation files are another call's


def test_plots_are_valid_pngs_of_the_expected_size(tmp_path, env_file, source):
    path = tmp_path / 'model.pth.tar'
    torch.save({'model': source.state_dict(), 'head': 1}, path)
    evaluate.main(['--config_env', env_file, '--config_exp', SCAN_CFG, '--model', str(path),
                   '--visualize_prototypes', '--prototypes', '3', *TINY])
    cm = Image.open(tmp_path / 'confusion_matrix.png')
    cm.verify()
    assert Image.open(tmp_path / 'confusion_matrix.png').size == tuple(round(s * 100) for s in confusion_figure_size(10))
    grid = Image.open(tmp_path / 'prototypes.png')
    assert grid.size == prototype_grid_size(10, 3) and grid.mode == 'RGB'


def test_fewer_clusters_than_classes_are_evaluated(tmp_path, env_file, capsys):
    """An estimated number of clusters (num_classes: auto) may differ from the labels' classes: reported, not
    refused; ACC is the Hungarian-matched share."""
    model = get_clustering_model(EasyDict({**MODEL_CFG, 'num_classes': 5}))
    path = tmp_path / 'five.pth.tar'
    torch.save({'model': model.state_dict(), 'head': 0}, path)
    result = evaluate.main(['--config_env', env_file, '--config_exp', SCAN_CFG, '--model', str(path), *TINY])
    assert 'the model has 5 clusters for 10 classes' in capsys.readouterr().out
    assert len(result['cluster_sizes']) == 5 and sum(result['cluster_sizes']) == 120
    val = evaluate.get_dataset(evaluate.prepare(evaluate.parse_args(evaluate.base_parser('t', resume=False), [
        '--config_env', env_file, '--config_exp', SCAN_CFG, *TINY]), 'clustering')[0], 'val')
    largest_five = np.sort(np.bincount(val.targets))[-5:].sum() / len(val)
    assert 0 < result['acc'] <= largest_five  # only 5 of the 10 classes can be matched to a cluster


def test_unlabelled_val_split_writes_prototypes_and_sizes(tmp_path, env_file, source, images, capsys):
    path = tmp_path / 'model.pth.tar'
    torch.save({'model': source.state_dict(), 'head': 0}, path)
    result = evaluate.main(['--config_env', env_file, '--config_exp', SCAN_CFG, '--model', str(path),
                            '--visualize_prototypes', 'val_db_name=image_folder', f'data_root={images}',
                            'val_split=sub', 'val_subset=null', *TINY[1:]])
    assert 'metrics need labels' in capsys.readouterr().out
    assert 'acc' not in result and sum(result['cluster_sizes']) == 12
    assert (tmp_path / 'prototypes.png').is_file() and not (tmp_path / 'confusion_matrix.png').exists()


def test_pretext_model_reports_neighbor_and_knn_accuracy(tmp_path, env_file):
    torch.manual_seed(0)
    path = tmp_path / 'pretext.pth.tar'
    torch.save(get_contrastive_model(MODEL_CFG).state_dict(), path)  # SCAN's bare layout
    result = evaluate.main(['--config_env', env_file, '--config_exp', PRETEXT_CFG, '--model', str(path),
                            'train_subset=200', *TINY])
    assert result['kind'] == 'pretext'
    assert set(result) >= {'top1_neighbor_acc', 'top5_neighbor_acc', 'top20_neighbor_acc', 'nn1_acc', 'knn30_acc',
                           'knn100_acc', 'knn200_acc'}
    assert all(0 <= result[k] <= 1 for k in ('top1_neighbor_acc', 'knn100_acc'))


class _CreatesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_bad_files_are_one_line_errors(tmp_path, env_file, capsys, source, images):
    def run(path, *extra):
        with pytest.raises(SystemExit) as e:
            evaluate.main(['--config_env', env_file, '--config_exp', SCAN_CFG, '--model', str(path), *TINY, *extra])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count('\n') == 1
        return err

    target = tmp_path / 'created'
    evil = tmp_path / 'evil.pth.tar'
    torch.save({'model': source.state_dict(), 'head': 0, 'x': _CreatesFile(str(target))}, evil)
    assert 'refusing to load' in run(evil) and not target.exists()
    wide = tmp_path / 'wide.pth.tar'
    torch.save({'model': get_clustering_model(EasyDict({**MODEL_CFG, 'backbone_kwargs': {}})).state_dict(),
                'head': 0}, wide)
    assert 'does not fit this model' in run(wide)
    missing_head = tmp_path / 'head5.pth.tar'
    torch.save({'model': source.state_dict(), 'head': 5}, missing_head)
    assert 'the model has no head 5' in run(missing_head)
    good = tmp_path / 'good.pth.tar'
    torch.save({'model': source.state_dict(), 'head': 0}, good)
    assert 'no such file or folder' in run(good, '--predict', str(tmp_path / 'none'))
    assert not (tmp_path / 'eval.json').exists() and not (tmp_path / 'confusion_matrix.png').exists()
    torch.save({'weights': torch.zeros(2)}, tmp_path / 'odd.pth.tar')
    assert 'neither a pretext model' in run(tmp_path / 'odd.pth.tar')


def test_pretext_knn_leaves_out_only_when_val_is_the_train_set(tmp_path, env_file):
    """Different subsets of one split are different sets: no sample may be 'left out' of the other."""
    from data import get_dataset
    from data.loaders import eval_loader
    from evaluation.features import extract_features, knn_accuracy
    from stages.schema import ENV, PRETEXT, add_paths
    from utils.config import base_parser, load_config, parse_args
    torch.manual_seed(0)
    model = get_contrastive_model(MODEL_CFG)
    path = tmp_path / 'pretext.pth.tar'
    torch.save(model.state_dict(), path)
    extra = ['train_subset=200', 'val_subset=120', 'backbone_kwargs.widths=[8, 16, 16, 16]', 'batch_size=64']
    result = evaluate.main(['--config_env', env_file, '--config_exp', PRETEXT_CFG, '--model', str(path), *extra])
    cfg = add_paths(load_config(parse_args(base_parser('t'), ['--config_env', env_file, '--config_exp', PRETEXT_CFG,
                                                              *extra]), ENV, PRETEXT))
    transform = val_transform(cfg.transformation_kwargs)
    model.eval()
    feats = [extract_features(model, eval_loader(get_dataset(cfg, w, transform), cfg), 'cpu', 'backbone')
             for w in ('train', 'val')]
    expected = knn_accuracy(*feats[0], *feats[1], 30, cfg.knn_temperature, exclude_self=False)
    assert result['knn30_acc'] == pytest.approx(expected)


@pytest.mark.parametrize('chunk', [None, 4])
def test_predict_without_the_dataset_files(tmp_path, env_file, capsys, monkeypatch, chunk):
    """A SCAN-layout CIFAR-10 checkpoint and configs/scan/scan_cifar10.yml: --predict writes predictions_photos.csv with
    no CIFAR-10 file on disk (cluster ids; naming them by class needs the labelled val split); streamed in chunks
    (here also of 4 images: 4 + 2), the rows are the same."""
    if chunk:
        monkeypatch.setattr(evaluate, 'PREDICT_CHUNK', chunk)
    cfg = EasyDict(backbone='resnet18', train_db_name='cifar-10', channels=3, num_classes=10, num_heads=1,
                   backbone_kwargs={})
    torch.manual_seed(0)
    model = get_clustering_model(cfg).eval()
    path = tmp_path / 'scan_cifar-10.pth.tar'
    torch.save({'model': model.state_dict(), 'head': 0}, path)
    photos = tmp_path / 'photos'
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(photos / f'{i}.png')
    empty = tmp_path / 'no_data'
    empty.mkdir()
    result = evaluate.main(['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'scan',
                            'scan_cifar10.yml'), '--model', str(path), '--predict', str(photos),
                            f'data_root={empty}', 'download=false', 'num_workers=0'])
    assert 'predicting only' in capsys.readouterr().out and 'acc' not in result
    transform = val_transform({'crop_size': 32, 'normalize': {'mean': [0.4914, 0.4822, 0.4465],
                                                              'std': [0.2023, 0.1994, 0.2010]}})
    x = torch.stack([transform(Image.open(photos / f'{i}.png')) for i in range(6)])
    with torch.no_grad():
        expected = model(x)[0].argmax(1).tolist()
    rows = list(csv.DictReader(open(tmp_path / 'predictions_photos.csv')))
    assert [int(r['cluster']) for r in rows] == expected and all(r['class'] == '' for r in rows)


def test_predict_finds_images_in_linked_folders_and_a_link_cycle_ends(tmp_path):
    from PIL import Image
    real, target = tmp_path / 'real' / 'cats', tmp_path / 'target'
    real.mkdir(parents=True)
    target.mkdir()
    for name in ('a.png', 'b.jpg', 'notes.txt'):
        (real / name).write_bytes(b'') if name.endswith('txt') else Image.new('RGB', (4, 4)).save(real / name)
    (target / 'cats').symlink_to(real, target_is_directory=True)  # a class folder linked in, as datasets read it
    (real / 'loop').symlink_to(target, target_is_directory=True)  # and a cycle back
    assert [os.path.relpath(p, target) for p in evaluate.prediction_paths(str(target))] == ['cats/a.png',
                                                                                            'cats/b.jpg']
