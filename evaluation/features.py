"""Features of a whole dataset in order, and the label-using reports built on them."""
import numpy as np
import torch
import torch.nn.functional as F

from evaluation.knn import weighted_knn_predict
from utils import distributed


@torch.no_grad()
def forward_in_order(model, loader, device, forward_pass, keep):
    """Run `model` in eval mode over an `eval_loader` (not shuffled). keep(output) -> a tuple of [b, ...] tensors
    on the CPU; returns those tuples concatenated over the dataset, in dataset order, and targets [N]. Under
    torchrun the loader holds this process's shard and the shards are gathered in order."""
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    for batch in loader:
        outputs.append(keep(model(batch['image'].to(device, non_blocking=True), forward_pass=forward_pass)))
        targets.append(batch['target'])
    model.train(was_training)
    parts = [torch.cat(column) for column in zip(*outputs)] + [torch.cat(targets)]
    if distributed.world() > 1:
        parts = [distributed.gather_uneven(p.to(device)).cpu() for p in parts]
    return parts[:-1], parts[-1].numpy()


def extract_features(model, loader, device, forward_pass='default', normalize=True):
    """Features [N, D] (L2-normalised unless normalize=False) on the CPU, in dataset order, and targets [N]."""
    (feats,), targets = forward_in_order(model, loader, device, forward_pass, lambda out: (
        (F.normalize(out, dim=1) if normalize else out).float().cpu(),))
    return feats, targets


def normalise_spaces(features, dims=None):
    """Features [N, D] L2-normalised; with several representation spaces side by side (dims: their widths, as
    models.SideBySide concatenates them) each space's columns first, so every space weighs the same in a cosine
    similarity (the mean of the spaces' cosines) whatever the lengths of its vectors."""
    if dims and len(dims) > 1:
        features = torch.cat([F.normalize(part, dim=1) for part in features.split(list(dims), 1)], 1)
    return F.normalize(features, dim=1)


def pretext_features(model, loader, cfg, device):
    """The features the pretext stage mines and reports kNN on: the L2-normalised projection, or the backbone's
    with `mining_features: backbone` (backbones side by side: each space normalised first, normalise_spaces)."""
    dims = getattr(model.backbone, 'dims', None)
    if cfg.get('mining_features') == 'backbone' and dims:
        features, targets = extract_features(model, loader, device, 'backbone', normalize=False)
        return normalise_spaces(features, dims), targets
    return extract_features(model, loader, device, 'backbone' if cfg.get('mining_features') == 'backbone' else 'default')


def knn_accuracy(train_feats, train_targets, val_feats, val_targets, k, temperature, exclude_self=False,
                 device=None):
    """Weighted-kNN accuracy of the val split against the train features (searched on `device`, by default where
    they are); None without labels."""
    if len(train_targets) == 0 or (train_targets < 0).any() or (val_targets < 0).any():
        return None
    num_classes = int(max(train_targets.max(), val_targets.max())) + 1
    bank = train_feats if device is None else train_feats.to(device)
    pred = weighted_knn_predict(val_feats, bank, torch.as_tensor(train_targets), num_classes, k,
                                temperature, exclude_self=exclude_self)
    return float((pred.numpy() == np.asarray(val_targets)).mean())


def predict(model, loader, device, features=True):
    """One in-order pass (eval mode): backbone features [N, D] (None without `features`: a million 1,280-d vectors
    are 5 GB) and per-head probabilities [H, N, C], on the CPU."""
    def keep(out):
        probs = torch.stack([o.float().softmax(1) for o in out['output']], dim=1).cpu()
        return (out['features'].float().cpu(), probs) if features else (probs,)
    parts, targets = forward_in_order(model, loader, device, 'return_all', keep)
    return {'features': parts[0] if features else None, 'probs': parts[-1].transpose(0, 1).contiguous(),
            'targets': targets}
