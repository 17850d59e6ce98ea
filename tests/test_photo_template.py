"""configs/image_folder_pretrained.yml, the photo template: its own settings only, lengths in optimiser steps, and a
head kept by the label-free rule, the heads' start (here k-means) among its candidates."""
import json
import os

import torch
import yaml

import scan
import selflabel
from conftest import PHOTOS, ROOT, photo_template_run
from stages.schema import ENV, SCHEMAS
from utils.config import Key, base_parser, load_config, parse_args, read_layers

PIXELS = os.path.join(ROOT, 'configs', 'image_folder.yml')


def resolved(path, stage, env_file):
    args = parse_args(base_parser('t'), ['--config_env', env_file, '--config_exp', path, 'db_kwargs.path=DIR'])
    return load_config(args, ENV, SCHEMAS[stage], stage)


def test_the_photo_template_carries_nothing_of_the_small_cnn_template(env_file):
    """Every key the small-CNN template sets is, in the photo template's resolved config, the schema's default or
    the photo template's own value: no augmentation, projection heads or step caps meant for a trained small CNN."""
    own = {}
    for _, layer in read_layers(PHOTOS, 'experiment'):
        own.update(layer)
    assert '_base_' not in own
    pixels = {}
    for _, layer in read_layers(PIXELS, 'experiment'):
        pixels.update(layer)
    for stage in ('pretext', 'clustering', 'selflabel'):
        cfg = resolved(PHOTOS, stage, env_file)
        mine = {**own, **(own.get(stage) or {})}
        theirs = {**pixels, **(pixels.get(stage) or {})}
        for key, value in theirs.items():
            if key in SCHEMAS[stage] and key not in mine and key != 'db_kwargs':
                spec = SCHEMAS[stage][key]
                default = spec.default if isinstance(spec, Key) else spec
                assert cfg[key] == default, f'{stage}: {key} = {cfg[key]!r} comes from the small-CNN template'
        assert cfg.augmentation_kwargs == {} and cfg.get('max_steps') is None


def log(folder):
    return [json.loads(line) for line in open(folder / 'log.jsonl')]


def test_a_small_folder_trains_the_steps_the_rule_gives(tmp_path, env_file):
    """40 images: a batch holds all of them (one step an epoch), so the clustering stage's steps 25 give 25 epochs;
    self-labelling's steps 10 would give 10 epochs of one step, raised to min_epochs 20."""
    args, out = photo_template_run(tmp_path, env_file, 'clustering.steps=25', 'selflabel.steps=10', 'clustering.num_heads=2')
    scan.main(args)
    selflabel.main(args)
    trained = [r for r in log(out / 'scan') if r['epoch'] > 0]
    assert len(trained) == 25 and all(r['steps'] == 1 for r in trained)
    taught = [r for r in log(out / 'selflabel') if r['epoch'] > 0]
    assert len(taught) == 20 and sum(r['steps'] for r in taught) == 20
    assert yaml.safe_load(open(out / 'scan' / 'config.yml'))['epochs'] == 25


def test_the_label_free_choice_keeps_the_kmeans_start_when_every_later_epoch_is_worse(tmp_path, env_file,
                                                                                        monkeypatch):
    """A criterion that rises every evaluation: the k-means start (epoch 0) is kept, model file and metrics."""
    from methods.base import ClusteringMethod
    args, out = photo_template_run(tmp_path, env_file, 'clustering.steps=3', 'clustering.min_epochs=3',
                             'clustering.num_heads=2', 'clustering.head_init=kmeans')
    calls = []

    def rising(self, probs, neighbors):
        calls.append(1)
        return torch.tensor([float(len(calls)), len(calls) + 0.5])
    monkeypatch.setattr(ClusteringMethod, 'val_losses', rising)
    result = scan.main(args)
    records = log(out / 'scan')
    assert [r['epoch'] for r in records] == [0, 1, 2, 3] and len(calls) == 4
    assert result['head'] == 0 and abs(result['acc'] - records[0]['acc'][0]) < 1e-5
    saved = torch.load(out / 'scan' / 'model.pth.tar', weights_only=True)
    checkpoint = torch.load(out / 'scan' / 'checkpoint.pth.tar', weights_only=True)
    assert checkpoint['best']['epoch'] == 0 and saved['head'] == 0
