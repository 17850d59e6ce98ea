"""What the clustering stages share: in-order predictions, label-free head selection, NNM's global pass."""
import numpy as np
import torch

from data import get_dataset
from data.transforms import val_transform
from losses.scan import EPS, entropy
from utils.errors import UserError
from utils.features import forward_in_order


def predict(model, loader, device):
    """One in-order pass (eval mode): backbone features [N, D] and per-head probabilities [H, N, C], on the CPU."""
    (feats, probs), targets = forward_in_order(model, loader, device, 'return_all', lambda out: (
        out['features'].float().cpu(), torch.stack([o.float().softmax(1) for o in out['output']], dim=1).cpu()))
    return {'features': feats, 'probs': probs.transpose(0, 1).contiguous(), 'targets': targets}


def neighbor_lists(indices, k):
    """[N, k] neighbours per row from a mined file [N, >= k+1], leaving the row itself out wherever it stands
    (column 0 is usually, not always, the sample itself)."""
    indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    n = len(indices)
    others = indices != torch.arange(n).unsqueeze(1)
    order = torch.argsort((~others).to(torch.int8), dim=1, stable=True)  # others first, in mined order
    lists = torch.gather(indices, 1, order)[:, :k]
    if (others.sum(1) < k).any():
        raise UserError(f'the neighbours file has fewer than {k} neighbours per sample; mine more (num_neighbors)')
    return lists


def head_losses(probs, neighbors, entropy_weight=1.0):
    """Each head's SCAN loss on mined pairs, pair-wise: memory O(N K C), never N x N.

    probs [H, N, C], neighbors [N, K] (without the samples themselves). Returns [H].
    """
    anchors = probs.unsqueeze(2)  # [H, N, 1, C]
    partners = probs[:, neighbors]  # [H, N, K, C]
    similarity = (anchors * partners).sum(-1)  # [H, N, K]
    consistency = -torch.log(similarity.clamp_min(EPS)).mean((1, 2))
    return consistency - entropy_weight * entropy(probs.mean(1))


@torch.no_grad()
def nearest_other(features, chunk=2048):
    """Index of each row's nearest other row by L2, in chunks (memory O(chunk N)). features [N, D]."""
    out = []
    for start in range(0, len(features), chunk):
        d = torch.cdist(features[start:start + chunk], features)
        rows = torch.arange(len(d))
        d[rows, rows + start] = float('inf')
        out.append(d.argmin(1))
    return torch.cat(out)


def global_neighbor_probs(prediction):
    """NNM's dataset-level neighbours from an in-order pass: G[h, i] = probabilities of i's nearest other
    sample (backbone features, L2) under head h. Returns [H, N, C]."""
    return prediction['probs'][:, nearest_other(prediction['features'])]


def check_classes(cfg, dataset):
    if dataset.has_labels and dataset.classes:
        n = len(dataset.classes)
        if cfg.num_classes < n or (cfg.num_classes > n and not cfg.overclustering):
            raise UserError(f'num_classes is {cfg.num_classes} but {cfg.train_db_name} has {n} classes; '
                            f'set num_classes={n} (or overclustering=true for more clusters than classes)')


def clustering_data(cfg):
    """A clustering or self-labelling run's data: (the evaluation transform, the train set without a transform
    (the training batches add theirs), the val set under the evaluation transform); num_classes checked."""
    evaluation = val_transform(cfg.transformation_kwargs)
    train_set = get_dataset(cfg, 'train')
    val_set = get_dataset(cfg, 'val', evaluation)
    check_classes(cfg, train_set)
    return evaluation, train_set, val_set


def single_head_state(state, head):
    """A clustering state_dict with H heads -> backbone + that head as cluster_head.0 (self-labelling, eval)."""
    prefix = f'cluster_head.{head}.'
    if not any(k.startswith(prefix) for k in state):
        heads = sorted({k.split('.')[1] for k in state if k.startswith('cluster_head.')})
        raise UserError(f'the model has no head {head} (heads: {", ".join(heads) or "none"})')
    out = {k: v for k, v in state.items() if k.startswith('backbone.')}
    out.update({'cluster_head.0.' + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return out
