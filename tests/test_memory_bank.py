"""The memory bank and the memory-bank losses against hand-written references."""
import math

import pytest
import torch
import torch.nn.functional as F

from losses.memory import ANDLoss, InstDiscLoss, SNCALoss
from methods.memory import MemoryBank, select_anchors


def bank_of(features):
    bank = MemoryBank(len(features), features.shape[1])
    bank.features = F.normalize(features, dim=1)
    return bank


def test_momentum_update():
    bank = MemoryBank(6, 4, momentum=0.5, generator=torch.Generator().manual_seed(0))
    before = bank.features.clone()
    f = F.normalize(torch.randn(2, 4), dim=1)
    bank.update(torch.tensor([1, 4]), f)
    assert torch.allclose(bank.features[[1, 4]], F.normalize(0.5 * before[[1, 4]] + 0.5 * f, dim=1))
    assert torch.equal(bank.features[[0, 2, 3, 5]], before[[0, 2, 3, 5]])
    assert torch.allclose(bank.features.norm(dim=1), torch.ones(6))


def test_chunked_entropy_and_nearest_equal_the_direct_versions():
    torch.manual_seed(0)
    bank = bank_of(torch.randn(50, 8, dtype=torch.float64))
    logits = bank.features @ bank.features.T / 0.1
    direct = torch.stack([-(lambda p: (p * p.log()).sum())(torch.cat([row[:i], row[i + 1:]]).softmax(0))
                          for i, row in enumerate(logits)])  # each row without itself
    assert torch.allclose(bank.entropy(0.1, chunk=7), direct)
    sims = bank.features @ bank.features.T
    sims.fill_diagonal_(-math.inf)
    idx = torch.arange(50)
    assert torch.equal(bank.nearest(idx, chunk=9), sims.argmax(1))


def test_and_anchor_selection_on_a_planted_bank():
    # rows 0-9: tight pairs (a sharp softmax, low entropy); rows 10-39: spread out (high entropy)
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(5, 16), dim=1)
    tight = torch.cat([centres + 0.01 * torch.randn(5, 16), centres + 0.01 * torch.randn(5, 16)])
    bank = bank_of(torch.cat([tight, torch.randn(30, 16)]))
    entropy = bank.entropy(0.05)
    assert entropy[:10].max() < entropy[10:].min()
    for r, expected in ((0, 0), (1, 10), (2, 20), (4, 40)):
        neighbors = select_anchors(bank, r, 4, 0.05)
        assert int((neighbors >= 0).sum()) == expected  # the share follows the round
    neighbors = select_anchors(bank, 1, 4, 0.05)
    assert torch.equal(torch.nonzero(neighbors >= 0).flatten(), torch.arange(10))  # lowest entropy first
    assert torch.equal(neighbors[:10], torch.tensor([5, 6, 7, 8, 9, 0, 1, 2, 3, 4]))  # each with its twin


def features_and_memory(b, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = F.normalize(torch.randn(b, 6, generator=g, dtype=torch.float64), dim=1)
    memory = F.normalize(torch.randn(n, 6, generator=g, dtype=torch.float64), dim=1)
    return f, memory, f @ memory.T / 0.1


def test_instdisc_loss():
    f, memory, logits = features_and_memory(4, 10)
    index = torch.tensor([3, 1, 7, 0])
    expected = sum(-logits[i].log_softmax(0)[index[i]] for i in range(4)) / 4
    assert InstDiscLoss(0.1, 0)(f, memory, index)['total'].item() == pytest.approx(expected.item(), rel=1e-9)


def test_and_loss_reference():
    f, memory, logits = features_and_memory(5, 12)
    index = torch.tensor([0, 3, 5, 7, 11])
    neighbors = torch.tensor([-1, 4, -1, 2, 10])
    p = logits.softmax(1)
    terms = [p[i, index[i]] + (p[i, neighbors[i]] if neighbors[i] >= 0 else 0) for i in range(5)]
    expected = -sum(math.log(float(t)) for t in terms) / 5
    out = ANDLoss(0.1)(f, memory, index, neighbors)
    assert out['total'].item() == pytest.approx(expected, rel=1e-9) and out['anchor_share'].item() == pytest.approx(0.6)


def test_snca_loss_reference():
    f, memory, logits = features_and_memory(4, 9)
    index = torch.tensor([0, 2, 5, 8])
    memory_labels = torch.tensor([0, 1, 0, 2, 1, 1, 0, 2, 2])
    labels = memory_labels[index]
    expected = 0.0
    for i in range(4):
        num = sum(math.exp(logits[i, j]) for j in range(9) if j != index[i] and memory_labels[j] == labels[i])
        den = sum(math.exp(logits[i, j]) for j in range(9) if j != index[i])
        expected -= math.log(num / den) / 4
    assert SNCALoss(0.1)(f, memory, index, labels, memory_labels)['total'].item() == pytest.approx(expected, rel=1e-9)


def test_instdisc_nce_matches_reference():
    f, memory, logits = features_and_memory(3, 50)
    index = torch.tensor([4, 17, 30])
    noise = torch.tensor([[1, 2, 3, 4], [0, 9, 49, 17], [30, 31, 5, 6]])
    loss = InstDiscLoss(0.1, nce_k=4)
    out = loss(f, memory, index, noise)['total'].item()
    scores = [[float(logits[i, j]) for j in [int(index[i])] + noise[i].tolist()] for i in range(3)]
    z = 50 * sum(math.exp(s) for row in scores for s in row) / 15  # estimated on this first batch
    pn = 4 / 50
    h = lambda s: (math.exp(s) / z) / (math.exp(s) / z + pn)  # noqa: E731
    expected = -sum(math.log(h(row[0])) + sum(math.log(1 - h(s)) for s in row[1:]) for row in scores) / 3
    assert out == pytest.approx(expected, rel=1e-9)
    assert float(loss.log_z) == pytest.approx(math.log(z))
    loss(f, memory, index, noise[:, [1, 0, 3, 2]])
    assert float(loss.log_z) == pytest.approx(math.log(z))  # Z stays fixed after the first batch
