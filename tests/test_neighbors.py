import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.knn import weighted_knn_predict
from neighbors.search import mine_neighbors, neighbor_accuracy


def brute_force(x, k):
    sims = x @ x.T
    return np.argsort(-sims, axis=1, kind='stable')[:, :k + 1]


def test_faiss_and_torch_return_the_same_neighbors():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(700, 32), dim=1)
    a = mine_neighbors(x, 10, backend='faiss')[0]
    b = mine_neighbors(x, 10, backend='torch')[0]
    assert a.shape == (700, 11) and np.array_equal(a, b)
    assert np.array_equal(a, brute_force(x.numpy(), 10))
    assert np.array_equal(mine_neighbors(x, 10, backend='torch', device='cpu')[0][:, 0], np.arange(700))


def test_self_is_column_zero_even_with_duplicates():
    x = F.normalize(torch.randn(50, 8), dim=1)
    x[7] = x[3]  # exact duplicates tie
    for backend in ('faiss', 'torch'):
        idx = mine_neighbors(x, 4, backend=backend)[0]
        assert idx[3, 0] == 3 and idx[7, 0] == 7 and idx[3, 1] == 7 and idx[7, 1] == 3
        assert all(len(set(row)) == 5 for row in idx)


def test_neighbor_accuracy():
    idx = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1]])
    assert neighbor_accuracy(idx, [0, 0, 1]) == pytest.approx(2 / 6)
    assert neighbor_accuracy(idx, [0, -1, 1]) is None


def brute_knn(query, bank, labels, num_classes, k, t, exclude_self):
    preds = []
    for i, q in enumerate(query):
        sims = bank @ q
        if exclude_self:
            sims[i] = -np.inf
        top = np.argsort(-sims)[:k]
        votes = np.zeros(num_classes)
        for j in top:
            votes[labels[j]] += np.exp(sims[j] / t)
        preds.append(votes.argmax())
    return np.array(preds)


@pytest.mark.parametrize('exclude_self', [False, True])
def test_weighted_knn_against_brute_force(exclude_self):
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(300, 16, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 4, (300,))
    query = bank if exclude_self else F.normalize(torch.randn(120, 16, dtype=torch.float64), dim=1)
    got = weighted_knn_predict(query, bank, labels, 4, k=15, temperature=0.1, exclude_self=exclude_self, chunk=37)
    want = brute_knn(query.numpy(), bank.numpy(), labels.numpy(), 4, 15, 0.1, exclude_self)
    assert np.array_equal(got.numpy(), want)


def test_ivf_above_exact_max_reports_its_recall_against_exact_search():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(20, 16, generator=g), dim=1)
    x = F.normalize(centres[torch.arange(3000) % 20] + 0.3 * torch.randn(3000, 16, generator=g), dim=1)
    exact, report = mine_neighbors(x, 10, backend='faiss', exact_max=5000)
    assert report == {'search': 'exact'}
    approx, report = mine_neighbors(x, 10, backend='faiss', exact_max=1000)
    assert report['search'] == 'ivf' and report['nlist'] == int(4 * 3000 ** 0.5)
    sample = np.random.default_rng(0).choice(3000, 1000, replace=False)
    recall = np.mean([len(set(a) & set(b)) / 11 for a, b in zip(approx[sample], exact[sample])])
    assert report['recall'] == pytest.approx(recall, abs=1e-3) and 0.3 < recall <= 1
    assert np.array_equal(approx[:, 0], np.arange(3000))


def test_too_few_mined_neighbors_says_what_to_set():
    from neighbors.search import neighbor_lists
    from utils.errors import UserError
    with pytest.raises(UserError, match='has 1 neighbours per sample, fewer than the 3 asked for; set num_neighbors=1'):
        neighbor_lists(np.array([[0, 1], [1, 0]]), 3)


TRUNCATED = b'\x93NUMPY\x01\x00v\x00{"descr": "<i8", "fortran_order": False, "shape": (4, 3), }'  # header only


@pytest.mark.parametrize('content, expected', [
    (TRUNCATED, 'is damaged or not a neighbours file'),
    (b'random bytes, not an array', 'is damaged or not a neighbours file'),
    (np.zeros((4, 3), dtype=np.float32), 'holds float32 values, not image indices'),
    (np.zeros((5, 3), dtype=np.int64), 'has shape (5, 3) but the train split has 4 images'),
    (np.array([[0, 1, 4]] * 4), 'holds indices from 0 to 4, outside the 4 images of the train split'),
    (np.array([[0, -1, 2]] * 4), 'holds indices from -1 to 2, outside the 4 images of the train split'),
])
def test_bad_neighbor_files_are_one_line_errors(tmp_path, content, expected):
    from neighbors.search import load_neighbors
    from utils.errors import UserError
    path = tmp_path / 'topk-train-neighbors.npy'
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    with pytest.raises(UserError) as info:
        load_neighbors(str(path), 4, 2, 'train')
    assert expected in str(info.value) and '\n' not in str(info.value) and 'rerun simclr.py' in str(info.value)


def test_faiss_gpu_index_is_sharded_over_the_gpus_or_on_the_process_own(monkeypatch):
    """With faiss-GPU (faked here: this machine has faiss-cpu): one process shards the exact index over every GPU it
    sees; under torchrun each process puts its slice of the base on its own GPU (neighbors.search._on_gpus)."""
    import faiss
    from neighbors import search as nb
    calls = []

    class Options:
        shard = False
    monkeypatch.setattr(faiss, 'get_num_gpus', lambda: 2, raising=False)
    monkeypatch.setattr(faiss, 'GpuMultipleClonerOptions', Options, raising=False)
    monkeypatch.setattr(faiss, 'StandardGpuResources', object, raising=False)
    monkeypatch.setattr(faiss, 'index_cpu_to_all_gpus', lambda index, co: calls.append(('all', co.shard)) or index,
                        raising=False)
    monkeypatch.setattr(faiss, 'index_cpu_to_gpu', lambda res, gpu, index: calls.append(('one', gpu)) or index,
                        raising=False)
    flat = faiss.IndexFlatIP(4)
    assert nb._on_gpus(flat, 'cuda') is flat and calls == [('all', True)]
    monkeypatch.setattr(nb.distributed, 'world', lambda: 2)
    nb._on_gpus(flat, torch.device('cuda', 1))
    assert calls[-1] == ('one', 1)


def test_auto_search_runs_on_the_gpu_when_faiss_cannot(monkeypatch):
    """backend 'auto' beside a CUDA device: pip's faiss-cpu would search on the CPU, so the torch matmul runs on the GPU
    instead; faiss-GPU keeps faiss; on the CPU faiss stays (faked GPUs: this machine has faiss-cpu and no GPU)."""
    import faiss
    from neighbors import search as nb
    searched = []
    monkeypatch.setattr(nb, '_search_torch', lambda base, queries, k, device: searched.append(('torch', device)))
    monkeypatch.setattr(nb, '_search_faiss', lambda base, queries, k, nlist, device: searched.append(('faiss', nlist)))
    x = np.eye(4, dtype=np.float32)
    nb.search(x, x, 2, device='cuda')
    nb.search(x, x, 2, device='cpu')
    nb.search(x, x, 2, device='cuda', nlist=3)  # the approximate index is faiss's alone
    monkeypatch.setattr(faiss, 'get_num_gpus', lambda: 1, raising=False)
    nb.search(x, x, 2, device='cuda')
    assert searched == [('torch', 'cuda'), ('faiss', None), ('faiss', 3), ('faiss', None)]
