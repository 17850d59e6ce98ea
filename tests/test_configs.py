"""Every shipped config resolves against its stage's schema (its method's keyword arguments included), its
augmentation and backbone build, and a dataset's shared settings are written once."""
import collections
import glob
import os

import pytest
from PIL import Image

from conftest import ROOT
from data import complete_transforms
from data.transforms import train_transform, val_transform
from models import get_backbone
from methods import get_method
from stages.schema import ENV, SCHEMAS
from utils.config import base_parser, load_config, parse_args
from utils.stages import STAGES as STAGE_TABLE

STAGES = {stage.folder: stage.name for stage in STAGE_TABLE.values()}  # folder -> stage
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', '*', '*.yml')))


class OneImage:
    """What complete_transforms reads of a train split: its first image, all images of one size."""
    one_size = True

    def __init__(self, size):
        self.size = size

    def get_image(self, index):
        return Image.new('RGB', (self.size, self.size))


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_resolves(path, env_file):
    stage = os.path.basename(os.path.dirname(path))
    cfg = load_config(parse_args(base_parser('t'), ['--config_env', env_file, '--config_exp', path]),
                      ENV, SCHEMAS[STAGES[stage]], STAGES[stage])
    get_method(STAGES[stage], cfg.setup).resolve_kwargs(cfg.setup, cfg.criterion_kwargs)
    tk = cfg.transformation_kwargs or {}
    if tk.get('crop_size') is None or tk.get('normalize') in (None, 'auto'):  # left to the images or the weights
        size = tk.get('crop_size') or (cfg.db_kwargs or {}).get('image_size') or 32
        complete_transforms(cfg, OneImage(size), {'mean': [0.5] * 3, 'std': [0.5] * 3, 'source': 'the test'})
    train_transform(cfg.augmentation_strategy, cfg.augmentation_kwargs)
    val_transform(cfg.transformation_kwargs)
    if cfg.backbone != 'resnet50':  # building ResNet-50 takes a while; its names are tested in test_models
        get_backbone(cfg)


def test_every_stage_folder_is_covered():
    assert {os.path.basename(os.path.dirname(p)) for p in CONFIGS} == set(STAGES)


def config_lines(path):
    """The distinct non-comment lines of a YAML file, stripped."""
    return {line.split('#', 1)[0].strip() for line in open(path)} - {''}


@pytest.mark.parametrize('dataset, files', [('digits', 8), ('cifar10_jpg', 8), ('cifar10', 8), ('cifar20', 5),
                                            ('stl10', 5), ('imagenet_50', 5)])
def test_a_datasets_configs_write_shared_settings_once(dataset, files):
    paths = [p for p in glob.glob(os.path.join(ROOT, 'configs', '**', '*.yml'), recursive=True)
             if os.path.basename(p) in (f'{dataset}.yml',) or os.path.basename(p).endswith(f'_{dataset}.yml')]
    counts = collections.Counter(line for path in paths for line in config_lines(path))
    repeated = sorted(line for line, n in counts.items() if n > 1)
    assert len(paths) >= files and len(repeated) <= 12, repeated
