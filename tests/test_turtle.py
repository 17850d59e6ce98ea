"""TURTLE (setup: turtle): its loss against its formula, its inner learner's first step in closed form, the
labelling it finds against a brute-force search, its weight-normalised heads saved as plain ones (its run through
scan.py: tests/test_scan_stage.py)."""
import itertools
import math

import pytest
import torch
import torch.nn as nn
from easydict import EasyDict

from losses.turtle import TURTLELoss, fit_linear
from methods.turtle import TURTLE
from models.models import ClusteringModel


def test_loss_against_its_formula():
    torch.manual_seed(0)
    labels, predicted = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    out = TURTLELoss(entropy_weight=3.0)(labels, predicted)
    q, log_w = labels.softmax(1).tolist(), predicted.log_softmax(1).tolist()
    error = -sum(q[i][c] * log_w[i][c] for i in range(6) for c in range(4)) / 6
    mean = [sum(q[i][c] for i in range(6)) / 6 for c in range(4)]
    entropy = -sum(m * math.log(m) for m in mean)
    assert out['error'].item() == pytest.approx(error, rel=1e-5)
    assert out['entropy'].item() == pytest.approx(entropy, rel=1e-5)
    assert out['total'].item() == pytest.approx(error - 3.0 * entropy, rel=1e-5)
    out['total'].backward()
    assert predicted.grad is None and labels.grad.abs().sum() > 0  # the inner classifier is held fixed
    # a classifier that predicts the labelling exactly leaves the labelling's own entropy as its error
    exact = TURTLELoss(0.0)(labels.detach(), labels.detach().log_softmax(1))
    rows = -(labels.softmax(1) * labels.log_softmax(1)).sum(1).mean()
    assert exact['error'].item() == pytest.approx(rows.item(), rel=1e-6)


def test_the_inner_learners_first_step_from_zero():
    """From zero weights the classifier predicts 1/C everywhere, so the gradient of the cross-entropy is
    (1/b) sum_i (1/C - t_i) x_i; Adam's first step moves every weight by lr against its sign."""
    torch.manual_seed(1)
    x, targets = torch.randn(8, 5), torch.randn(8, 3).softmax(1)
    classifier = nn.Linear(5, 3)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    fit_linear(classifier, torch.optim.Adam(classifier.parameters(), lr=0.01, eps=1e-12), x, targets, 1)
    gradient = (1 / 3 - targets).T @ x / 8
    assert torch.allclose(classifier.weight, -0.01 * gradient.sign(), atol=1e-7)
    assert torch.allclose(classifier.bias, -0.01 * (1 / 3 - targets).mean(0).sign(), atol=1e-7)


def autograd_fit(classifier, optimizer, x, targets, steps, groups):
    """The reference inner learner: the summed cross-entropies of the groups, differentiated by autograd."""
    for _ in range(steps):
        optimizer.zero_grad()
        logits = classifier(x)
        sum(-(t * z.log_softmax(1)).sum(1).mean() for z, t in zip(logits.split(groups, 1), targets.split(groups, 1))
            ).backward()
        optimizer.step()


def test_the_inner_learners_closed_form_gradient_is_autograds():
    """Several Adam steps of fit_linear, two heads side by side, targets that are not distributions (the gradient's
    sum(t) factor), against autograd's; in bfloat16 the products stay within bfloat16's rounding of float32's."""
    torch.manual_seed(2)
    x, targets = torch.randn(64, 12) * 3, torch.rand(64, 7) * 2
    fitted = []
    for fit, dtype in ((autograd_fit, None), (fit_linear, None), (fit_linear, torch.bfloat16)):
        torch.manual_seed(3)  # the same start for each
        classifier = nn.Linear(12, 7)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=0.05)
        fit(classifier, optimizer, x, targets, 6, [3, 4], *([dtype] if fit is fit_linear else []))
        fitted.append(torch.cat([classifier.weight.flatten(), classifier.bias]).detach())
    assert torch.allclose(fitted[1], fitted[0], atol=1e-5)
    assert not torch.equal(fitted[2], fitted[1]) and torch.allclose(fitted[2], fitted[1], atol=0.02)


def turtle_objective(x, labels, gamma, cfg):
    """TURTLE's loss for one hard labelling: the inner learner fitted as a step fits it, then the loss."""
    method = TURTLE(cfg)
    head = nn.Linear(x.shape[1], 2)
    q = torch.nn.functional.one_hot(labels, 2).float()
    classifier, optimizer = method.learners([head], 'cpu', [x.shape[1]])[0]
    fit_linear(classifier, optimizer, x, q, cfg.criterion_kwargs['inner_steps'])
    with torch.no_grad():
        error = -(q * classifier(x).log_softmax(1)).sum(1).mean()
    mean = q.mean(0).clamp_min(1e-8)
    return float(error + gamma * (mean * mean.log()).sum())


def test_the_labelling_found_is_the_brute_force_optimum():
    """Eight points in two loose groups: of the 2^8 hard labellings, the one with the lowest TURTLE loss (searched
    exhaustively) is the two groups, and training a head with the method from a random start finds it."""
    x = torch.tensor([[-2.0, 0.8], [-2.6, -0.4], [-1.4, 0.1], [-2.2, -1.0],
                      [2.0, -0.8], [2.5, 0.5], [1.5, 1.1], [2.3, -0.2]])
    cfg = EasyDict(criterion_kwargs={'entropy_weight': 1.0, 'inner_steps': 10, 'inner_lr': 0.1, 'warm_start': False})
    best = min(itertools.product([0, 1], repeat=8),
               key=lambda lab: turtle_objective(x, torch.tensor(lab), 1.0, cfg))
    assert best in ((0,) * 4 + (1,) * 4, (1,) * 4 + (0,) * 4)
    torch.manual_seed(0)
    model = EasyDict(cluster_head=nn.ModuleList([nn.Linear(2, 2)]))
    method, optimizer = TURTLE(cfg), torch.optim.Adam(model.cluster_head.parameters(), lr=0.05)
    for _ in range(200):
        context = method.step_context(model, None, {'anchor': x}, 'cpu')
        loss = method.criterion(**method.inputs({'anchor': model.cluster_head[0](x)}, 0, None, context))['total']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert tuple(model.cluster_head[0](x).argmax(1).tolist()) in (best, tuple(1 - b for b in best))


def test_weight_normalised_heads_start_predict_and_save_as_plain_ones():
    """TURTLE's heads train as g v / |v|: the nearest-centroid start gives the plain head's logits, and the model file
    (plain_state) loads into a plain model that predicts exactly as the normalised one."""
    torch.manual_seed(0)
    x, centroids = torch.randn(20, 6), torch.randn(3, 6)
    plain = ClusteringModel({'backbone': nn.Identity(), 'dim': 6}, nclusters=3, nheads=2)
    normalised = ClusteringModel({'backbone': nn.Identity(), 'dim': 6}, nclusters=3, nheads=2)
    normalised.normalise_heads()
    assert {'cluster_head.0.parametrizations.weight.original0', 'cluster_head.0.parametrizations.weight.original1'} \
        <= set(normalised.state_dict())
    for model in (plain, normalised):
        model.init_head(0, centroids, 2.0)
    assert torch.allclose(normalised(x)[0], plain(x)[0], atol=1e-6)
    with torch.no_grad():
        normalised.cluster_head[1].parametrizations.weight.original0.mul_(3.0)  # a trained length
    state = normalised.plain_state()
    assert set(state) == set(plain.state_dict())
    plain.load_state_dict(state)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain(x), normalised(x)))


def test_backbones_side_by_side_get_one_inner_classifier_per_space():
    """Two representation spaces (models.SideBySide): each head's labelling is fitted by one inner classifier per
    space on that space's columns alone, and the error is the sum of the two cross-entropies."""
    from models.models import SideBySide
    torch.manual_seed(0)
    cfg = EasyDict(criterion_kwargs={'entropy_weight': 1.0, 'inner_steps': 5, 'inner_lr': 0.1, 'warm_start': False})
    model = EasyDict(backbone=SideBySide([nn.Identity(), nn.Identity()], [2, 3], [None, None]),
                     cluster_head=nn.ModuleList([nn.Linear(5, 4)]))
    x = torch.randn(16, 5)
    method = TURTLE(cfg)
    context = method.step_context(model, None, {'anchor': x}, 'cpu')
    labels = model.cluster_head[0](x).softmax(1).detach()
    expected = 0.0
    for columns, (classifier, _) in zip((x[:, :2], x[:, 2:]), method.inner):
        alone = nn.Linear(columns.shape[1], 4)
        nn.init.zeros_(alone.weight)
        nn.init.zeros_(alone.bias)
        fit_linear(alone, torch.optim.Adam(alone.parameters(), lr=0.1), columns, labels, 5)
        assert torch.allclose(classifier.weight, alone.weight) and torch.allclose(classifier.bias, alone.bias)
        expected += float(-(labels * alone(columns).log_softmax(1)).sum(1).mean())
    out = method.criterion(**method.inputs({'anchor': model.cluster_head[0](x)}, 0, None, context))
    assert float(out['error']) == pytest.approx(expected, rel=1e-5)


def test_heads_share_one_inner_classifier_that_fits_each_as_its_own():
    """Three heads (two with 4 clusters, one with 3): the shared classifier's columns of each head, and the logits the
    loss sees, are those of a classifier fitted to that head's labelling alone."""
    torch.manual_seed(2)
    cfg = EasyDict(criterion_kwargs={'entropy_weight': 1.0, 'inner_steps': 7, 'inner_lr': 0.05, 'warm_start': False})
    model = EasyDict(cluster_head=nn.ModuleList([nn.Linear(6, 4), nn.Linear(6, 3), nn.Linear(6, 4)]))
    x = torch.randn(32, 6)
    method = TURTLE(cfg)
    context = method.step_context(model, None, {'anchor': x}, 'cpu')
    (classifier, _), = method.inner
    columns = 0
    for h, head in enumerate(model.cluster_head):
        alone = nn.Linear(6, head.out_features)
        nn.init.zeros_(alone.weight)
        nn.init.zeros_(alone.bias)
        fit_linear(alone, torch.optim.Adam(alone.parameters(), lr=0.05), x, head(x).softmax(1).detach(), 7)
        rows = slice(columns, columns + head.out_features)
        assert torch.allclose(classifier.weight[rows], alone.weight, atol=1e-6)
        assert torch.allclose(classifier.bias[rows], alone.bias, atol=1e-6)
        assert torch.allclose(context[h][0], alone(x), atol=1e-5)
        columns += head.out_features


def test_heads_are_selected_by_hard_label_agreement_not_sharpness():
    """TURTLE's label-free selection is Cohen's kappa of the hard labels against the mined neighbours: a sharper copy
    of the same labelling scores the same, a labelling that splits neighbours scores worse."""
    from evaluation.selection import neighbor_agreement
    torch.manual_seed(0)
    labels = torch.arange(40) // 10  # four groups of ten; each sample's neighbours are the rest of its group
    neighbors = torch.stack([torch.tensor([j for j in range(40) if j // 10 == i // 10 and j != i][:5])
                             for i in range(40)])
    soft = (torch.nn.functional.one_hot(labels, 4) * 1.0 + torch.rand(40, 4)).softmax(1)
    sharp = (torch.nn.functional.one_hot(labels, 4) * 20.0).softmax(1)
    split = (torch.nn.functional.one_hot(torch.arange(40) % 4, 4) * 5.0).softmax(1)
    losses = TURTLE(EasyDict(criterion_kwargs=TURTLE.kwargs)).val_losses(torch.stack([soft, sharp, split]), neighbors)
    assert losses[0] == losses[1] == -neighbor_agreement(labels, neighbors) == -1.0
    assert losses[2] > 0.0  # neighbours in other clusters more often than chance
