"""What a method of each stage declares; the stage scripts run any method through these hooks.

A method is one module: a subclass of PretextMethod, ClusteringMethod or SelfLabelMethod naming its
loss and the loss's keyword arguments (`criterion_kwargs`) with their defaults, its own config keys
(`settings`), plus the hooks where it differs from the default; its registry line in methods/__init__.py makes
it a `setup:` choice.
"""
import torch

from evaluation.selection import CRITERIA
from utils.config import Key, check_value
from utils.distributed import gather
from utils.errors import UserError
from utils.optim import autocast


class Method:
    """Base of every method. `loss` is an nn.Module class returning a dict of named parts with the total
    under 'total'; `kwargs` are its keyword arguments and their defaults (a default's type is the type a
    user must give). `settings` are the method's own top-level config keys (key -> default or Key): the stage's
    schema takes them from here (stages/schema.py), so a config may set them as SCAN's configs do.
    `model_selection` is how the stage picks its head and epoch without labels when the config leaves
    model_selection unset (evaluation/selection.SELECTIONS)."""
    loss = None
    kwargs = {}
    settings = {}
    model_selection = 'val_loss'

    @classmethod
    def resolve_kwargs(cls, name, given):
        """The user's criterion_kwargs over the defaults (null keeps the default); an unknown key or a value of
        the wrong type is a UserError (raised before the run writes anything)."""
        given = {k: v for k, v in (given or {}).items() if v is not None}
        unknown = sorted(set(given) - set(cls.kwargs))
        if unknown:
            raise UserError(f"setup '{name}' does not take criterion_kwargs.{unknown[0]}; "
                            f"valid: {', '.join(sorted(cls.kwargs)) or 'none'}")
        for key, value in given.items():
            check_value(f'criterion_kwargs.{key}', Key(cls.kwargs[key]), value, f"setup '{name}'")
        return {**cls.kwargs, **given}

    def __init__(self, cfg):
        self.cfg = cfg
        self.criterion = self.build_loss(cfg)

    def build_loss(self, cfg):
        return self.loss(**cfg.criterion_kwargs)

    def state_dict(self):
        """Checkpoint entries besides the model and optimizer (merged into the checkpoint)."""
        return {}

    def load_state_dict(self, checkpoint):
        """Read back what state_dict() put into the checkpoint."""


class PretextMethod(Method):
    """Trains the contrastive model. Each step, training_step(net, images, index) -> ({'total', ...}, context);
    after the optimiser step, after_step(*context). The default step: z = the L2-normalised projections
    [b, views, d] of the global batch (gathered under torchrun), index [b] their dataset indices, into
    step_loss(z, index); the context is (z, index). A method with modules of its own (a predictor, a momentum
    teacher) creates them in build(model) and returns those the optimiser trains; it saves them in state_dict."""
    views = 2            # augmented views of each image in a training batch
    supervised = False   # trained with labels: an upper bound, not a clustering result
    trains = True        # False: the backbone is used as loaded (setup: pretrained)

    def __init__(self, cfg, train_set, device):
        super().__init__(cfg)

    def build(self, model):
        """Called once with the contrastive model (on its device) before the optimiser is made; returns the
        method's own trainable module (trained and checkpointed with the model's optimiser), or None."""
        return None

    def total_epochs(self):
        return self.cfg.epochs

    def start_epoch(self, epoch):
        """Called before each epoch; returns entries for the epoch's log record."""
        return {}

    def projections(self, net, images, index):
        """images [b, views, C, H, W] (this process's share) -> (z [B, views, d], index [B]) of the global batch."""
        b = images.shape[0]
        with autocast(self.cfg, images.device):
            z = net(images.flatten(0, 1))
        return gather(z.float().view(b, self.views, -1)), gather(index.to(images.device))

    def training_step(self, net, images, index):
        z, index = self.projections(net, images, index)
        return self.step_loss(z, index), (z, index)

    def step_loss(self, z, index):
        return self.criterion(z)

    def after_step(self, z, index):
        """Called after each optimiser step with training_step's context (memory-bank updates)."""

    def state_dict(self):
        return {'criterion': self.criterion.state_dict(), 'memory': None}

    def load_state_dict(self, checkpoint):
        self.criterion.load_state_dict(checkpoint['criterion'])  # e.g. NCE's normalising constant


# What a view of an anchor can be: (whose image: the anchor's 'self' or one of its mined neighbours drawn uniformly,
# 'neighbor'; its transform: the 'strong' training augmentation or the 'weak' evaluation transform). The data side
# (data/loaders.py on images, data/feature_batches.py on cached features) builds batches of any views so declared.
VIEW_KINDS = {'anchor': ('self', 'strong'), 'neighbor': ('neighbor', 'strong'), 'second': ('self', 'strong'),
              'weak': ('self', 'weak')}


class ClusteringMethod(Method):
    """Trains clustering heads so that mined neighbours agree. The method owns its training step (training_step;
    the default feeds the loss, per head, the logits [b, C] of the batch's strong views, gathered over processes,
    through inputs()) and declares the views its batches carry (`views`: names of VIEW_KINDS, or of its own
    `view_kinds`), in the order the network sees them."""
    kwargs = {'entropy_weight': 5.0}
    views = ('anchor', 'neighbor')
    view_kinds = {}  # a method's own views: name -> (source, transform), as VIEW_KINDS

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.get('cluster_head') == 'mlp' and cfg.get('head_init', 'random') != 'random':
            raise UserError(f'head_init: {cfg.head_init} starts linear heads at centroids; with cluster_head: mlp use '
                            'head_init: random')

    def batch_views(self):
        """{view name: (source, transform)} of this run's batches, in order."""
        kinds = {**VIEW_KINDS, **self.view_kinds}
        return {name: kinds[name] for name in self.views}

    def build(self, model):
        """Called on the clustering model before its optimiser and checkpoint are made: the form of the heads it
        trains. An MLP head (cluster_head: mlp) trains its last layer weight-normalised, as DINO's head; a method with
        a head form of its own sets it here, then calls this."""
        if self.cfg.get('cluster_head') == 'mlp':
            model.normalise_heads()

    def training_step(self, net, model, batch, device):
        """One step (stages/epochs.py) through `net` (`model`, its heads on cached features, or their DDP/compiled
        wrapper): the batch's strong views in one forward pass, then the sum of every head's loss on their logits,
        under torchrun computed on the whole global batch, gathered from every process. Logs each part's mean over
        the heads (as tensors: nothing waits for the device)."""
        strong = [name for name, (_, transform) in self.batch_views().items() if transform == 'strong']
        b = len(batch[strong[0]])
        x = torch.cat([batch[name] for name in strong]).to(device, non_blocking=True)  # [views * b, C, H, W]
        with autocast(self.cfg, device):
            out = net(x, forward_pass='return_all')
        context = self.step_context(model, batch, dict(zip(strong, out['features'].split(b))), device)
        index = gather(batch['index'].to(device))
        total, parts = 0.0, {}
        for h, logits in enumerate(out['output']):
            views = {name: gather(chunk.float()) for name, chunk in zip(strong, logits.split(b))}
            loss = self.criterion(**self.inputs(views, h, index, context))
            total = total + loss['total']
            for k, v in loss.items():
                name = 'loss' if k == 'total' else k
                parts[name] = parts.get(name, 0.0) + v.detach() / len(out['output'])
        return total, parts, None

    def step_context(self, model, batch, features, device):
        """Per-step values every head's inputs share; features: {strong view: what the heads see of it [b, D]}."""
        return None

    def inputs(self, logits, head, index, context):
        """The loss's keyword arguments for one head; logits: {strong view: [b, C]}."""
        return {'anchors': logits['anchor'], 'neighbors': logits['neighbor']}

    def val_losses(self, probs, neighbors):
        """Label-free head selection: each head's score on the val split's mined pairs (probs [H, N, C],
        neighbors [N, K]) -> [H], lowest best, by the run's model_selection (evaluation/selection.CRITERIA)."""
        criterion = self.cfg.get('model_selection') or self.model_selection
        return CRITERIA['val_loss' if criterion == 'last' else criterion](probs, neighbors)

    def end_epoch(self, train_predictions):
        """Called after each epoch's evaluation; train_predictions() gives the in-order pass over the train
        split (features [N, D], probs [H, N, C]), computed only when asked for."""


class SelfLabelMethod(Method):
    """Fine-tunes one head on its own predictions. Each step: step_loss(weak, strong, index) with the logits
    [b, C] of the weak (evaluation) and strong views of the global batch (weak is None unless `needs_weak`)
    and their dataset indices [b] -> {'total' (None when nothing in the batch is used), 'confident' (samples
    used)}."""
    needs_weak = True  # the loss reads the weak view's predictions of every batch

    def __init__(self, cfg, train_set):
        super().__init__(cfg)

    def selection(self):
        """Which predictions teach, in words for the log."""
        return 'every prediction'

    def start_epoch(self, train_predictions):
        """Called before each epoch; train_predictions() gives the in-order pass over the train split (features
        [N, D], probs [1, N, C]), computed only when asked for. Returns entries for the epoch's log record."""
        return {}

    def step_loss(self, weak, strong, index):
        return self.criterion(weak, strong)
