"""Backbones from timm and torchvision, and weight files in the layouts users bring (models/pretrained.py)."""
import csv
import os

import pytest
import torch
from easydict import EasyDict

from models import get_backbone, get_contrastive_model
from models.pretrained import load_backbone_weights
from utils.errors import UserError

TINY_VIT = {'img_size': 16, 'patch_size': 8, 'embed_dim': 24, 'depth': 2, 'num_heads': 2}


def build(name, **kwargs):
    torch.manual_seed(1)  # every model starts from other random weights than the saved one
    return get_backbone(EasyDict(backbone=name, backbone_kwargs=kwargs, channels=3))['backbone'].eval()


@pytest.fixture(scope='module')
def source():
    torch.manual_seed(0)
    model = get_backbone(EasyDict(backbone='timm/vit_small_patch16_224', backbone_kwargs=TINY_VIT, channels=3))
    return model['backbone'].eval()


def layouts(state):
    """The weight-file layouts users bring (README) around one backbone state dict."""
    return {
        'plain': state,
        'ddp': {f'module.{k}': v for k, v in state.items()},
        'dino': {'student': {f'module.backbone.{k}': v + 1 for k, v in state.items()},  # the teacher is read
                 'teacher': {**{f'backbone.{k}': v for k, v in state.items()},
                             'head.last_layer.weight': torch.zeros(3, 24)}, 'epoch': 100},
        'moco_v2': {'state_dict': {**{f'module.encoder_q.{k}': v for k, v in state.items()},
                                   **{f'module.encoder_k.{k}': v + 1 for k, v in state.items()}}},
        'solo_learn': {'state_dict': {**{f'backbone.{k}': v for k, v in state.items()},
                                      'projector.0.weight': torch.zeros(4, 24)}},
    }


@pytest.mark.parametrize('layout', ['plain', 'ddp', 'dino', 'moco_v2', 'solo_learn'])
def test_every_layout_loads_to_identical_features(tmp_path, source, layout):
    path = tmp_path / 'weights.pth'
    torch.save(layouts(source.state_dict())[layout], path)
    model = build('timm/vit_small_patch16_224', **TINY_VIT)
    x = torch.randn(2, 3, 16, 16)
    assert not torch.allclose(model(x), source(x))
    load_backbone_weights(model, str(path))
    assert torch.equal(model(x), source(x))


def test_a_file_that_does_not_fit_loads_nothing(tmp_path, source):
    state = source.state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith('blocks.1.')}, tmp_path / 'short.pth')
    model = build('timm/vit_small_patch16_224', **TINY_VIT)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match=r'missing: blocks\.1\.norm1\.weight') as e:
        load_backbone_weights(model, str(tmp_path / 'short.pth'))
    assert '\n' not in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded
    torch.save({**state, 'pos_embed': torch.zeros(1, 9, 24)}, tmp_path / 'wide.pth')
    with pytest.raises(UserError, match=r'shapes differ: pos_embed'):
        load_backbone_weights(model, str(tmp_path / 'wide.pth'))
    torch.save({'conv.weight': torch.zeros(3)}, tmp_path / 'other.pth')
    with pytest.raises(UserError, match='no key of the file matches the model'):
        load_backbone_weights(model, str(tmp_path / 'other.pth'))
    torch.save({'model': EasyDict(a=1)}, tmp_path / 'pickled.pth')
    with pytest.raises(UserError, match='cannot be read as plain tensors'):
        load_backbone_weights(model, str(tmp_path / 'pickled.pth'))


def test_torchvision_backbone_takes_its_own_state_dict(tmp_path):
    from utils.tv import torchvision
    torch.manual_seed(0)
    full = torchvision.models.resnet18(weights=None).eval()
    torch.save(full.state_dict(), tmp_path / 'resnet18.pth')  # with fc: left out, named in the note
    model = build('torchvision/resnet18')
    load_backbone_weights(model, str(tmp_path / 'resnet18.pth'))
    x = torch.randn(2, 3, 32, 32)
    full.fc = torch.nn.Identity()
    assert torch.equal(model(x), full(x))


def test_pretext_model_starts_from_the_weights_file(tmp_path, source):
    torch.save(source.state_dict(), tmp_path / 'w.pth')
    cfg = EasyDict(backbone='timm/vit_small_patch16_224', backbone_kwargs=TINY_VIT, channels=3,
                   backbone_weights=str(tmp_path / 'w.pth'), model_kwargs={'head': 'mlp', 'features_dim': 8})
    model = get_contrastive_model(cfg, get_backbone(cfg, load_weights=True)).eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model(x, forward_pass='backbone'), source(x))
    with pytest.raises(UserError, match="timm has no model 'no_such_net'"):
        build('timm/no_such_net')
    with pytest.raises(UserError, match='names no model'):
        build('timm/')
    with pytest.raises(UserError, match="backbone_kwargs not understood by timm/resnet18: .*'widths'"):
        build('timm/resnet18', widths=[8, 16])
    with pytest.raises(UserError, match="torchvision has no model 'resnet7'"):
        build('torchvision/resnet7')


def test_setup_pretrained_mines_on_the_loaded_backbone(tmp_path, env_file, source, capsys, monkeypatch):
    """simclr.py with setup: pretrained trains nothing: the model file holds the weights file's backbone, the
    neighbours are mined on its features, and the clustering stage trains heads on it."""
    import numpy as np
    import scan
    import simclr
    from benchmarks.digits_folder import write_digits
    from test_image_folder_template import TEMPLATE
    from models.files import read_model_file
    folder = tmp_path / 'digits'
    write_digits(str(folder), size=16, classes=[0, 1, 7], limit=60)
    torch.save({'teacher': {f'backbone.{k}': v for k, v in source.state_dict().items()}}, tmp_path / 'dino.pth')
    args = ['--config_env', env_file, '--config_exp', TEMPLATE, f'db_kwargs.path={folder}', 'db_kwargs.image_size=16',
            'backbone=timm/vit_small_patch16_224', 'backbone_kwargs={}', f'backbone_kwargs={TINY_VIT}',
            'num_classes=3', 'clustering.epochs=1']
    fails(simclr, args + ['pretext.setup=pretrained'], capsys, 'setup: pretrained needs pretrained weights')
    simclr.main(args + ['pretext.setup=pretrained', f'backbone_weights={tmp_path / "dino.pth"}'])
    out = tmp_path / 'results' / 'digits'
    saved = read_model_file(str(out / 'pretext' / 'model.pth.tar'), 'pretext model', 'pretext').state
    assert all(torch.equal(saved[f'backbone.{k}'], v) for k, v in source.state_dict().items())
    assert not (out / 'pretext' / 'checkpoint.pth.tar').exists()  # nothing trained
    neighbors = np.load(out / 'pretext' / 'topk-train-neighbors.npy')
    assert neighbors.shape[0] == 60 and (neighbors[:, 0] == np.arange(60)).all()
    cache = out / 'pretext' / 'feature_cache'
    assert len(os.listdir(cache)) == 1  # the folder's features (train = val), written by the pretext stage
    # the template's heads_on: projection is moot (the projection head is untrained): heads on the frozen backbone,
    # trained on the cached features, which are read, not computed again
    assert scan.main(args + ['clustering.scan_folder=cached'])['num_classes'] == 3 and len(os.listdir(cache)) == 1
    tuned = args + ['clustering.update_cluster_head_only=false', 'clustering.cache_features=false']
    assert scan.main(tuned)['num_classes'] == 3  # an explicit false fine-tunes the backbone
    trained = read_model_file(str(out / 'scan' / 'checkpoint.pth.tar'), 'checkpoint', 'clustering').state
    assert not all(torch.equal(trained[f'backbone.{k}'], v) for k, v in source.state_dict().items())
    cached_model = read_model_file(str(out / 'cached' / 'model.pth.tar'), 'clustering model', 'clustering').state
    assert all(torch.equal(cached_model[f'backbone.{k}'], v) for k, v in source.state_dict().items())
    import eval as evaluate  # the model file says where its heads sit: the template's heads_on: projection is moot
    # eval.py reads the frozen trunk's features from the cache (nothing computed, nothing added) and predicts as the
    # model does on the images
    model = ['--model', str(out / 'cached' / 'model.pth.tar'), '--predict', str(folder)]
    import stages.feature_cache as feature_cache
    read, real = [], feature_cache.trunk_features

    def no_pass(*a, **kw):
        raise AssertionError('the trunk ran: the cached features were not read')
    monkeypatch.setattr(feature_cache, 'extract_features', no_pass)
    monkeypatch.setattr(feature_cache, 'trunk_features', lambda *a, **kw: read.append(1) or real(*a, **kw))
    from_cache = evaluate.main(args + model + ['--output', str(tmp_path / 'e1'), '--report'])
    monkeypatch.undo()
    assert read == [1] and len(os.listdir(cache)) == 1  # the val split read once; --predict of it reuses it
    from_images = evaluate.main(args + ['clustering.cache_features=false'] + model + ['--output', str(tmp_path / 'e2'),
                                                                                    '--report'])
    assert 'acc' in from_cache and from_cache['acc'] == from_images['acc']
    assert from_cache['cluster_sizes'] == from_images['cluster_sizes']
    rows = [list(csv.DictReader(open(tmp_path / e / 'predictions_digits.csv'))) for e in ('e1', 'e2')]
    assert [(r['path'], r['cluster']) for r in rows[0]] == [(r['path'], r['cluster']) for r in rows[1]]
    assert len(rows[0]) == 60


def fails(stage, args, capsys, message):
    with pytest.raises(SystemExit) as e:
        stage.main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_lukemelas_efficientnet_names_pair_with_timm_in_order(tmp_path):
    """lukemelas' EfficientNet holds timm's tensors in the same order under its own names (`_conv_stem`,
    `_blocks.N._expand_conv`, ..., `_fc`): loaded in order, each pair checked by leaf name and shape."""
    torch.manual_seed(0)
    source = build('timm/tf_efficientnet_lite0')
    state = source.state_dict()
    names = ['_conv_stem.weight'] + [f'_blocks.{i}._layer.{k.rsplit(".", 1)[-1]}' for i, k in enumerate(list(state)[1:])]
    lukemelas = {new: v for new, v in zip(names, state.values())}
    torch.save({**lukemelas, '_fc.weight': torch.zeros(1000, 1280), '_fc.bias': torch.zeros(1000)}, tmp_path / 'e.pth')
    model = build('timm/tf_efficientnet_lite0')
    load_backbone_weights(model, str(tmp_path / 'e.pth'))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), source.eval()(x))
    swapped = dict(lukemelas)
    a, b = names[1], names[6]  # the stem BN's weight and the first depthwise conv: shapes differ
    swapped[a], swapped[b] = lukemelas[b], lukemelas[a]
    torch.save(swapped, tmp_path / 'bad.pth')
    with pytest.raises(UserError, match='no key of the file matches the model'):
        load_backbone_weights(model, str(tmp_path / 'bad.pth'))
