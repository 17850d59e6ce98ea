import numpy as np
import pytest
import torch

from data.base import ArrayDataset
from evaluation.features import predict
from evaluation.selection import head_losses, neighbor_agreement
from methods.nnm import global_neighbor_probs, nearest_other
from neighbors.search import neighbor_lists


def dense_head_losses(probs, neighbors):
    """The original SCAN evaluation: an N x N similarity matrix, then the neighbour columns."""
    out = []
    for p in probs:
        sim = p @ p.T
        cons = -torch.log(torch.gather(sim, 1, neighbors).clamp_min(1e-8)).mean()
        mean = p.mean(0)
        out.append(cons + (mean * torch.log(mean.clamp_min(1e-8))).sum())
    return torch.stack(out)


def test_pairwise_head_losses_equal_the_dense_version():
    torch.manual_seed(0)
    probs = torch.randn(3, 50, 4, dtype=torch.float64).softmax(-1)
    neighbors = torch.randint(0, 50, (50, 5))
    assert torch.allclose(head_losses(probs, neighbors), dense_head_losses(probs, neighbors))


def test_selection_picks_the_planted_head_without_labels():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 4, 200)
    # neighbours share the group; head 1 follows the groups, heads 0 and 2 are noise
    neighbors = torch.tensor(np.stack([rng.choice(np.flatnonzero(groups == g), 5) for g in groups]))
    good = torch.nn.functional.one_hot(torch.tensor(groups), 4).double() * 0.9 + 0.025
    noise = torch.tensor(rng.dirichlet(np.ones(4), (2, 200)))
    probs = torch.stack([noise[0], good, noise[1]])
    assert int(head_losses(probs, neighbors).argmin()) == 1


def test_neighbor_lists_drop_the_sample_wherever_it_stands():
    mined = np.array([[0, 1, 2], [0, 1, 2], [1, 0, 2]])  # row 1 has itself second, row 2 lacks itself at 0
    lists = neighbor_lists(mined, 2)
    assert lists.tolist() == [[1, 2], [0, 2], [1, 0]]


class TinyModel(torch.nn.Module):
    """Backbone = flatten; two heads; deterministic, so a permuted dataset must give permuted outputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(16, 3) for _ in range(2))

    def forward(self, x, forward_pass='default'):
        f = x.flatten(1)
        return {'features': f, 'output': [h(f) for h in self.heads]}


def test_global_pass_follows_dataset_order():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (40, 4, 4, 1), dtype=np.uint8)
    perm = rng.permutation(40)
    to_tensor = lambda img: torch.from_numpy(np.asarray(img, dtype=np.float32))[None] / 255  # noqa: E731
    model = TinyModel()
    results = []
    for order in (np.arange(40), perm):
        ds = ArrayDataset(data[order], np.zeros(40), ['a'], transform=to_tensor)
        loader = torch.utils.data.DataLoader(ds, batch_size=7, shuffle=False)
        results.append(global_neighbor_probs(predict(model, loader, 'cpu')))
    plain, permuted = results
    assert permuted.shape == (2, 40, 3)
    assert torch.allclose(permuted, plain[:, perm])
    nn = nearest_other(torch.tensor(data.reshape(40, -1), dtype=torch.float32), chunk=9)
    assert torch.allclose(plain, predict(model, torch.utils.data.DataLoader(
        ArrayDataset(data, np.zeros(40), ['a'], transform=to_tensor), batch_size=40), 'cpu')['probs'][:, nn])


def test_neighbor_agreement_is_kappa_against_chance():
    labels = torch.tensor([0, 0, 1, 1])
    assert neighbor_agreement(labels, torch.tensor([[1], [0], [3], [2]])) == 1.0  # every pair agrees
    assert neighbor_agreement(labels, torch.tensor([[2], [3], [0], [1]])) == -1.0  # none does; chance is 1/2
    assert neighbor_agreement(torch.zeros(4, dtype=torch.long), torch.tensor([[1], [0], [3], [2]])) == 0.0
    labels = torch.tensor([0, 0, 0, 1])  # 5 of the 8 pairs agree (all but 0-3, 3-2, 3-0)
    neighbors = torch.tensor([[1, 3], [0, 2], [0, 1], [2, 0]])
    p, q = torch.tensor([3 / 4, 1 / 4]), torch.tensor([7 / 8, 1 / 8])  # anchors' and partners' cluster shares
    chance = float((p * q).sum())
    assert neighbor_agreement(labels, neighbors) == pytest.approx((5 / 8 - chance) / (1 - chance))
