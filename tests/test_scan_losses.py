import math

import pytest
import torch

from losses.scan import NNMLoss, SCANLoss, cluster_contrast


def ref_entropy(p):
    return -sum(float(x) * math.log(max(float(x), 1e-8)) for x in p)


def ref_scan(anchors, neighbors, w):
    p, q = anchors.softmax(1), neighbors.softmax(1)
    b = len(p)
    cons = -sum(math.log(float(p[i] @ q[i])) for i in range(b)) / b
    return cons - w * ref_entropy(p.mean(0)), cons


def ref_contrast(a, b):
    """cross-entropy of column-normalised cluster similarities, one cluster at a time."""
    c = a.shape[1]
    an = [a[:, i] / a[:, i].norm() for i in range(c)]
    bn = [b[:, j] / b[:, j].norm() for j in range(c)]
    total = 0.0
    for i in range(c):
        logits = [float(an[i] @ bn[j]) for j in range(c)]
        total += -logits[i] + math.log(sum(math.exp(v) for v in logits))
    return total / c


def ref_nnm(anchors, neighbors, second, features, glob, w):
    p_a, p_n, p_s = anchors.softmax(1), neighbors.softmax(1), second.softmax(1)
    b = len(p_a)
    nearest = []
    for i in range(b):
        dists = [float((features[i] - features[j]).norm()) if j != i else math.inf for j in range(b)]
        nearest.append(min(range(b), key=lambda j: dists[j]))
    a = torch.cat([p_a, p_s])
    bb = torch.cat([p_n, p_a[nearest]])
    cons = -sum(math.log(float(a[i] @ bb[i])) for i in range(2 * b)) / (2 * b)
    total = cons + ref_contrast(a, bb) - w * ref_entropy(a.mean(0))
    if glob is not None:
        s = torch.cat([a, bb])
        g4 = torch.cat([glob] * 4)
        total += -sum(math.log(float(s[i] @ g4[i])) for i in range(4 * b)) / (4 * b) + ref_contrast(s, g4)
    return total


def test_scan_loss_matches_reference():
    torch.manual_seed(0)
    a, n = torch.randn(9, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
    out = SCANLoss(entropy_weight=5.0)(a, n)
    total, cons = ref_scan(a, n, 5.0)
    assert out['total'].item() == pytest.approx(total, rel=1e-9)
    assert out['consistency'].item() == pytest.approx(cons, rel=1e-9)


def test_scan_closed_forms():
    # identical one-hot pairs: consistency 0; balanced clusters: entropy of the mean = log C
    c = 5
    logits = torch.eye(c) * 1e4
    out = SCANLoss(2.0)(logits, logits.clone())
    assert out['consistency'].item() == pytest.approx(0.0, abs=1e-6)
    assert out['entropy'].item() == pytest.approx(math.log(c), rel=1e-6)
    assert out['total'].item() == pytest.approx(-2.0 * math.log(c), rel=1e-6)
    uniform = SCANLoss(1.0)(torch.zeros(3, c), torch.zeros(3, c))
    assert uniform['entropy'].item() == pytest.approx(math.log(c))
    assert uniform['consistency'].item() == pytest.approx(math.log(c))  # <u, u> = 1/C


def test_cluster_contrast_of_an_identity_assignment():
    # each column matches only itself with cosine 1, others 0: CE = log(e + C - 1) - 1
    c = 6
    a = torch.eye(c).repeat(3, 1)
    assert cluster_contrast(a, a.clone()).item() == pytest.approx(math.log(math.e + c - 1) - 1, rel=1e-6)


@pytest.mark.parametrize('with_global', [False, True])
def test_nnm_loss_matches_reference(with_global):
    torch.manual_seed(1)
    b, c = 7, 4
    anchors, neighbors, second = (torch.randn(b, c, dtype=torch.float64) for _ in range(3))
    features = torch.randn(b, 5, dtype=torch.float64)
    glob = torch.randn(b, c, dtype=torch.float64).softmax(1) if with_global else None
    out = NNMLoss(entropy_weight=5.0)(anchors, neighbors, second, features, glob)
    assert out['total'].item() == pytest.approx(ref_nnm(anchors, neighbors, second, features, glob, 5.0), rel=1e-9)
    assert (out['global'].item() > 0) == with_global


def test_losses_train_a_head_towards_agreement():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    neighbors = x + 0.05 * torch.randn(64, 8)
    head = torch.nn.Linear(8, 3)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(100):
        out = SCANLoss(1.0)(head(x), head(neighbors))
        opt.zero_grad()
        out['total'].backward()
        opt.step()
    assert out['consistency'].item() < 0.2 and out['entropy'].item() > 0.9


def test_temi_loss_against_its_formula():
    """L = -mean_i w_i (pmi(s(a_i), t(n_i)) + pmi(s(n_i), t(a_i))) / 2, pmi(s, t) = log sum_k (s_k t_k)^beta / prior_k,
    computed here in float64 from the definition, one sample at a time."""
    from losses.temi import TEMILoss
    torch.manual_seed(0)
    a, n = torch.randn(5, 4), torch.randn(5, 4)
    ta, tn = torch.randn(5, 4).softmax(1), torch.randn(5, 4).softmax(1)
    prior, weight = torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.rand(5)
    got = TEMILoss(beta=0.6, student_temperature=0.5)(a, n, ta, tn, prior, weight)
    expected = 0.0
    for i in range(5):
        sa, sn = (a[i].double() / 0.5).softmax(0), (n[i].double() / 0.5).softmax(0)
        pmi_an = math.log(sum((sa[k] * tn[i, k].double()) ** 0.6 / prior[k].double() for k in range(4)))
        pmi_na = math.log(sum((sn[k] * ta[i, k].double()) ** 0.6 / prior[k].double() for k in range(4)))
        expected -= float(weight[i]) * (pmi_an + pmi_na) / 2 / 5
    assert float(got['total']) == pytest.approx(expected, rel=1e-5)
