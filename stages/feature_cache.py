"""Clustering heads trained on cached features (`cache_features: true`; in the clustering stage with
`update_cluster_head_only: true`, in the self-label stage the trunk is then frozen).

With the trunk frozen, what the heads see of an image (its evaluation view, through the backbone and, with
`heads_on: projection`, the projection head) never changes, so the clustering stage computes it once for the train
and val splits and then trains, evaluates and initialises its heads on those vectors: no image forward per step.
Pairs are drawn as on images (an anchor and one of its mined neighbours, uniformly); without augmentation the
second view of NNM is the anchor's own vector.
"""
import numpy as np
import torch
import torch.nn as nn

from data.base import ImageDataset
from data.loaders import eval_loader, local
from utils.errors import UserError
from utils.features import predict


class HeadsOnFeatures(nn.Module):
    """The clustering model's heads applied to cached features: model(x, forward_pass) with x [b, D] the vectors the
    heads see, in the clustering model's output forms. It shares the model's parameters (save `model`)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, forward_pass='default'):
        if forward_pass == 'backbone':
            return x
        output = [head(x) for head in self.model.cluster_head]
        return {'features': x, 'output': output} if forward_pass == 'return_all' else output

    def init_head(self, h, centroids, scale):
        self.model.init_head(h, centroids, scale)


class FeatureSet(ImageDataset):
    """A dataset's cached features: items {'image': its vector [D], 'index', 'target'}, with its labels and classes."""

    def __init__(self, features, dataset):
        super().__init__()
        self.features = features
        self.targets, self.classes = dataset.targets, dataset.classes

    def __getitem__(self, i):
        return {'image': self.features[i], 'index': i, 'target': int(self.targets[i])}


class FeatureBatches:
    """Cached features in shuffled batches of this process's share, as data/loaders.DeviceBatches for images;
    subclasses turn a batch of indices into the stage's batch dict (batch(index))."""

    def __init__(self, features, batch_size, device):
        self.features = features.to(device)
        self.batch_size = min(batch_size, len(features))

    def __len__(self):
        return len(self.features) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.features))
        for step in range(len(self)):
            yield self.batch(order[step * self.batch_size:(step + 1) * self.batch_size])


class FeaturePairs(FeatureBatches):
    """Clustering batches: {'anchor', 'neighbor' (one of its mined neighbours, uniformly), ['second'], 'index'}."""

    def __init__(self, features, neighbors, batch_size, device, second=False):
        super().__init__(features, batch_size, device)
        self.neighbors = torch.as_tensor(np.asarray(neighbors))
        self.second = second

    def batch(self, index):
        pick = torch.randint(self.neighbors.shape[1], (len(index),))
        anchors = local(index)
        out = {'anchor': self.features[anchors], 'neighbor': self.features[local(self.neighbors[index, pick])],
               'index': anchors}
        if self.second:
            out['second'] = out['anchor']
        return out


class FeatureViews(FeatureBatches):
    """Self-labelling batches: {'image', 'image_augmented' (the same vectors: no augmentation on features),
    'index'}."""

    def batch(self, index):
        index = local(index)
        return {'image': self.features[index], 'image_augmented': self.features[index], 'index': index}


def check_cache(cfg, method):
    """The clustering stage's cache_features: only under a frozen trunk, and for methods that need no image view."""
    if cfg.cache_features and not cfg.update_cluster_head_only:
        raise UserError('cache_features needs a frozen trunk: set update_cluster_head_only: true (or '
                        'cache_features: false to train the backbone too)')
    if cfg.cache_features and method.weak_view():
        raise UserError(f"cache_features holds one view per image; setup '{cfg.setup}' with its weak view needs "
                        'images: set local_neighbor_view: strong or cache_features: false')


def cached(model, dataset, cfg, device):
    """One in-order pass of `dataset` (under the evaluation transform) through the frozen trunk: a FeatureSet."""
    return FeatureSet(predict(model, eval_loader(dataset, cfg), device)['features'], dataset)
