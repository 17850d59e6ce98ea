"""Self-labelling that keeps every cluster: before each epoch, the pseudo-labels of the whole train split (weak
view, eval mode) and, per cluster, its most confident `fraction` of members (at least `min_per_cluster`), so
that a cluster whose confidences are all lower than another's still teaches (SCAN's fixed threshold empties
such clusters, as its users have reported). With `neighbor_agreement` > 0 a chosen sample is kept only where at
least that share of its mined neighbours carry its label (SPICE's reliable pseudo-labels), again keeping each
cluster's most confident members when the rule would empty it. With `label_neighbors` K > 0 each sample's
pseudo-label and confidence come from the mean prediction of the sample and its first K mined neighbours (one step
of label propagation over the neighbour graph; at most as many as were mined). The strong views then learn those
labels."""
import math

import torch

from losses.selflabel import SelectedCE
from methods.base import SelfLabelMethod
from neighbors.search import load_neighbors
from utils.errors import UserError


def select_per_cluster(confidence, labels, num_clusters, fraction, min_per_cluster=1, agreement=None,
                       min_agreement=0.0):
    """Which samples teach: per cluster (labels [N]), its ceil(fraction * size) most confident members
    (confidence [N]), at least min_per_cluster; with agreement [N] (share of each sample's neighbours with its
    label), only those at or above min_agreement, but never fewer than min_per_cluster of a non-empty
    cluster. Returns a bool mask [N]."""
    use = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(num_clusters):
        members = torch.nonzero(labels == c).flatten()
        if len(members) == 0:
            continue
        ranked = members[confidence[members].argsort(descending=True, stable=True)]
        chosen = ranked[:max(math.ceil(fraction * len(members)), min_per_cluster)]
        if agreement is not None and min_agreement > 0:
            reliable = chosen[agreement[chosen] >= min_agreement]
            chosen = reliable if len(reliable) >= min_per_cluster else ranked[:min_per_cluster]
        use[chosen] = True
    return use


class SelfLabelPerCluster(SelfLabelMethod):
    loss = SelectedCE
    model_selection = 'val_loss'  # the epoch, the clustering model itself included, with the lowest val loss
    kwargs = {'fraction': 0.5, 'min_per_cluster': 1, 'neighbor_agreement': 0.0, 'label_neighbors': 0,
              'apply_class_balancing': True, 'entropy_weight': 0.0}
    needs_weak = False

    def __init__(self, cfg, train_set):
        super().__init__(cfg, train_set)
        kw = cfg.criterion_kwargs
        self.fraction, self.min_per_cluster = kw['fraction'], kw['min_per_cluster']
        self.min_agreement, self.label_neighbors = kw['neighbor_agreement'], kw['label_neighbors']
        if self.label_neighbors < 0:
            raise UserError(f'criterion_kwargs.label_neighbors must be 0 (off) or more, not {self.label_neighbors}')
        self.neighbors = None
        if self.min_agreement > 0 or self.label_neighbors > 0:  # the pretext stage's mined train neighbours
            self.neighbors = load_neighbors(cfg.topk_neighbors_train_path, len(train_set), None, 'train')
            if self.label_neighbors > self.neighbors.shape[1]:  # a folder of fewer images than neighbours asked
                print(f'criterion_kwargs.label_neighbors: {self.neighbors.shape[1]}, every neighbour the pretext stage '
                      f'mined per image (not {self.label_neighbors})')
                self.label_neighbors = self.neighbors.shape[1]
        self.labels = torch.zeros(len(train_set), dtype=torch.long)
        self.use = torch.zeros(len(train_set), dtype=torch.bool)

    def selection(self):
        agree = f', agreeing with {self.min_agreement:.0%} of their neighbours' if self.min_agreement > 0 else ''
        mean = f', labels from the mean prediction with {self.label_neighbors} neighbours' if self.label_neighbors \
            else ''
        return f'the most confident {self.fraction:.0%} of each cluster{agree}{mean}'

    def propagated(self, probs):
        """probs [N, C] -> the mean of each sample's and its first label_neighbors mined neighbours' (unchanged
        with label_neighbors 0)."""
        if not self.label_neighbors:
            return probs
        k = self.label_neighbors
        return (probs + probs[self.neighbors[:, :k]].sum(1)) / (k + 1)

    def build_loss(self, cfg):
        return SelectedCE(cfg.criterion_kwargs['apply_class_balancing'], cfg.criterion_kwargs['entropy_weight'])

    def start_epoch(self, train_predictions):
        probs = self.propagated(train_predictions()['probs'][0])  # [N, C]
        confidence, self.labels = probs.max(1)
        agreement = None
        if self.neighbors is not None:
            agreement = (self.labels[self.neighbors] == self.labels.unsqueeze(1)).float().mean(1)
        self.use = select_per_cluster(confidence, self.labels, probs.shape[1], self.fraction, self.min_per_cluster,
                                      agreement, self.min_agreement)
        taught = torch.bincount(self.labels[self.use], minlength=probs.shape[1])
        return {'selected_share': round(float(self.use.float().mean()), 5),
                'taught_clusters': int((taught > 0).sum())}

    def step_loss(self, weak, strong, index):
        if self.labels.device != strong.device:  # once per epoch: the epoch's choice kept where the steps run
            self.labels, self.use = self.labels.to(strong.device), self.use.to(strong.device)
        index = index.to(strong.device)
        return self.criterion(strong, self.labels[index], self.use[index])
