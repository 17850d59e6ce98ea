"""Weighted k-nearest-neighbour classification on L2-normalised features."""
import torch


@torch.no_grad()
def weighted_knn_predict(query, bank, bank_labels, num_classes, k=100, temperature=0.1, exclude_self=False,
                         chunk=4096):
    """Predict labels of `query` [M, d] by votes of its k most similar `bank` rows [N, d].

    A neighbour with cosine similarity s votes for its label with weight exp(s / t).
    `exclude_self`: query and bank are the same set (M == N); each sample leaves itself out.
    Works in chunks of queries, so memory is O(chunk * N), never M x N. Returns int64 [M].
    """
    k = min(k, len(bank) - int(exclude_self))
    bank_labels = bank_labels.to(bank.device)
    preds = []
    for start in range(0, len(query), chunk):
        q = query[start:start + chunk].to(bank.device)
        sims = q @ bank.T  # [m, N]
        if exclude_self:
            rows = torch.arange(len(q), device=bank.device)
            sims[rows, rows + start] = float('-inf')
        top_sims, top_idx = sims.topk(k, dim=1)
        weights = (top_sims / temperature).exp()
        votes = torch.zeros(len(q), num_classes, device=bank.device, dtype=weights.dtype)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        preds.append(votes.argmax(1).cpu())
    return torch.cat(preds)
