"""Mining the K nearest neighbours of every sample (inner product on L2-normalised features)."""
import os

import numpy as np
import torch

from utils import distributed
from utils.errors import UserError, one_line

try:
    import faiss
except ImportError:  # the chunked torch search below takes over
    faiss = None


_GPU_RESOURCES = {}


def _on_gpus(index, device):
    """faiss-GPU builds: the exact index on this process's GPU under torchrun (each process searches its own slice of
    the base: _search_sharded), else sharded over every GPU the process sees (each GPU holds a slice of the base, the
    top-k lists merged by faiss). faiss-cpu: the index itself."""
    if not _faiss_gpus():
        return index
    if distributed.world() > 1 and device is not None and torch.device(device).type == 'cuda':
        gpu = torch.device(device).index or 0
        resources = _GPU_RESOURCES.setdefault(gpu, faiss.StandardGpuResources())  # kept alive with the index
        return faiss.index_cpu_to_gpu(resources, gpu, index)
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    return faiss.index_cpu_to_all_gpus(index, co=options)


# The approximate index (above exact_search_max images, or nn_maker.py --ivf): an inverted file whose cells are found
# through an HNSW graph of their centroids, each vector stored as a 4-bit product-quantisation code (faiss's SIMD
# "fast-scan" layout, d/4 sub-vectors), and the REFINE * k best codes of each query re-ranked by exact inner product
# on the full vectors. The cells probed hold about CANDIDATES vectors whatever the number of images, so the search
# costs the same per image at 100,000 images as at 1,000,000; with 4 sqrt(N) cells trained on 64 rows each, training
# grows as N too. Measured against exact search (with 10 k codes re-ranked): top-20 overlap 0.985 on 50,000 Lite0 +
# Lite2 CIFAR-10 features (2,560-d) and 0.987 on 200,000 synthetic 1,280-d vectors, where 8-bit codes and plain
# vectors reached the same overlap at 4 to 11 times the search time. What falls as N grows is the codes' ranking, not
# the cells probed: on a million synthetic 1,280-d vectors (2,000 queries) re-ranking 10 k codes gave 0.921 whether
# 8,192, 16,384 or 32,768 vectors were scanned; 20 k gave 0.968 for about a fifth more search time, 40 k 0.982 for
# twice it (benchmarks/scale.py: the mining stage's own figures).
CANDIDATES, REFINE, TRAIN_PER_CELL = 8192, 20, 64
CHUNK = 65536  # rows added to an index, or searched, at a time


def approximate_index(base, nlist):
    """A trained faiss index over `base` [N, d] float32 (approximate, inner product; the comment above), vectors not
    yet added."""
    n, d = base.shape
    nlist = max(1, min(nlist, n))
    m = max([m for m in range(1, d // 4 + 1) if d % m == 0], default=0)  # sub-vectors of 4 dimensions or a few more
    # under 64 dimensions, or a width with no divisor near d/4, plain vectors are scanned instead of codes
    codes = f'PQ{m}x4fs' if d >= 64 and m >= d // 16 else 'Flat'
    index = faiss.index_factory(d, f'IVF{nlist}_HNSW32,{codes}', faiss.METRIC_INNER_PRODUCT)
    rows = np.random.default_rng(0).choice(n, min(n, TRAIN_PER_CELL * nlist), replace=False)
    index.train(np.ascontiguousarray(base[np.sort(rows)], dtype=np.float32))
    faiss.extract_index_ivf(index).nprobe = min(nlist, max(1, -(-CANDIDATES * nlist // n)))
    if codes == 'Flat':
        return index
    refined = faiss.IndexRefineFlat(index)
    refined.k_factor = REFINE
    return refined


def _search_faiss(base, queries, k, nlist=None, device=None):
    index = approximate_index(base, nlist) if nlist else _on_gpus(faiss.IndexFlatIP(base.shape[1]), device)
    for start in range(0, len(base), CHUNK):  # a memory-mapped base is converted a chunk at a time
        index.add(np.ascontiguousarray(base[start:start + CHUNK], dtype=np.float32))
    sims, idx = [], []
    for start in range(0, len(queries), CHUNK):
        s, i = index.search(np.ascontiguousarray(queries[start:start + CHUNK], dtype=np.float32), k)
        sims.append(s)
        idx.append(i)
    return np.concatenate(sims), np.concatenate(idx).astype(np.int64)



@torch.no_grad()
def _search_torch(base, queries, k, device=None, chunk=4096):
    base = torch.as_tensor(base, dtype=torch.float32, device=device)
    queries = torch.as_tensor(queries, dtype=torch.float32, device=device)
    sims, idx = [], []
    for start in range(0, len(queries), chunk):
        top = (queries[start:start + chunk] @ base.T).topk(k, dim=1)
        sims.append(top.values.cpu())
        idx.append(top.indices.cpu())
    return torch.cat(sims).numpy(), torch.cat(idx).numpy().astype(np.int64)


def _as_numpy(x):
    """A numpy view of float16 or float32 vectors (a memory-mapped cache stays on disk), else a float32 copy."""
    if torch.is_tensor(x):
        x = (x if x.dtype in (torch.float16, torch.float32) else x.float()).detach().cpu().numpy()
    x = np.asarray(x)
    return x if x.dtype in (np.float16, np.float32) else x.astype(np.float32)


def search(base, queries, k, backend='auto', device=None, nlist=None):
    """For each query row, the k most similar base rows by inner product: (similarities, indices), [M, k].

    backend: 'faiss' (exact IndexFlatIP, on all GPUs when faiss has them), 'torch' (chunked matmul +
    top-k on `device`) or 'auto' (_exact_backend: faiss when installed, the GPU matmul beside a CUDA device that
    faiss cannot use). nlist: the approximate faiss index (approximate_index)
    with that many cells instead of exact search (for pools too large for exact search).
    """
    base, queries = _as_numpy(base), _as_numpy(queries)
    if distributed.world() > 1:
        return _search_sharded(base, queries, k, backend, device, nlist)
    return _search_local(base, queries, k, backend, device, nlist)


def _faiss_gpus():
    return faiss is not None and hasattr(faiss, 'get_num_gpus') and faiss.get_num_gpus() > 0


def _exact_backend(device):
    """backend 'auto' for exact search: faiss when installed, except beside a CUDA device that the installed faiss
    cannot use (pip's faiss-cpu): there the chunked matmul runs on the GPU, far faster than faiss on the CPU."""
    if faiss is None:
        return 'torch'
    on_cuda = device is not None and torch.device(device).type == 'cuda'
    return 'torch' if on_cuda and not _faiss_gpus() else 'faiss'


def _search_local(base, queries, k, backend, device, nlist):
    if backend == 'faiss' and faiss is None:
        raise RuntimeError('faiss is not installed; use backend torch')
    if backend == 'auto':  # the approximate index is faiss's alone
        backend = 'faiss' if nlist and faiss is not None else _exact_backend(device)
    if backend == 'faiss':
        return _search_faiss(base, queries, k, nlist, device)
    if nlist:
        raise RuntimeError('the approximate (IVF) index needs faiss')
    return _search_torch(base, queries, k, device)


def _search_sharded(base, queries, k, backend, device, nlist):
    """Under torchrun: each process searches its contiguous shard of `base` (so the base may exceed one
    device's memory), the per-shard top-k lists are gathered and merged. Every process gets the result."""
    rows = distributed.shard(len(base))
    sims, idx = _search_local(base[rows.start:rows.stop], queries, min(k, len(rows)), backend, device, nlist)
    pad = k - sims.shape[1]  # a shard shorter than k: pad with entries that never win
    sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
    idx = np.pad(idx + rows.start, ((0, 0), (0, pad)), constant_values=-1)
    where = device if device is not None and torch.device(device).type == 'cuda' else 'cpu'
    all_sims = distributed.gather_columns(torch.as_tensor(sims, device=where)).cpu().numpy()
    all_idx = distributed.gather_columns(torch.as_tensor(idx, device=where)).cpu().numpy()
    order = np.argsort(-all_sims, axis=1, kind='stable')[:, :k]  # shards in order: ties keep the lower index
    return np.take_along_axis(all_sims, order, 1), np.take_along_axis(all_idx, order, 1)


def mine_neighbors(features, topk, backend='auto', device=None, exact_max=None):
    """Indices [N, topk + 1] of each row's most similar rows, column 0 = the row itself, and a report
    {'search': 'exact' | 'ivf', ['nlist', 'recall']}.

    `backend`: 'faiss' (exact IndexFlatIP, on all GPUs when faiss has them), 'torch' (chunked matmul +
    top-k on `device`), or 'auto' (as in `search`). Above `exact_max` rows (and with faiss) an
    approximate IVF index with 4 sqrt(N) cells is used, and its recall of the exact top-k is measured on
    1,000 rows. Ties between near-duplicates can put another sample first; the row itself is moved to
    column 0 so that files written here always follow SCAN's layout.
    """
    n = len(features)
    k = min(topk + 1, n)
    report = {'search': 'exact'}
    nlist = None
    if exact_max is not None and n > exact_max and faiss is not None and backend != 'torch':
        nlist = int(4 * n ** 0.5)
    idx = search(features, features, k, backend, device, nlist)[1]
    if nlist:
        sample = np.random.default_rng(0).choice(n, min(n, 1000), replace=False)
        exact = search(features, np.asarray(features)[sample], k, 'torch', device)[1]
        hits = [len(set(a) & set(b)) for a, b in zip(idx[sample], exact)]
        report = {'search': 'ivf', 'nlist': nlist, 'recall': round(float(np.sum(hits) / exact.size), 4)}
    rows = np.arange(n)[:, None]
    others = np.where(idx == rows, -1, idx)
    # per row: itself, then the others in order (dropping the last one when itself was missing)
    ordered = np.argsort(others == -1, axis=1, kind='stable')[:, :k - 1]
    return np.concatenate([rows, np.take_along_axis(others, ordered, axis=1)], axis=1), report


def neighbor_accuracy(indices, targets):
    """Share of neighbours (column 0 excluded) with the anchor's label; None without labels."""
    targets = np.asarray(targets)
    if len(targets) == 0 or (targets < 0).any():
        return None
    return float((targets[indices[:, 1:]] == targets[:, None]).mean())


def neighbor_lists(indices, k, key='num_neighbors'):
    """[N, k] neighbours per row from a mined file [N, >= k+1], leaving the row itself out wherever it stands
    (column 0 is usually, not always, the sample itself). `key`: the setting of k as the user types it."""
    indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    n = len(indices)
    others = indices != torch.arange(n).unsqueeze(1)
    order = torch.argsort((~others).to(torch.int8), dim=1, stable=True)  # others first, in mined order
    lists = torch.gather(indices, 1, order)[:, :k]
    if (others.sum(1) < k).any():
        have = int(others.sum(1).min())
        raise UserError(f'the neighbours file has {have} neighbours per sample, fewer than the {k} asked for; '
                        f'set {key}={have} (or mine more in the pretext stage when it has more images)')
    return lists


def load_neighbors(path, n, k, what, key='num_neighbors'):
    """The mined neighbour lists [n, k] of a split (k None: every mined column) from simclr.py's file; `key` as
    in neighbor_lists."""
    if not os.path.isfile(path):
        raise UserError(f'{what} neighbours not found: {path}; run simclr.py with the same env file and config '
                        '(name, datasets, subsets) first')
    rerun = 'rerun simclr.py with this config (add --mine_only to keep its model)'
    try:
        indices = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f'{path} is damaged or not a neighbours file ({one_line(e)}); {rerun}') from None
    if not isinstance(indices, np.ndarray) or not np.issubdtype(indices.dtype, np.integer):
        raise UserError(f'{path} holds {getattr(indices, "dtype", type(indices).__name__)} values, not image '
                        f'indices; {rerun}')
    if indices.ndim != 2 or len(indices) != n:
        raise UserError(f'{path} has shape {indices.shape} but the {what} split has {n} images: it was mined for '
                        f'another dataset or subset; {rerun}')
    if indices.size and (indices.max() >= n or indices.min() < 0):
        raise UserError(f'{path} holds indices from {indices.min()} to {indices.max()}, outside the {n} images of '
                        f'the {what} split; {rerun}')
    return neighbor_lists(indices, k if k is not None else indices.shape[1] - 1, key)
