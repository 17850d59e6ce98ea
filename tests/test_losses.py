import math

import pytest
import torch
import torch.nn.functional as F

from losses.simclr import SimCLRLoss


def reference_nt_xent(z, t, symmetric=True):
    """Straight from the definition, one anchor at a time."""
    b = z.shape[0]
    views = [z[i, v] for v in range(2) for i in range(b)]  # index v * b + i
    losses = []
    for a in range(2 * b if symmetric else b):
        i, v = a % b, a // b
        pos = (1 - v) * b + i
        denom = sum(math.exp(float(views[a] @ views[j]) / t) for j in range(2 * b) if j != a)
        losses.append(-math.log(math.exp(float(views[a] @ views[pos]) / t) / denom))
    return sum(losses) / len(losses)


@pytest.mark.parametrize('symmetric', [True, False])
def test_nt_xent_matches_reference(symmetric):
    torch.manual_seed(0)
    z = F.normalize(torch.randn(6, 2, 5, dtype=torch.float64), dim=-1)
    got = SimCLRLoss(temperature=0.3, symmetric=symmetric)(z)['total']
    assert got.item() == pytest.approx(reference_nt_xent(z, 0.3, symmetric), rel=1e-9)


def test_nt_xent_closed_form():
    # two images, each view identical to its twin and orthogonal to the other image:
    # s_pos = 1, the two negatives have s = 0  ->  loss = -log(e^{1/t} / (e^{1/t} + 2))
    t = 0.5
    z = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert SimCLRLoss(t, True)(z)['total'].item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_gradient_pulls_views_together():
    torch.manual_seed(1)
    raw = torch.randn(8, 2, 4, requires_grad=True)
    opt = torch.optim.SGD([raw], lr=0.5)
    first = None
    for _ in range(30):
        loss = SimCLRLoss(0.2, True)(F.normalize(raw, dim=-1))['total']
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_nt_xent_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r'\[b, 2, d\]'):
        SimCLRLoss(0.1, True)(torch.randn(4, 8))
