"""BYOL, the momentum-teacher pretext (methods/byol.py): its loss in closed form, the teacher as a moving average
of the online network, and a resumed run identical to an uninterrupted one (predictor and teacher included)."""
import os

import pytest
import torch
import torch.nn.functional as F
from easydict import EasyDict

import simclr
from stages import epochs
from conftest import ROOT, interrupt_on_call
from methods.byol import BYOL, BYOLLoss
from models.models import ContrastiveModel

BYOL_CFG = os.path.join(ROOT, 'configs', 'pretext', 'byol_digits.yml')


def test_loss_is_two_minus_twice_the_cosine_to_the_other_views_teacher():
    torch.manual_seed(0)
    p, t = torch.randn(5, 2, 8), F.normalize(torch.randn(5, 2, 8), dim=-1)
    cos = torch.stack([F.cosine_similarity(p[:, 0], t[:, 1]), F.cosine_similarity(p[:, 1], t[:, 0])], 1)
    out = BYOLLoss()(p, t)
    assert out['total'].item() == pytest.approx((2 - 2 * cos).sum(1).mean().item(), rel=1e-6)
    assert BYOLLoss()(3 * t.flip(1), t)['total'].item() == pytest.approx(0.0, abs=1e-6)  # scale does not matter
    assert BYOLLoss()(-t.flip(1), t)['total'].item() == pytest.approx(8.0)  # opposite: 4 per view pair


def test_teacher_is_a_moving_average_of_the_online_network():
    torch.manual_seed(0)
    backbone = {'backbone': torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6)), 'dim': 6}
    model = ContrastiveModel(backbone, 'mlp', 4)
    cfg = EasyDict(criterion_kwargs=BYOL.resolve_kwargs('byol', {'teacher_momentum': 0.9}),
                   model_kwargs={'features_dim': 4})
    method = BYOL(cfg, None, 'cpu')
    assert method.build(model) is method.predictor and method.predictor[0].in_features == 4
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    method.after_step()
    for k, teacher in method.teacher.shadow.state_dict().items():
        assert torch.allclose(teacher, 0.9 * before[k] + 0.1 * model.state_dict()[k], atol=1e-6)
    assert not any(p.requires_grad for p in method.teacher.shadow.parameters())


def test_resume_after_interruption_matches_uninterrupted_run(env_file, tmp_path, monkeypatch):
    args = ['--config_env', env_file, '--config_exp', BYOL_CFG, 'epochs=3', 'batch_size=64', 'train_subset=256',
            'val_subset=256', 'backbone_kwargs.widths=[8, 16, 16, 16]', 'knn_every=0']
    simclr.main(args + [f'root_dir={tmp_path}/full'])
    full = tmp_path / 'full' / 'digits' / 'pretext'
    restore = interrupt_on_call(monkeypatch, epochs, 'train_epoch', 3)
    with pytest.raises(SystemExit):
        simclr.main(args + [f'root_dir={tmp_path}/cut'])
    restore()
    cut = tmp_path / 'cut' / 'digits' / 'pretext'
    simclr.main(args + [f'root_dir={tmp_path}/cut', '--resume'])
    for name in ('model.pth.tar', 'checkpoint.pth.tar'):
        reference, resumed = (torch.load(d / name, weights_only=True) for d in (full, cut))
        if name == 'checkpoint.pth.tar':  # the predictor and the teacher are carried over exactly
            reference = {**reference['predictor'], **{f't.{k}': v for k, v in reference['teacher'].items()}}
            resumed = {**resumed['predictor'], **{f't.{k}': v for k, v in resumed['teacher'].items()}}
        assert reference.keys() == resumed.keys() and all(torch.equal(reference[k], resumed[k]) for k in reference)
