"""Mining the K nearest neighbours of every sample (inner product on L2-normalised features)."""
import numpy as np
import torch

try:
    import faiss
except ImportError:  # the chunked torch search below takes over
    faiss = None


def _search_faiss(features, k):
    x = np.ascontiguousarray(features, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    if hasattr(faiss, 'get_num_gpus') and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(x)
    _, idx = index.search(x, k)
    return idx.astype(np.int64)


@torch.no_grad()
def _search_torch(features, k, device=None, chunk=4096):
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    out = []
    for start in range(0, len(x), chunk):
        out.append((x[start:start + chunk] @ x.T).topk(k, dim=1).indices.cpu())
    return torch.cat(out).numpy().astype(np.int64)


def mine_neighbors(features, topk, backend='auto', device=None):
    """Indices [N, topk + 1] of each row's most similar rows, column 0 = the row itself.

    `backend`: 'faiss' (exact IndexFlatIP, on all GPUs when faiss has them), 'torch'
    (chunked matmul + top-k on `device`), or 'auto' (faiss when installed). Ties between
    near-duplicates can put another sample first; the row itself is moved to column 0 so
    that files written here always follow SCAN's layout.
    """
    features = features.float().cpu().numpy() if torch.is_tensor(features) else np.asarray(features, np.float32)
    n = len(features)
    k = min(topk + 1, n)
    use_faiss = backend == 'faiss' or (backend == 'auto' and faiss is not None)
    if backend == 'faiss' and faiss is None:
        raise RuntimeError('faiss is not installed; use backend torch')
    idx = _search_faiss(features, k) if use_faiss else _search_torch(features, k, device)
    rows = np.arange(n)[:, None]
    others = np.where(idx == rows, -1, idx)
    # per row: itself, then the others in order (dropping the last one when itself was missing)
    ordered = np.argsort(others == -1, axis=1, kind='stable')[:, :k - 1]
    return np.concatenate([rows, np.take_along_axis(others, ordered, axis=1)], axis=1)


def neighbor_accuracy(indices, targets):
    """Share of neighbours (column 0 excluded) with the anchor's label; None without labels."""
    targets = np.asarray(targets)
    if len(targets) == 0 or (targets < 0).any():
        return None
    return float((targets[indices[:, 1:]] == targets[:, None]).mean())
