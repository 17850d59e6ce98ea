"""Every shipped config resolves against its stage's schema (its method's keyword arguments included), and its
augmentation and backbone build."""
import glob
import os

import pytest

from conftest import ROOT
from data.transforms import train_transform, val_transform
from models import get_backbone
from methods import get_method
from stages.schema import ENV, SCHEMAS
from utils.config import base_parser, load_config, parse_args

STAGES = {'pretext': 'pretext', 'scan': 'clustering', 'selflabel': 'selflabel'}  # folder -> stage
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', '*', '*.yml')))


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_resolves(path, env_file):
    stage = os.path.basename(os.path.dirname(path))
    cfg = load_config(parse_args(base_parser('t'), ['--config_env', env_file, '--config_exp', path]),
                      ENV, SCHEMAS[STAGES[stage]])
    get_method(STAGES[stage], cfg.setup).resolve_kwargs(cfg.setup, cfg.criterion_kwargs)
    train_transform(cfg.augmentation_strategy, cfg.augmentation_kwargs)
    val_transform(cfg.transformation_kwargs)
    if cfg.backbone != 'resnet50':  # building ResNet-50 takes a while; its names are tested in test_models
        get_backbone(cfg)


def test_every_stage_folder_is_covered():
    assert {os.path.basename(os.path.dirname(p)) for p in CONFIGS} == set(STAGES)

