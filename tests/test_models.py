"""Module and parameter names follow SCAN's, so that its released checkpoints load."""
import pytest
import torch
from easydict import EasyDict

from models import get_backbone, get_clustering_model, get_contrastive_model
from utils.checkpoint import load_weights, strip_prefixes
from utils.errors import UserError


def cfg(**kw):
    base = dict(backbone='resnet18', train_db_name='cifar-10', channels=3, backbone_kwargs={},
                model_kwargs={'head': 'mlp', 'features_dim': 128}, num_classes=10, num_heads=1)
    return EasyDict({**base, **kw})


def scan_resnet18_keys():
    """The keys of SCAN's released CIFAR/STL ResNet-18 pretext files, written out from the layout."""
    keys = ['backbone.conv1.weight'] + [f'backbone.bn1.{p}' for p in ('weight', 'bias', 'running_mean',
                                                                       'running_var', 'num_batches_tracked')]
    bn = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
    for layer in range(1, 5):
        for block in range(2):
            pre = f'backbone.layer{layer}.{block}'
            keys += [f'{pre}.conv1.weight'] + [f'{pre}.bn1.{p}' for p in bn]
            keys += [f'{pre}.conv2.weight'] + [f'{pre}.bn2.{p}' for p in bn]
            if layer > 1 and block == 0:
                keys += [f'{pre}.shortcut.0.weight'] + [f'{pre}.shortcut.1.{p}' for p in bn]
    return keys + ['contrastive_head.0.weight', 'contrastive_head.0.bias',
                   'contrastive_head.2.weight', 'contrastive_head.2.bias']


@pytest.mark.parametrize('db', ['cifar-10', 'stl-10'])
def test_contrastive_resnet18_has_scans_keys(db):
    model = get_contrastive_model(cfg(train_db_name=db))
    assert sorted(model.state_dict()) == sorted(scan_resnet18_keys())
    assert model.state_dict()['contrastive_head.0.weight'].shape == (512, 512)
    x = torch.randn(2, 3, 96 if db == 'stl-10' else 32, 96 if db == 'stl-10' else 32)
    out = model.eval()(x)
    assert out.shape == (2, 128) and torch.allclose(out.norm(dim=1), torch.ones(2))


def test_scan_layout_checkpoint_loads_with_module_prefix():
    source = get_contrastive_model(cfg())
    saved = {'module.' + k: v.clone() for k, v in source.state_dict().items()}  # DataParallel resume file
    target = get_contrastive_model(cfg())
    load_weights(target, saved, 'test checkpoint')
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(source.eval()(x), target.eval()(x))
    assert list(strip_prefixes({'module._orig_mod.a': 1})) == ['a']


def test_clustering_model_heads_and_wrong_checkpoint():
    model = get_clustering_model(cfg(num_heads=3))
    keys = model.state_dict()
    assert keys['cluster_head.2.weight'].shape == (10, 512) and 'backbone.layer4.1.bn2.weight' in keys
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert len(out) == 3 and out[0].shape == (2, 10)
    pretext = get_contrastive_model(cfg(backbone='small_cnn'))
    with pytest.raises(UserError, match='does not fit this model'):
        load_weights(get_contrastive_model(cfg()), pretext.state_dict(), 'pretext model')


def test_resnet50_uses_torchvision_names():
    backbone = get_backbone(cfg(backbone='resnet50'))
    assert backbone['dim'] == 2048 and 'layer1.0.downsample.0.weight' in backbone['backbone'].state_dict()
    assert 'fc.weight' not in backbone['backbone'].state_dict()


def test_small_cnn_options_are_checked():
    b = get_backbone(cfg(backbone='small_cnn', channels=1, backbone_kwargs={'widths': [4, 8], 'pools': [True, False]}))
    assert b['backbone'](torch.randn(2, 1, 8, 8)).shape == (2, 8)
    with pytest.raises(UserError, match="not understood by 'small_cnn'"):
        get_backbone(cfg(backbone='small_cnn', backbone_kwargs={'depth': 3}))


def test_heads_on_normalised_backbone_read_unit_vectors_and_the_model_file_keeps_it():
    """heads_on: backbone_normalized: every head reads the backbone features divided by their length (the same
    logits for a feature vector at any scale, head(x / |x|) by hand); the clustering file, its one-head form for
    self-labelling and eval, and a model rebuilt from either keep the normalisation, and SCAN's layout has none."""
    from models.files import single_head_state
    small = cfg(backbone='small_cnn', num_heads=2, heads_on='backbone_normalized')
    model = get_clustering_model(small).eval()
    x = torch.randn(4, model.backbone_dim)
    by_hand = model.cluster_head[1](x / x.norm(dim=1, keepdim=True))
    assert torch.allclose(model(x, 'head')[1], by_hand, atol=1e-6)
    assert torch.allclose(model(7 * x, 'head')[1], by_hand, atol=1e-6)
    images = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(images, 'return_all')['features'].norm(dim=1), torch.ones(2))
    for heads, state in ((2, model.state_dict()), (1, single_head_state(model.state_dict(), 1))):
        assert 'input_normalized' in state
        rebuilt = get_clustering_model(cfg(backbone='small_cnn', num_heads=heads), state).eval()
        load_weights(rebuilt, state, 'clustering model')
        assert torch.allclose(rebuilt(images)[-1], model(images)[1], atol=1e-6)
    assert 'input_normalized' not in get_clustering_model(cfg(backbone='small_cnn')).state_dict()
