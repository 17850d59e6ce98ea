"""Self-labelling: the loss against a reference, EMA, and selflabel.py main() on tiny data."""
import json
import math
import os
import shutil

import pytest
import torch
import yaml

import scan
import selflabel
import simclr
from conftest import ROOT, interrupted_then_resumed, tiny_digits_args, write_env
from losses.selflabel import ConfidenceBasedCE, SelectedCE
from methods.selflabel_per_cluster import select_per_cluster
from utils.config import read_layers
from utils.ema import EMA


def reference(weak, strong, threshold, balance):
    probs = weak.softmax(1)
    rows = [i for i in range(len(weak)) if probs[i].max() > threshold]
    if not rows:
        return None
    targets = [int(probs[i].argmax()) for i in rows]
    weights = [len(rows) / targets.count(t) if balance else 1.0 for t in targets]
    losses = [-float(strong[i].log_softmax(0)[t]) for i, t in zip(rows, targets)]
    return sum(w * l for w, l in zip(weights, losses)) / sum(weights)


@pytest.mark.parametrize('balance', [True, False])
def test_confidence_loss_matches_reference(balance):
    torch.manual_seed(0)
    weak = torch.randn(40, 4, dtype=torch.float64) * 4
    strong = torch.randn(40, 4, dtype=torch.float64)
    out = ConfidenceBasedCE(0.9, balance)(weak, strong)
    expected = reference(weak, strong, 0.9, balance)
    assert out['confident'] == int((weak.softmax(1).max(1).values > 0.9).sum()) > 3
    assert out['total'].item() == pytest.approx(expected, rel=1e-9)


def test_class_balancing_weights_rare_classes_up():
    weak = torch.tensor([[10.0, 0], [10.0, 0], [10.0, 0], [0, 10.0]])
    strong = torch.tensor([[0.0, 1], [0.0, 1], [0.0, 1], [1.0, 0]])  # all wrong, equally
    ce = -torch.log_softmax(torch.tensor([0.0, 1]), 0)[0].item()
    # weights 4/3 for the three class-0 samples, 4/1 for the single class-1 sample: weighted mean = ce
    assert ConfidenceBasedCE(0.99, True)(weak, strong)['total'].item() == pytest.approx(ce)


def test_empty_mask_gives_no_loss():
    out = ConfidenceBasedCE(0.99, True)(torch.zeros(5, 3), torch.randn(5, 3))
    assert out == {'total': None, 'confident': 0}


def test_ema_update_and_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    before = ema.shadow[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()(torch.randn(8, 3))  # changes the BatchNorm running statistics
    ema.update(model)
    assert torch.allclose(ema.shadow[0].weight, 0.9 * before + 0.1 * model[0].weight)
    assert torch.equal(ema.shadow[1].running_mean, model[1].running_mean)
    assert not ema.shadow[0].weight.requires_grad


TINY = ['epochs=2', 'batch_size=64', 'train_subset=256', 'val_subset=256', 'backbone_kwargs.widths=[8, 16, 16, 16]']


@pytest.fixture(scope='module')
def clustered(tmp_path_factory):
    """Tiny pretext + NNM runs whose folders each test copies."""
    root = tmp_path_factory.mktemp('clustered')
    env = write_env(root, data_root=root)
    simclr.main(tiny_digits_args(env, 'epochs=1'))
    scan.main(['--config_env', env, '--config_exp', os.path.join(ROOT, 'configs', 'scan', 'nnm_digits.yml'),
               *TINY, 'num_heads=2'])
    return root / 'results' / 'digits'


def selflabel_args(env_file, *extra):
    return ['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'selflabel', 'selflabel_digits.yml'),
            *TINY, *extra]


@pytest.fixture
def run_root(tmp_path, clustered):
    shutil.copytree(clustered, tmp_path / 'results' / 'digits')
    return tmp_path / 'results' / 'digits'


def test_selflabel_runs_and_writes_scans_layout(env_file, run_root):
    result = selflabel.main(selflabel_args(env_file, 'confidence_threshold=0.0', 'use_ema=true'))
    out = run_root / 'selflabel'
    assert set(result) == {'acc', 'nmi', 'ari', 'head', 'seconds'} and json.load(open(out / 'metrics.json')) == result
    state = torch.load(out / 'model.pth.tar', weights_only=True)
    assert 'cluster_head.0.weight' in state and not any(k.startswith('cluster_head.1') for k in state)
    log = [json.loads(line) for line in open(out / 'log.jsonl')]
    assert len(log) == 2 and 0 < log[0]['confident_share'] <= 1 and 'acc' in log[0]


@pytest.mark.parametrize('on_device', [True, False])
def test_strong_augmentation_on_either_path(env_file, run_root, tmp_path, on_device):
    cfg = {}  # the digits config with the files it builds on, laid into one mapping
    for _, layer in read_layers(os.path.join(ROOT, 'configs', 'selflabel', 'selflabel_digits.yml'), 'experiment'):
        cfg.update(layer)
    cfg.update(augmentation_strategy='ours', augment_on_device=on_device,
               augmentation_kwargs={'crop_size': 8, 'num_strong_augs': 4, 'normalize': {'mean': [0.33], 'std': [0.38]},
                                    'cutout_kwargs': {'n_holes': 1, 'length': 4}})
    (tmp_path / 'strong.yml').write_text(yaml.safe_dump(cfg))
    result = selflabel.main(['--config_env', env_file, '--config_exp', str(tmp_path / 'strong.yml'), *TINY,
                             'confidence_threshold=0.0', 'epochs=1'])
    log = json.loads(open(run_root / 'selflabel' / 'log.jsonl').readline())
    assert math.isfinite(log['loss']) and 0 <= result['acc'] <= 1


def test_no_confident_sample_skips_and_warns(env_file, run_root):
    with pytest.warns(UserWarning, match=r'no sample taught \(confidence above 1.0\)'):
        selflabel.main(selflabel_args(env_file, 'confidence_threshold=1.0', 'epochs=1'))
    record = json.loads(open(run_root / 'selflabel' / 'log.jsonl').readline())
    assert record['loss'] is None and record['confident_share'] == 0 and record['skipped_batches'] == 4


def test_selflabel_resume_matches(env_file, run_root, tmp_path, monkeypatch):
    args = selflabel_args(env_file, 'confidence_threshold=0.0', 'use_ema=true', 'epochs=3')
    shutil.copytree(run_root, tmp_path / 'full' / 'digits')
    selflabel.main(args + [f'root_dir={tmp_path}/full'])
    reference_state = torch.load(tmp_path / 'full' / 'digits' / 'selflabel' / 'model.pth.tar', weights_only=True)
    interrupted_then_resumed(monkeypatch, selflabel, args)
    resumed = torch.load(run_root / 'selflabel' / 'model.pth.tar', weights_only=True)
    assert all(torch.equal(reference_state[k], resumed[k]) for k in reference_state)


def test_missing_clustering_model(env_file, run_root, capsys):
    with pytest.raises(SystemExit) as e:
        selflabel.main(selflabel_args(env_file, 'scan_folder=nowhere'))
    assert e.value.code == 2 and 'run scan.py first' in capsys.readouterr().err
    assert not (run_root / 'selflabel').exists()


def test_per_cluster_selection_keeps_a_cluster_that_is_less_sure_than_the_others():
    # planted: cluster 0's confidences (0.50..0.69) are all below cluster 1's (0.991..0.999)
    confidence = torch.cat([torch.linspace(0.5, 0.69, 20), torch.linspace(0.991, 0.999, 10)])
    labels = torch.tensor([0] * 20 + [1] * 10)
    assert set(labels[confidence > 0.99].tolist()) == {1}  # SCAN's fixed threshold empties cluster 0
    use = select_per_cluster(confidence, labels, 3, fraction=0.25)
    assert torch.equal(torch.nonzero(use).flatten(), torch.tensor([15, 16, 17, 18, 19, 27, 28, 29]))
    disagree = torch.zeros(30)  # no sample's neighbours agree: each cluster still keeps its most confident two
    use = select_per_cluster(confidence, labels, 3, 0.25, min_per_cluster=2, agreement=disagree, min_agreement=0.5)
    assert torch.equal(torch.nonzero(use).flatten(), torch.tensor([18, 19, 28, 29]))
    agree = (torch.arange(30) % 2).float()  # odd samples' neighbours agree
    use = select_per_cluster(confidence, labels, 3, 0.5, agreement=agree, min_agreement=0.5)
    assert torch.equal(torch.nonzero(use).flatten(), torch.tensor([11, 13, 15, 17, 19, 25, 27, 29]))


@pytest.mark.parametrize('balance', [True, False])
def test_selected_loss_matches_reference(balance):
    torch.manual_seed(1)
    strong = torch.randn(30, 4, dtype=torch.float64)
    target, use = torch.randint(4, (30,)), torch.rand(30) > 0.4
    rows = torch.nonzero(use).flatten().tolist()
    targets = [int(target[i]) for i in rows]
    weights = [len(rows) / targets.count(t) if balance else 1.0 for t in targets]
    losses = [-float(strong[i].log_softmax(0)[t]) for i, t in zip(rows, targets)]
    out = SelectedCE(balance, 0.0)(strong, target, use)
    assert out['confident'] == len(rows)
    assert out['total'].item() == pytest.approx(sum(w * x for w, x in zip(weights, losses)) / sum(weights), rel=1e-9)
    assert SelectedCE(True, 0.0)(strong, target, torch.zeros(30, dtype=torch.bool)) == {'total': None, 'confident': 0}


@pytest.mark.parametrize('selection, best', [('val_loss', lambda r: r['val_loss']),
                                              ('agreement', lambda r: -r['val_agreement'])])
def test_per_cluster_self_labelling_keeps_the_best_label_free_epoch(env_file, run_root, selection, best):
    result = selflabel.main(selflabel_args(env_file, 'setup=selflabel_per_cluster', f'model_selection={selection}',
                                           'criterion_kwargs.neighbor_agreement=0.5', 'epochs=3'))
    log = [json.loads(line) for line in open(run_root / 'selflabel' / 'log.jsonl')]
    assert [r['epoch'] for r in log] == [0, 1, 2, 3]  # epoch 0: the clustering model itself
    assert all(0 < r['selected_share'] <= 1 and r['taught_clusters'] >= 1 for r in log[1:])
    kept = min(log, key=best)  # the first of equals, as the stage keeps it
    assert result['acc'] == kept['acc'] and result['nmi'] == kept['nmi']
    state = torch.load(run_root / 'selflabel' / 'checkpoint.pth.tar', weights_only=True)
    assert state['best']['epoch'] == kept['epoch']


def test_selected_loss_entropy_term_is_scans():
    torch.manual_seed(2)
    strong = torch.randn(12, 3, dtype=torch.float64)
    target, use = torch.randint(3, (12,)), torch.ones(12, dtype=torch.bool)
    mean = strong.softmax(1).mean(0)
    expected = SelectedCE(False, 0.0)(strong, target, use)['total'] + 2.0 * float((mean * mean.log()).sum())
    assert SelectedCE(False, entropy_weight=2.0)(strong, target, use)['total'].item() == pytest.approx(expected)


def test_selflabel_on_cached_features_trains_the_head_alone(env_file, run_root, tmp_path):
    """cache_features: the trunk stays the clustering model's, the head learns, and the evaluation on cached
    vectors gives the clustering model (epoch 0) the same label-free loss and ACC as the evaluation on images."""
    args = ['model_selection=val_loss', 'confidence_threshold=0.0', 'epochs=2']
    shutil.copytree(run_root, tmp_path / 'images' / 'digits')
    selflabel.main(selflabel_args(env_file, *args, f'root_dir={tmp_path}/images'))
    selflabel.main(selflabel_args(env_file, *args, 'cache_features=true'))
    on_images = json.loads(open(tmp_path / 'images' / 'digits' / 'selflabel' / 'log.jsonl').readline())
    log = [json.loads(line) for line in open(run_root / 'selflabel' / 'log.jsonl')]
    assert log[0]['epoch'] == 0 and log[0]['acc'] == pytest.approx(on_images['acc'])
    assert log[0]['val_loss'] == pytest.approx(on_images['val_loss'], abs=1e-4) and len(log) == 3
    clustering = torch.load(run_root / 'scan' / 'model.pth.tar', weights_only=True)
    start = clustering['model']
    state = torch.load(run_root / 'selflabel' / 'checkpoint.pth.tar', weights_only=True)['model']
    assert all(torch.equal(v, state[k]) for k, v in start.items() if not k.startswith('cluster_head.'))
    assert not torch.equal(state['cluster_head.0.weight'], start[f"cluster_head.{clustering['head']}.weight"])


def test_label_neighbors_teach_the_mean_prediction_of_each_sample_and_its_neighbors(tmp_path):
    """label_neighbors K: each sample's pseudo-label and confidence are those of the mean of its own and its first K
    mined neighbours' predictions (the mined file's own column left out wherever it stands)."""
    import numpy as np
    from easydict import EasyDict

    from methods.selflabel_per_cluster import SelfLabelPerCluster
    from utils.errors import UserError
    torch.manual_seed(3)
    n, k = 12, 2
    mined = np.array([[i, (i + 1) % n, (i + 5) % n, (i + 7) % n] for i in range(n)])
    mined[3] = [4, 3, 8, 10]  # the sample itself in the second column
    np.save(tmp_path / 'topk-train-neighbors.npy', mined)
    cfg = EasyDict(topk_neighbors_train_path=str(tmp_path / 'topk-train-neighbors.npy'),
                   criterion_kwargs={**SelfLabelPerCluster.kwargs, 'label_neighbors': k, 'fraction': 1.0})
    method = SelfLabelPerCluster(cfg, range(n))
    probs = torch.randn(n, 3).softmax(1)
    method.start_epoch(lambda: {'probs': probs[None]})
    others = [[j for j in row if j != i][:k] for i, row in enumerate(mined)]
    mean = torch.stack([(probs[i] + probs[others[i]].sum(0)) / (k + 1) for i in range(n)])
    assert torch.equal(method.labels, mean.argmax(1)) and not torch.equal(mean.argmax(1), probs.argmax(1))
    cfg.criterion_kwargs['label_neighbors'] = 4  # more than were mined (a tiny folder): every mined one
    method = SelfLabelPerCluster(cfg, range(n))
    method.start_epoch(lambda: {'probs': probs[None]})
    every = torch.stack([(probs[i] + probs[[j for j in row if j != i]].sum(0)) / 4 for i, row in enumerate(mined)])
    assert method.label_neighbors == 3 and torch.equal(method.labels, every.argmax(1))
    cfg.criterion_kwargs['label_neighbors'] = -1
    with pytest.raises(UserError, match='label_neighbors must be 0'):
        SelfLabelPerCluster(cfg, range(n))
