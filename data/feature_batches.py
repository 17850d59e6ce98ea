"""Datasets and batches of vectors instead of images: the cached features the heads train on with a frozen trunk
(stages/feature_cache.py computes them). Pairs are drawn as on images (an anchor and one of its mined neighbours,
uniformly); without augmentation the second view of NNM is the anchor's own vector."""
import numpy as np
import torch

from data.base import ImageDataset
from data.loaders import ShuffledBatches, local


class FeatureSet(ImageDataset):
    """A dataset's cached features: items {'image': its vector [D], 'index', 'target'}, with its labels and classes."""

    def __init__(self, features, dataset):
        super().__init__()
        self.features = features
        self.targets, self.classes = dataset.targets, dataset.classes

    def __getitem__(self, i):
        return {'image': self.features[i].float(), 'index': i, 'target': int(self.targets[i])}


class FeatureBatches(ShuffledBatches):
    """Cached features in shuffled batches of this process's share, as data/loaders.DeviceBatches for images."""

    def __init__(self, features, batch_size, device):
        super().__init__(len(features), batch_size)
        self.features = features.to(device)  # on the CPU a memory-mapped cache stays on disk, paged in by batch

    def rows(self, index):
        """The vectors of `index`, float32 whatever the cache holds (feature_cache_dtype)."""
        return self.features[index].float()


class FeaturePairs(FeatureBatches):
    """Clustering batches: {view: [b, D] for each of `views` (name -> (source, transform)), 'index'}: the anchor's
    vector or one of its mined neighbours' (drawn uniformly for each such view); without augmentation every
    transform of a vector is the vector itself."""

    def __init__(self, features, neighbors, views, batch_size, device):
        super().__init__(features, batch_size, device)
        self.neighbors = torch.as_tensor(np.asarray(neighbors))
        self.views = views

    def batch(self, index):
        anchors = local(index)
        out = {}
        for name, (source, _) in self.views.items():
            if source == 'neighbor':
                pick = torch.randint(self.neighbors.shape[1], (len(index),))
                out[name] = self.rows(local(self.neighbors[index, pick]))
            else:
                out[name] = self.rows(anchors)
        out['index'] = anchors
        return out


class FeatureViews(FeatureBatches):
    """Self-labelling batches: {'image', 'image_augmented' (the same vectors: no augmentation on features),
    'index'}."""

    def batch(self, index):
        index = local(index)
        rows = self.rows(index)
        return {'image': rows, 'image_augmented': rows, 'index': index}
