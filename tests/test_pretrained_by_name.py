"""Pretrained weights by name, as timm and torchvision users load them (`backbone_kwargs: {pretrained: true}`,
`{weights: NAME}`), read here from a hub cache the test writes (random weights, offline), and the preprocessing that
travels with them."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from easydict import EasyDict
from safetensors.torch import save_file

import scan
import simclr
from benchmarks.digits_folder import write_digits
from conftest import ROOT
from models import get_backbone
from test_image_folder_template import TEMPLATE
from utils.errors import UserError

IMAGENET = [0.485, 0.456, 0.406, 0.229, 0.224, 0.225]  # mean, then std
TF_LITE = [0.5] * 6  # TensorFlow's EfficientNet-Lite weights


def mean_std(normalisation):
    return list(normalisation['mean']) + list(normalisation['std'])


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache in HF_HOME, offline, as a fresh process would see it."""
    import huggingface_hub.constants as constants
    home = tmp_path / 'hf'
    monkeypatch.setenv('HF_HOME', str(home))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(home / 'hub'))  # read from the environment at import
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    return home


def cache_timm_weights(home, name, seed=0):
    """Random weights of timm's `name` (classifier included) written where timm.create_model(name,
    pretrained=True) finds them: $HF_HOME/hub/models--timm--<model.tag>/snapshots/<rev>/model.safetensors."""
    from utils.tv import torchvision  # noqa: F401
    import timm
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    repo = model.pretrained_cfg['hf_hub_id']  # timm/<model>.<tag>: the name's tag, or the model's default one
    folder = home / 'hub' / f"models--{repo.replace('/', '--')}"
    revision = '0123456789abcdef0123456789abcdef01234567'
    (folder / 'refs').mkdir(parents=True)
    (folder / 'refs' / 'main').write_text(revision)
    (folder / 'snapshots' / revision).mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / 'snapshots' / revision / 'model.safetensors'))
    return state


def backbone_cfg(name, **kwargs):
    return EasyDict(backbone=name, backbone_kwargs=kwargs, channels=3, backbone_weights=None)


def test_timm_weights_by_name_come_from_the_hub_cache(hub):
    state = cache_timm_weights(hub, 'resnet18.a1_in1k')
    backbone = get_backbone(backbone_cfg('timm/resnet18.a1_in1k', pretrained=True), load_weights=True)
    loaded = backbone['backbone'].state_dict()
    assert set(loaded) == {k for k in state if not k.startswith('fc.')}  # the classifier is left out
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    assert mean_std(backbone['preprocessing']) == pytest.approx(IMAGENET)
    assert backbone['preprocessing']['input_size'] == 224 and 'pretrained_cfg' in backbone['preprocessing']['source']
    # the later stages build the architecture alone: the pretext model is loaded into it, nothing is fetched
    untouched = get_backbone(backbone_cfg('timm/resnet50', pretrained=True))
    assert untouched['preprocessing'] is None


def test_a_timm_model_missing_from_the_cache_offline_is_one_line(hub):
    with pytest.raises(UserError) as e:
        get_backbone(backbone_cfg('timm/resnet18.a1_in1k', pretrained=True), load_weights=True)
    message = str(e.value)
    assert 'timm/resnet18.a1_in1k' in message and 'once with the network' in message
    assert 'backbone_weights=PATH' in message and str(hub / 'hub') in message


def test_pretrained_by_name_mines_as_the_same_weights_given_as_a_file(tmp_path, env_file, hub):
    """The same random weights by name from the cache and as a .safetensors backbone_weights file give the same
    neighbours; pretext/config.yml holds the weights' own normalisation (ImageNet's for resnet18.a1_in1k, 0.5
    for tf_efficientnet_lite0, also when its weights come from a file), and the clustering stage follows the
    pretrained pretext by itself (heads on the frozen backbone, cached features)."""
    state = cache_timm_weights(hub, 'resnet18.a1_in1k')
    save_file(state, str(tmp_path / 'resnet18.safetensors'))
    folder = tmp_path / 'digits'
    write_digits(str(folder), size=16, classes=[0, 1, 7], limit=60)
    args = ['--config_env', env_file, '--config_exp', TEMPLATE, f'db_kwargs.path={folder}',
            'db_kwargs.image_size=16', 'num_classes=3', 'pretext.setup=pretrained', 'clustering.epochs=1']
    by_name = ['backbone=timm/resnet18.a1_in1k', 'backbone_kwargs={pretrained: true}']
    simclr.main(args + by_name + ['name=by_name'])
    simclr.main(args + ['backbone=timm/resnet18.a1_in1k', 'backbone_kwargs={}', 'name=by_file',
                        f'backbone_weights={tmp_path / "resnet18.safetensors"}'])
    results = tmp_path / 'results'
    for split in ('train', 'val'):
        assert np.array_equal(np.load(results / 'by_name' / 'pretext' / f'topk-{split}-neighbors.npy'),
                              np.load(results / 'by_file' / 'pretext' / f'topk-{split}-neighbors.npy'))
    for run in ('by_name', 'by_file'):
        saved = yaml.safe_load(open(results / run / 'pretext' / 'config.yml'))
        assert mean_std(saved['transformation_kwargs']['normalize']) == pytest.approx(IMAGENET)
        assert mean_std(saved['augmentation_kwargs']['normalize']) == pytest.approx(IMAGENET)

    assert scan.main(args + by_name + ['name=by_name'])['num_classes'] == 3  # no frozen-backbone flags typed
    clustering = yaml.safe_load(open(results / 'by_name' / 'scan' / 'config.yml'))
    assert (clustering['heads_on'], clustering['update_cluster_head_only'], clustering['cache_features'],
            clustering['k_median']) == ('backbone', True, True, 'communities')
    assert mean_std(clustering['transformation_kwargs']['normalize']) == pytest.approx(IMAGENET)

    cache_timm_weights(hub, 'tf_efficientnet_lite0')
    lite = ['backbone=timm/tf_efficientnet_lite0', 'backbone_kwargs={pretrained: true}', 'train_subset=30',
            'val_subset=30']
    simclr.main(args + lite + ['name=lite'])
    saved = yaml.safe_load(open(results / 'lite' / 'pretext' / 'config.yml'))
    assert mean_std(saved['transformation_kwargs']['normalize']) == pytest.approx(TF_LITE)


def test_torchvision_weights_by_name_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    from utils.tv import torchvision
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    (tmp_path / 'torch' / 'hub' / 'checkpoints').mkdir(parents=True)
    torch.save(state, tmp_path / 'torch' / 'hub' / 'checkpoints' / os.path.basename(weights.url))
    backbone = get_backbone(backbone_cfg('torchvision/resnet18', weights='IMAGENET1K_V1'), load_weights=True)
    loaded = backbone['backbone'].state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded) and len(loaded) == len(state) - 2  # fc.*
    assert mean_std(backbone['preprocessing']) == pytest.approx(IMAGENET)
    with pytest.raises(UserError, match="torchvision/resnet18 has no weights 'IMAGENET9K'; valid: IMAGENET1K_V1"):
        get_backbone(backbone_cfg('torchvision/resnet18', weights='IMAGENET9K'), load_weights=True)


def test_offline_without_the_weights_the_pretext_stage_stops_in_one_line(tmp_path, env_file):
    """As a user runs it: HF_HOME and HF_HUB_OFFLINE from the environment, exit 2, one line, nothing written."""
    folder = tmp_path / 'digits'
    write_digits(str(folder), size=16, classes=[0, 1], limit=20)
    env = {**os.environ, 'HF_HOME': str(tmp_path / 'empty'), 'HF_HUB_OFFLINE': '1'}
    run = subprocess.run([sys.executable, 'simclr.py', '--config_env', env_file, '--config_exp', TEMPLATE,
                          f'db_kwargs.path={folder}', 'pretext.setup=pretrained', 'backbone=timm/resnet18.a1_in1k',
                          'backbone_kwargs={pretrained: true}'], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: the pretrained weights of timm/resnet18.a1_in1k')
    assert 'backbone_weights=PATH' in lines[0] and str(tmp_path / 'empty') in lines[0]
    assert not (tmp_path / 'results').exists()


def test_a_dinov2_vit_by_name_at_the_images_size(hub):
    """The README's DINOv2 ViT-S/14: the cached weights (trained at 518 pixels) load into a model built for the
    images' size, whose position embeddings timm resizes; another image size is refused before any forward."""
    from models.pretrained import check_input_size
    state = cache_timm_weights(hub, 'vit_small_patch14_dinov2.lvd142m')
    cfg = backbone_cfg('timm/vit_small_patch14_dinov2.lvd142m', pretrained=True, img_size=28)
    backbone = get_backbone(cfg, load_weights=True)
    loaded = backbone['backbone'].state_dict()
    assert torch.equal(loaded['blocks.0.attn.qkv.weight'], state['blocks.0.attn.qkv.weight'])
    assert loaded['pos_embed'].shape[1] == 1 + 2 * 2 and state['pos_embed'].shape[1] == 1 + 37 * 37
    assert mean_std(backbone['preprocessing']) == pytest.approx(IMAGENET)
    assert backbone['backbone'](torch.randn(2, 3, 28, 28)).shape == (2, backbone['dim'])
    check_input_size(backbone['backbone'], cfg.backbone, 28)
    with pytest.raises(UserError, match=r'takes 28x28 images and these are 32x32: set db_kwargs.image_size=28'):
        check_input_size(backbone['backbone'], cfg.backbone, 32)


def test_the_photo_template_needs_the_path_alone(tmp_path, env_file, hub, capsys):
    """configs/image_folder_pretrained.yml as the README gives it: the folder's path and nothing else (bar short
    epochs); the weights come by name from the cache, the later stages read the backbone from the pretext run."""
    import eval as evaluate
    import selflabel
    cache_timm_weights(hub, 'tf_efficientnet_lite2')
    folder = tmp_path / 'photos'
    write_digits(str(folder), size=16, classes=[0, 1, 7], limit=60)
    args = ['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'image_folder_pretrained.yml'),
            f'db_kwargs.path={folder}', 'db_kwargs.image_size=32', 'num_classes=3', 'clustering.epochs=2',
            'selflabel.epochs=1']
    simclr.main(args)
    with pytest.raises(SystemExit) as e:  # the later stages decode the images themselves: at the pretext's size
        scan.main(args + ['db_kwargs.image_size=64'])
    assert e.value.code == 2 and 'give db_kwargs.image_size=32' in capsys.readouterr().err
    assert scan.main(args)['num_classes'] == 3
    selflabel.main(args)
    out = tmp_path / 'results' / 'photos'
    assert 'acc' in evaluate.main(args + ['--model', str(out / 'selflabel' / 'model.pth.tar')])
    pretext = yaml.safe_load(open(out / 'pretext' / 'config.yml'))
    assert mean_std(pretext['transformation_kwargs']['normalize']) == pytest.approx(TF_LITE)
    for stage in ('scan', 'selflabel'):
        saved = yaml.safe_load(open(out / stage / 'config.yml'))
        assert (saved['backbone'], saved['backbone_kwargs'], saved['cache_features']) == (
            'timm/tf_efficientnet_lite2', {'pretrained': True}, True)
