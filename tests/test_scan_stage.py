"""scan.py main() on tiny data: both setups, resume, bad input, NaN."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch

import scan
import simclr
from conftest import ROOT, interrupted_then_resumed, tiny_digits_args, write_env
from data.feature_batches import FeaturePairs
from data.loaders import NeighborPairs
from methods.scan import SCAN
from models.files import read_model_file

TINY = ['epochs=2', 'batch_size=64', 'train_subset=256', 'val_subset=256', 'backbone_kwargs.widths=[8, 16, 16, 16]',
        'num_heads=2']


@pytest.fixture(scope='module')
def pretext(tmp_path_factory):
    """One tiny pretext run, copied into each test's root_dir."""
    root = tmp_path_factory.mktemp('pretext')
    env = write_env(root, data_root=root)
    simclr.main(tiny_digits_args(env, 'epochs=1'))
    return root / 'results' / 'digits' / 'pretext'


@pytest.fixture
def run_root(tmp_path, pretext, env_file):
    shutil.copytree(pretext, tmp_path / 'results' / 'digits' / 'pretext')
    return tmp_path / 'results' / 'digits'


def scan_args(env_file, setup, *extra):
    return ['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'scan', f'{setup}_digits.yml'),
            *TINY, *extra]


@pytest.mark.parametrize('setup, global_term', [('scan', False), ('nnm', True)])
def test_both_setups_write_what_the_next_stages_read(env_file, run_root, setup, global_term):
    result = scan.main(scan_args(env_file, setup))
    out = run_root / 'scan'
    assert set(result) == {'acc', 'nmi', 'ari', 'head', 'num_classes', 'seconds'} and result['head'] in (0, 1)
    assert result['num_classes'] == 10 and not (out / 'num_clusters.png').exists()
    assert json.load(open(out / 'metrics.json')) == result and 0 < result['acc'] <= 1
    saved = torch.load(out / 'model.pth.tar', weights_only=True)
    assert set(saved) == {'model', 'head'} and saved['head'] == result['head']
    assert saved['model']['cluster_head.1.weight'].shape == (10, 16)
    log = [json.loads(line) for line in open(out / 'log.jsonl')]
    assert len(log) == 2 and len(log[0]['val_loss']) == 2 and sum(log[0]['cluster_sizes']) == 256
    assert ('global' in log[0]) == global_term
    for name in ('config.yml', 'checkpoint.pth.tar', 'training_curve.png'):
        assert (out / name).is_file()


def test_frozen_backbone_only_trains_heads(env_file, run_root):
    scan.main(scan_args(env_file, 'scan', 'update_cluster_head_only=true', 'epochs=1'))
    pretext = torch.load(run_root / 'pretext' / 'model.pth.tar', weights_only=True)
    model = torch.load(run_root / 'scan' / 'model.pth.tar', weights_only=True)['model']
    assert all(torch.equal(v, model[k]) for k, v in pretext.items() if k.startswith('backbone.'))


def test_resume_after_interruption_matches(env_file, run_root, tmp_path, monkeypatch):
    args = scan_args(env_file, 'nnm', 'epochs=3')
    shutil.copytree(run_root / 'pretext', tmp_path / 'full' / 'digits' / 'pretext')
    scan.main(args + [f'root_dir={tmp_path}/full'])
    reference = torch.load(tmp_path / 'full' / 'digits' / 'scan' / 'checkpoint.pth.tar', weights_only=True)

    interrupted_then_resumed(monkeypatch, scan, args)
    resumed = torch.load(run_root / 'scan' / 'checkpoint.pth.tar', weights_only=True)
    assert all(torch.equal(reference['model'][k], resumed['model'][k]) for k in reference['model'])
    assert torch.equal(reference['global_probs'], resumed['global_probs'])


def expect_error(capsys, args, text):
    with pytest.raises(SystemExit) as e:
        scan.main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and text in err, err


def test_bad_input_is_one_line_and_writes_nothing(env_file, run_root, capsys):
    pretext = run_root / 'pretext'
    expect_error(capsys, scan_args(env_file, 'scan', 'num_classes=5'), 'num_classes is 5 but digits has 10 classes')
    expect_error(capsys, scan_args(env_file, 'scan', 'train_subset=200'),
                 'has shape (256, 21) but the train split has 200 images')
    expect_error(capsys, scan_args(env_file, 'scan', 'backbone_kwargs.widths=[8, 16, 16, 32]'),
                 "backbone_kwargs is {'widths': [8, 16, 16, 32]")
    os.rename(pretext / 'config.yml', pretext / 'saved.yml')  # a downloaded pretext model comes without one
    expect_error(capsys, scan_args(env_file, 'scan', 'backbone_kwargs.widths=[8, 16, 16, 32]'),
                 'does not fit this model')
    os.rename(pretext / 'saved.yml', pretext / 'config.yml')
    expect_error(capsys, scan_args(env_file, 'scan', 'criterion=nnm'), "criterion 'nnm' differs from setup 'scan'")
    os.rename(pretext / 'topk-val-neighbors.npy', pretext / 'moved.npy')
    expect_error(capsys, scan_args(env_file, 'scan'), 'val neighbours not found')
    os.rename(pretext / 'moved.npy', pretext / 'topk-val-neighbors.npy')
    os.remove(pretext / 'model.pth.tar')
    expect_error(capsys, scan_args(env_file, 'scan'), 'run simclr.py first')
    assert not (run_root / 'scan').exists()


def test_nan_stops_and_keeps_the_last_good_checkpoint(env_file, run_root, capsys, monkeypatch):
    real = SCAN.build_loss

    def poisoned(self, cfg):
        loss, calls = real(self, cfg), []

        def forward(**inputs):
            calls.append(1)
            out = loss(**inputs)
            return {**out, 'total': out['total'] * float('nan')} if len(calls) > 8 else out
        return forward

    monkeypatch.setattr(SCAN, 'build_loss', poisoned)
    expect_error(capsys, scan_args(env_file, 'scan', 'epochs=3'), 'loss became nan in epoch 2')
    state = torch.load(run_root / 'scan' / 'checkpoint.pth.tar', weights_only=True)
    assert state['epoch'] == 1 and all(torch.isfinite(v).all() for v in state['model'].values() if v.is_floating_point())
    assert (run_root / 'scan' / 'model.pth.tar').is_file()


def small_digits_model(**settings):
    """(cfg, a small untrained clustering model, 300 digits with the evaluation transform)."""
    from easydict import EasyDict

    from data import get_dataset
    from data.transforms import val_transform
    from models import get_clustering_model
    cfg = EasyDict({'backbone': 'small_cnn', 'backbone_kwargs': {'widths': [8, 16, 16, 16]}, 'channels': 1,
                    'num_classes': 10, 'num_heads': 2, 'seed': 3, 'batch_size': 64, 'num_workers': 0,
                    'train_db_name': 'digits', 'val_db_name': 'digits', 'train_split': 'all', 'data_root': 'unused',
                    'db_kwargs': {}, 'download': False, 'train_subset': 300, **settings})
    torch.manual_seed(0)
    data = get_dataset(cfg, 'train', val_transform({'crop_size': 8, 'normalize': {'mean': [0.33], 'std': [0.38]}}))
    return cfg, get_clustering_model(cfg), data


def test_graph_initialised_heads_are_the_neighbor_graph_clusters_centroids(tmp_path):
    """head_init: graph: head h is the nearest-centroid rule of the means of graph_clusters' labelling h (Louvain
    seed cfg.seed + h) of the mined neighbours; its softness the mean squared distance to the nearest mean."""
    import numpy as np

    from data.loaders import eval_loader
    from evaluation.features import predict
    from neighbors.num_clusters import graph_clusters
    cfg, model, data = small_digits_model(head_init='graph', k_median='clusters', num_classes=4,
                                          topk_neighbors_train_path=str(tmp_path / 'neighbours.npy'))
    features = predict(model, eval_loader(data, cfg), torch.device('cpu'))['features'].double()
    neighbors = torch.cdist(features, features).topk(11, largest=False).indices.numpy()
    np.save(cfg.topk_neighbors_train_path, neighbors)
    spread = scan.init_heads(model, cfg, data, torch.device('cpu'))
    probs = predict(model, eval_loader(data, cfg), torch.device('cpu'))['probs']
    for h, labels in enumerate(graph_clusters(neighbors, 4, 'clusters', seeds=(3, 4))):
        assert labels.max() == 3
        means = torch.stack([features[torch.as_tensor(labels == c)].mean(0) for c in range(4)])
        distances = torch.cdist(features, means)
        assert torch.equal(probs[h].argmax(1), distances.argmin(1))
        assert spread[h] == pytest.approx(distances.min(1).values.pow(2).mean().item(), rel=1e-6)


@pytest.mark.parametrize('sample', [None, 200])
def test_kmeans_initialised_heads_reproduce_kmeans_at_step_zero(sample, monkeypatch):
    """Each head is k-means' nearest-centroid rule; above KMEANS_SAMPLE images the centroids come from a seeded
    sample of that many, and still label every image."""
    import numpy as np
    from sklearn.cluster import KMeans

    from data.loaders import eval_loader
    from evaluation.features import predict
    from neighbors import head_init
    cfg, model, data = small_digits_model(head_init='kmeans')
    if sample:
        monkeypatch.setattr(head_init, 'KMEANS_SAMPLE', sample)
    spread = scan.init_heads(model, cfg, data, torch.device('cpu'))
    pred = predict(model, eval_loader(data, cfg), torch.device('cpu'))
    features = pred['features'].double().numpy()
    for h in range(2):
        rows = np.random.default_rng(3 + h).choice(300, sample, replace=False) if sample else slice(None)
        km = KMeans(10, n_init=3, random_state=3 + h).fit(features[rows])
        assert (pred['probs'][h].argmax(1).numpy() == km.predict(features)).mean() == 1.0
        distances = ((features[:, None] - km.cluster_centers_[None]) ** 2).sum(2).min(1)
        assert spread[h] == pytest.approx(distances.mean(), rel=1e-6)
    assert not torch.equal(pred['probs'][0], pred['probs'][1])  # the heads start from different k-means runs


def test_kmeans_heads_are_the_first_candidates(env_file, run_root):
    result = scan.main(scan_args(env_file, 'scan', 'head_init=kmeans', 'epochs=1'))
    log = [json.loads(line) for line in open(run_root / 'scan' / 'log.jsonl')]
    assert [r['epoch'] for r in log] == [0, 1] and 'loss' not in log[0]  # epoch 0: k-means, before any step
    kept = min(log, key=lambda r: r['val_loss'][r['head']])
    assert result['head'] == kept['head'] and result['acc'] == pytest.approx(kept['acc'][kept['head']], abs=1e-5)


def test_heads_on_the_projection_through_every_stage(env_file, run_root):
    """heads_on: projection: at step 0 the heads' input is the pretext model's normalised projection; the
    projection head is saved with the heads, and self-labelling and eval.py rebuild the same model from the file."""
    from easydict import EasyDict

    import eval as evaluate
    import selflabel
    from data import get_dataset
    from data.loaders import eval_loader
    from data.transforms import val_transform
    from evaluation.features import extract_features, predict
    from models import contrastive_model_for, get_clustering_model
    from models.files import read_model_file
    scan.main(scan_args(env_file, 'scan', 'heads_on=projection', 'head_init=kmeans', 'epochs=1'))
    saved = read_model_file(str(run_root / 'scan' / 'model.pth.tar'))
    assert saved.state['cluster_head.0.weight'].shape == (10, 64)  # the digits pretext's 64-d projection
    pretext = read_model_file(str(run_root / 'pretext' / 'model.pth.tar')).state
    cfg = scan.prepare(scan.parse_args(scan.base_parser('t'), scan_args(env_file, 'scan', 'heads_on=projection')),
                       'clustering')[0]
    data = get_dataset(cfg, 'val', val_transform(cfg.transformation_kwargs))
    fresh = get_clustering_model(cfg, pretext)
    scan.load_pretext_trunk(fresh, read_model_file(str(run_root / 'pretext' / 'model.pth.tar')))
    source = contrastive_model_for(cfg, pretext)
    source.load_state_dict(pretext)
    expected = extract_features(source, eval_loader(data, cfg), 'cpu')[0]
    assert torch.allclose(predict(fresh, eval_loader(data, cfg), 'cpu')['features'], expected, atol=1e-5)
    # the epoch-0 k-means heads are the kept model unless a trained epoch beat them: either way eval.py and
    # selflabel.py read the projection back from the file
    single = get_clustering_model(EasyDict({**cfg, 'num_heads': 1}), saved.state)
    single.load_state_dict(saved.single_head())
    result = evaluate.main(['--config_env', env_file, '--config_exp', scan_args(env_file, 'scan')[3],
                            '--model', str(run_root / 'scan' / 'model.pth.tar'), *TINY])
    probs = predict(single, eval_loader(data, cfg), 'cpu')['probs'][0]
    assert result['cluster_sizes'] == torch.bincount(probs.argmax(1), minlength=10).tolist()
    selflabel.main(['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'selflabel',
                    'selflabel_digits.yml'), *TINY[:-1], 'epochs=1', 'model_selection=val_loss'])
    labelled = torch.load(run_root / 'selflabel' / 'model.pth.tar', weights_only=True)
    assert 'contrastive_head.0.weight' in labelled and labelled['cluster_head.0.weight'].shape == (10, 64)


@pytest.mark.parametrize('content, expected', [
    (b'random bytes', 'is damaged or not a neighbours file'),
    ('float', 'holds float32 values, not image indices'),
    ('out of range', 'holds indices from 0 to 256, outside the 256 images of the train split'),
])
def test_a_bad_neighbors_file_is_one_line_and_nothing_is_written(env_file, run_root, capsys, content, expected):
    import numpy as np
    path = run_root / 'pretext' / 'topk-train-neighbors.npy'
    good = np.load(path)
    if content == 'float':
        np.save(path, good.astype(np.float32))
    elif content == 'out of range':
        good[0, 1] = len(good)
        np.save(path, good)
    else:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        scan.main(scan_args(env_file, 'scan'))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and '\n' not in err and expected in err and 'Traceback' not in err
    assert not (run_root / 'scan').exists()


MLP = ['cluster_head=mlp', 'cluster_head_kwargs.hidden_dim=32', 'cluster_head_kwargs.bottleneck_dim=16']


@pytest.mark.parametrize('head', ['linear', 'mlp'])
def test_temi_resumes_its_teacher_and_priors(env_file, run_root, tmp_path, monkeypatch, head):
    """TEMI's teacher (a moving average of the heads) and cluster priors are in the checkpoint: a run stopped and
    resumed ends where an uninterrupted one does, bit for bit, with linear heads and with TEMI's MLP heads (their
    weight-normalised last layer resumed as g and v)."""
    args = ['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'scan', 'temi_digits.yml'),
            *TINY, 'epochs=3', *(MLP if head == 'mlp' else [])]
    shutil.copytree(run_root / 'pretext', tmp_path / 'full' / 'digits' / 'pretext')
    result = scan.main(args + [f'root_dir={tmp_path}/full'])
    assert 0 < result['acc'] <= 1
    reference = torch.load(tmp_path / 'full' / 'digits' / 'scan' / 'checkpoint.pth.tar', weights_only=True)
    interrupted_then_resumed(monkeypatch, scan, args)
    resumed = torch.load(run_root / 'scan' / 'checkpoint.pth.tar', weights_only=True)
    for part in ('model', 'teacher'):
        assert reference[part].keys() == resumed[part].keys()
        assert all(torch.equal(reference[part][k], resumed[part][k]) for k in reference[part])
    assert torch.equal(reference['prior'], resumed['prior'])
    heads = {k: v for k, v in reference['model'].items() if k.startswith('cluster_head.')}
    assert not all(torch.equal(heads[f'cluster_head.{k}'], v) for k, v in reference['teacher'].items())  # it lags
    assert any('last.parametrizations' in k for k in heads) == (head == 'mlp')


def test_mlp_heads_through_every_stage(env_file, run_root, tmp_path):
    """TEMI's MLP heads: the model file holds them in plain layers (the last one folded from g and v, rows of length
    g) and TEMI's logit scale; self-labelling fine-tunes the selected one, and eval.py and --predict rebuild it from
    the file alone."""
    from PIL import Image

    import eval as evaluate
    import selflabel
    from data import get_dataset
    from data.loaders import eval_loader
    from data.transforms import val_transform
    from evaluation.features import predict
    from models import get_clustering_model
    from models.models import MLPHead
    args = ['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'scan', 'temi_digits.yml'),
            *TINY, 'epochs=1', *MLP]
    scan.main(args)
    saved = read_model_file(str(run_root / 'scan' / 'model.pth.tar'))
    assert MLPHead.kwargs_of(saved.state, 'cluster_head.1.') == {'hidden_dim': 32, 'bottleneck_dim': 16,
                                                                 'nlayers': 2}
    assert saved.num_clusters == 10 and not any('parametrizations' in k for k in saved.state)
    cfg = scan.prepare(scan.parse_args(scan.base_parser('t'), args), 'clustering')[0]
    cfg.num_heads = 1
    single = get_clustering_model(cfg, saved.state)
    single.load_state_dict(saved.single_head())
    assert float(single.logit_scale) == pytest.approx(1 / 0.1)  # TEMI's student temperature travels with the file
    data = get_dataset(cfg, 'val', val_transform(cfg.transformation_kwargs))
    probs = predict(single, eval_loader(data, cfg), 'cpu')['probs'][0]
    images = tmp_path / 'images'
    images.mkdir()
    for i in range(4):
        Image.fromarray((np.random.default_rng(i).random((8, 8)) * 255).astype(np.uint8)).save(images / f'{i}.png')
    linear = scan_args(env_file, 'scan')[3]  # a config that says nothing of MLP heads: the file does
    result = evaluate.main(['--config_env', env_file, '--config_exp', linear, '--model',
                            str(run_root / 'scan' / 'model.pth.tar'), '--report', '--predict', str(images), *TINY])
    assert result['cluster_sizes'] == torch.bincount(probs.argmax(1), minlength=10).tolist()
    rows = list(csv.DictReader(open(result['predictions'])))
    assert [os.path.basename(r['path']) for r in rows] == [f'{i}.png' for i in range(4)]
    selflabel.main(['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'selflabel',
                    'selflabel_digits.yml'), *TINY[:-1], 'epochs=1'])
    labelled = torch.load(run_root / 'selflabel' / 'model.pth.tar', weights_only=True)
    assert labelled['cluster_head.0.mlp.0.weight'].shape == (32, 16) and labelled['cluster_head.0.last.weight'].shape \
        == (10, 16)
    assert float(labelled['logit_scale']) == pytest.approx(1 / 0.1)


@pytest.mark.parametrize('setup', ['scan', 'temi'])
def test_heads_on_cached_features_match_heads_on_images(env_file, run_root, tmp_path, setup):
    """A frozen trunk on unaugmented images gives the heads the same vectors every step: training them on the cached
    vectors (cache_features) reaches the same heads as through the trunk."""
    config = os.path.join(ROOT, 'configs', 'scan', f'{setup}_digits.yml')
    args = ['--config_env', env_file, '--config_exp', config, *TINY, 'update_cluster_head_only=true',
            'augmentation_kwargs={}', 'augmentation_kwargs.horizontal_flip=false', 'augment_on_device=true']
    shutil.copytree(run_root / 'pretext', tmp_path / 'images' / 'digits' / 'pretext')
    on_images = scan.main(args + [f'root_dir={tmp_path}/images'])
    on_cache = scan.main(args + ['cache_features=true'])
    assert on_cache['head'] == on_images['head'] and on_cache['acc'] == pytest.approx(on_images['acc'], abs=0.02)
    a = torch.load(tmp_path / 'images' / 'digits' / 'scan' / 'model.pth.tar', weights_only=True)['model']
    b = torch.load(run_root / 'scan' / 'model.pth.tar', weights_only=True)['model']
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_cache_features_needs_a_frozen_trunk(env_file, run_root, capsys):
    expect_error(capsys, scan_args(env_file, 'scan', 'cache_features=true'), 'give clustering.update_cluster_head_only=true')
    expect_error(capsys, scan_args(env_file, 'nnm', 'cache_features=true', 'update_cluster_head_only=true',
                                   'local_neighbor_view=weak'), 'needs images')


def test_pairs_of_images_carry_the_declared_views():
    """Each view is the anchor's image or a mined neighbour's, under the strong or the weak transform; without a
    neighbour view the lists are never read."""
    class Images:
        def __len__(self):
            return 3

        def get_image(self, i):
            return torch.full((1, 2, 2), float(i))
    lists = np.array([[1], [2], [0]])
    views = {'anchor': ('self', 'strong'), 'neighbor': ('neighbor', 'strong'), 'weak': ('self', 'weak')}
    item = NeighborPairs(Images(), lists, views, strong=lambda x: x + 10, weak=lambda x: -x)[1]
    assert set(item) == {'anchor', 'neighbor', 'weak', 'index'} and item['index'] == 1
    assert float(item['anchor'].max()) == 11 and float(item['neighbor'].max()) == 12 and float(item['weak'].max()) == -1
    alone = NeighborPairs(Images(), None, {'anchor': ('self', 'strong')}, strong=lambda x: x)[2]
    assert set(alone) == {'anchor', 'index'} and float(alone['anchor'].max()) == 2


def turtle_args(env_file, *extra):
    return ['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'scan', 'turtle_digits.yml'),
            'epochs=3', 'batch_size=128', 'train_subset=256', 'val_subset=256',
            'backbone_kwargs.widths=[8, 16, 16, 16]', 'num_heads=2', *extra]


@pytest.mark.parametrize('warm_start', [False, True])
def test_turtle_trains_through_scan_and_resumes_its_inner_learners(env_file, run_root, tmp_path, monkeypatch,
                                                                   warm_start):
    """scan.py with setup: turtle on cached features; with warm_start the inner classifiers and their optimisers
    are in the checkpoint, and a run stopped and resumed ends where an uninterrupted one does."""
    args = turtle_args(env_file, f'criterion_kwargs.warm_start={str(warm_start).lower()}')
    shutil.copytree(run_root / 'pretext', tmp_path / 'full' / 'digits' / 'pretext')
    views = set()

    class Recorded(FeaturePairs):
        def batch(self, index):
            out = super().batch(index)
            views.update(out)
            return out
    monkeypatch.setattr(scan, 'FeaturePairs', Recorded)
    result = scan.main(args + [f'root_dir={tmp_path}/full'])
    assert result['num_classes'] == 10 and 0 < result['acc'] <= 1
    assert views == {'anchor', 'index'}  # TURTLE reads no mined neighbour: none is fetched
    reference = torch.load(tmp_path / 'full' / 'digits' / 'scan' / 'checkpoint.pth.tar', weights_only=True)
    assert (reference['inner'] is not None) == warm_start
    assert any('parametrizations' in k for k in reference['model'])  # weight-normalised heads resume as g and v
    saved = torch.load(tmp_path / 'full' / 'digits' / 'scan' / 'model.pth.tar', weights_only=True)['model']
    assert 'cluster_head.1.weight' in saved and not any('parametrizations' in k for k in saved)  # the plain layout
    folded = read_model_file(str(tmp_path / 'full' / 'digits' / 'scan' / 'checkpoint.pth.tar')).state  # as eval.py
    assert {k for k in folded if k.startswith('cluster_head.')} == {f'cluster_head.{h}.{part}' for h in (0, 1)
                                                                     for part in ('weight', 'bias')}
    interrupted_then_resumed(monkeypatch, scan, args, epoch=2)
    resumed = torch.load(run_root / 'scan' / 'checkpoint.pth.tar', weights_only=True)
    assert all(torch.equal(reference['model'][k], resumed['model'][k]) for k in reference['model'])
