"""Several pretrained backbones side by side (`backbones:`): each normalises the image its own way, their features
are concatenated, mined with every space weighing the same, and the model with two trunks goes through the
clustering stage, eval.py and --predict from its files alone."""
import csv
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from easydict import EasyDict

import eval as evaluate
import scan
import simclr
from benchmarks.digits_folder import write_digits
from data import get_dataset
from data.loaders import eval_loader
from data.transforms import val_transform
from models import contrastive_model_for, get_backbone, get_clustering_model
from test_image_folder_template import TEMPLATE
from evaluation.features import normalise_spaces, predict, pretext_features
from models.files import read_model_file

WIDTHS = ([8, 16, 16, 16], [4, 8, 8, 12])
NORMS = ({'mean': [0.5, 0.4, 0.3], 'std': [0.2, 0.25, 0.3]}, {'mean': [0.1, 0.1, 0.1], 'std': [1.5, 1.5, 1.5]})


def small_cnn(widths):
    return get_backbone(EasyDict(backbone='small_cnn', backbone_kwargs={'widths': widths}, channels=3,
                                 backbone_weights=None, train_db_name='image_folder'))['backbone']


@pytest.fixture
def two_trunks(tmp_path, env_file):
    """A digits folder and the pretext stage (setup: pretrained) over two small CNNs given as weight files, each
    with its own normalisation; returns (args, the trunks, the run folder)."""
    folder = tmp_path / 'digits'
    write_digits(str(folder), size=16, classes=[0, 1, 7], limit=60)
    torch.manual_seed(0)
    trunks, entries = [], []
    for i, (widths, norm) in enumerate(zip(WIDTHS, NORMS)):
        trunks.append(small_cnn(widths).eval())
        torch.save(trunks[-1].state_dict(), tmp_path / f'trunk{i}.pth')
        entries.append({'backbone': 'small_cnn', 'backbone_weights': str(tmp_path / f'trunk{i}.pth'),
                        'backbone_kwargs': {'widths': widths}, 'normalize': norm})
    args = ['--config_env', env_file, '--config_exp', TEMPLATE, f'db_kwargs.path={folder}', 'db_kwargs.image_size=16',
            'num_classes=3', 'clustering.epochs=2', 'clustering.setup=turtle', 'clustering.batch_size=60']
    simclr.main(args + ['pretext.setup=pretrained', f'backbones={json.dumps(entries)}'])
    return args, trunks, tmp_path / 'results' / 'digits'


def test_two_backbones_mine_on_both_spaces_each_with_its_normalisation(two_trunks):
    """The pretext stage leaves the pixels in [0, 1]; the model file holds both trunks and their normalisations;
    the cached features are each trunk's on its own normalisation of the image, side by side, and the neighbours
    are mined on them with each space L2-normalised first."""
    args, trunks, out = two_trunks
    saved = yaml.safe_load(open(out / 'pretext' / 'config.yml'))
    assert saved['transformation_kwargs']['normalize'] == {'mean': [0.0] * 3, 'std': [1.0] * 3}
    state = read_model_file(str(out / 'pretext' / 'model.pth.tar')).state
    for i, (trunk, norm) in enumerate(zip(trunks, NORMS)):
        assert all(torch.equal(state[f'backbone.trunks.{i}.{k}'], v) for k, v in trunk.state_dict().items())
        assert state['backbone.mean'][i].flatten().tolist() == pytest.approx(norm['mean'])
    cfg = EasyDict({**saved, 'db_kwargs': {**saved['db_kwargs']}, 'batch_size': 60})
    data = get_dataset(cfg, 'train', val_transform(saved['transformation_kwargs']))
    images = torch.stack([data[i]['image'] for i in range(len(data))])
    with torch.no_grad():
        by_hand = [trunk((images - torch.tensor(n['mean']).view(1, 3, 1, 1)) / torch.tensor(n['std']).view(1, 3, 1, 1))
                   for trunk, n in zip(trunks, NORMS)]
    [cached] = [torch.from_numpy(np.load(p)) for p in (out / 'pretext' / 'feature_cache').glob('*.npy')
                if np.load(p).shape[0] == len(data)]
    assert torch.allclose(cached, torch.cat(by_hand, 1), atol=1e-5)
    mined = normalise_spaces(torch.cat(by_hand, 1), [16, 12])
    assert torch.allclose(mined, torch.cat([F.normalize(f, dim=1) for f in by_hand], 1) / 2 ** 0.5, atol=1e-6)
    model = contrastive_model_for(cfg, state)  # as eval.py and feature_extract.py read the pretext model
    model.load_state_dict(state)
    reported = pretext_features(model.eval(), eval_loader(data, cfg), EasyDict(mining_features='backbone'), 'cpu')[0]
    assert torch.allclose(reported, mined, atol=1e-5)
    neighbors = np.load(out / 'pretext' / 'topk-train-neighbors.npy')
    similarity = mined @ mined.T
    k = neighbors.shape[1] - 1
    expected = similarity.topk(k + 1, dim=1).indices
    assert (torch.as_tensor(neighbors[:, 1:]).sort(1).values == expected[:, 1:].sort(1).values).float().mean() > 0.98


def test_a_two_trunk_model_goes_through_turtle_eval_and_predict(two_trunks, tmp_path):
    """TURTLE on the two spaces (an inner classifier per space), the model file with both trunks, and eval.py and
    --predict rebuilding it from the run's files: the clusters it reports are the model's own."""
    args, trunks, out = two_trunks
    result = scan.main(args)
    assert result['num_classes'] == 3
    found = read_model_file(str(out / 'scan' / 'model.pth.tar'))
    assert found.state['cluster_head.0.weight'].shape == (3, 16 + 12)  # one head on both spaces
    for i, trunk in enumerate(trunks):
        assert all(torch.equal(found.state[f'backbone.trunks.{i}.{k}'], v) for k, v in trunk.state_dict().items())
    saved = yaml.safe_load(open(out / 'scan' / 'config.yml'))
    cfg = EasyDict({**saved, 'num_heads': 1})
    model = get_clustering_model(cfg, found.state)
    model.load_state_dict(found.single_head())
    data = get_dataset(cfg, 'val', val_transform(saved['transformation_kwargs']))
    probs = predict(model, eval_loader(data, cfg), 'cpu')['probs'][0]
    report = evaluate.main(args + ['--model', str(out / 'scan' / 'model.pth.tar'), '--report',
                                   '--predict', str(tmp_path / 'digits' / '7')])
    assert report['cluster_sizes'] == torch.bincount(probs.argmax(1), minlength=3).tolist()
    rows = list(csv.DictReader(open(report['predictions'])))
    sevens = sorted(os.listdir(tmp_path / 'digits' / '7'))
    assert [os.path.basename(r['path']) for r in rows] == sevens
    index = {os.path.relpath(p, tmp_path / 'digits'): i for i, p in enumerate(data.paths)}
    assert [int(r['cluster']) for r in rows] == [int(probs[index[os.path.join('7', n)]].argmax()) for n in sevens]


def test_backbones_bad_input_is_one_line(two_trunks, capsys):
    args, _, _ = two_trunks
    for bad, message in (('[{"backbone": "small_cnn"}]', 'give two or more'),
                         ('[{"backbone": "small_cnn"}, {"net": "x"}]', 'must be a mapping with backbone: NAME'),
                         ('[{"backbone": "small_cnn"}, {"backbone": "nope"}]', "unknown backbone 'nope'"),
                         ('[{"backbone": "small_cnn"}, {"backbone": "small_cnn"}]', 'names no weights')):
        with pytest.raises(SystemExit) as e:
            simclr.main(args + ['pretext.setup=pretrained', f'backbones={bad}', 'name=bad'])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and '\n' not in err and message in err
    with pytest.raises(SystemExit):
        simclr.main(args + ['backbones=[{"backbone": "small_cnn"}, {"backbone": "small_cnn"}]', 'name=bad'])
    assert 'is for setup: pretrained' in capsys.readouterr().err
