"""Model files, ours and the ones users download from SCAN and NNM: what a file holds (a pretext or clustering
model, its selected head), read from any of their layouts, and the weight-normalised heads folded into plain ones."""
from dataclasses import dataclass
from typing import Optional

from utils.checkpoint import load_file, load_weights, strip_prefixes
from utils.errors import UserError

WEIGHT_NORM = '.parametrizations.weight.original'  # torch's weight_norm: original0 = g [C, 1], original1 = v [C, D]


def fold_weight_norm(state_dict):
    """Weight-normalised layers (TURTLE's heads while they train) as plain ones: '<m>.weight' = g v / |v| (norm per
    output row) in place of g and v, so a checkpoint reads as the model file does."""
    out = {k: v for k, v in state_dict.items() if WEIGHT_NORM not in k}
    for key in state_dict:
        if key.endswith(WEIGHT_NORM + '1'):
            module = key[:-len(WEIGHT_NORM + '1')]
            g, v = state_dict[module + WEIGHT_NORM + '0'], state_dict[key]
            out[module + '.weight'] = g * v / v.flatten(1).norm(dim=1).view(g.shape)
    return out



@dataclass
class ModelFile:
    """What a model file holds: kind 'pretext' or 'clustering', its state_dict (prefixes stripped), the
    selected head (clustering; None when the file names none) and the number of clusters per head."""
    path: str
    kind: str
    state: dict
    head: Optional[int] = None

    @property
    def heads(self):
        """The head numbers the state_dict holds (clustering models)."""
        return sorted({int(k.split('.')[1]) for k in self.state if k.startswith('cluster_head.')})

    @property
    def num_clusters(self):
        if self.kind != 'clustering':
            return None
        state = self.single_head()
        return state.get('cluster_head.0.weight', state.get('cluster_head.0.last.weight')).shape[0]

    def part(self, module):
        """The weights of one top-level module ('backbone', 'contrastive_head'), without its prefix."""
        prefix = module + '.'
        return {k[len(prefix):]: v for k, v in self.state.items() if k.startswith(prefix)}

    def backbone(self):
        return self.part('backbone')

    def single_head(self):
        """Backbone (and projection) + the selected head as cluster_head.0 (self-labelling, evaluation)."""
        return single_head_state(self.state, self.head or 0)


def read_model_file(path, what='model', kind=None):
    """The one reader of model files, ours and SCAN's / NNM's: a bare state_dict (pretext;
    self-label with one head), {'model', 'head'} (clustering) and resume files {'model', 'optimizer', 'epoch',
    ...} with optional 'module.' prefixes and a head under 'head' or NNM's 'best_loss_head'. With `kind`, a
    file of another kind is a UserError."""
    obj = load_file(path, what)
    if not isinstance(obj, dict):
        raise UserError(f'{path} holds a {type(obj).__name__}, not a model')
    state, head = obj, None
    if isinstance(obj.get('model'), dict):
        state = obj['model']
        head = next((int(obj[k]) for k in ('head', 'best_loss_head') if obj.get(k) is not None), None)
    state = fold_weight_norm(strip_prefixes(state))
    if any(k.startswith('cluster_head.') for k in state):
        found = ModelFile(path, 'clustering', state, head)
    elif holds_projection(state):
        found = ModelFile(path, 'pretext', state)
    else:
        raise UserError(f'{path} is neither a pretext model (contrastive_head.*) nor a clustering model '
                        f'(cluster_head.*); its first keys: {", ".join(list(state)[:3])}')
    if kind is not None and found.kind != kind:
        raise UserError(f'{path} is a {found.kind} model, not a {kind} model; give the {what}')
    return found


def load_pretext_model(model, path):
    """Load a pretext model file (SCAN's bare state_dict, or {'model': state_dict}) into `model`."""
    load_weights(model, read_model_file(path, 'pretext model', 'pretext').state, f'pretext model {path}')


def single_head_state(state, head):
    """A clustering state_dict with H heads -> backbone (and projection head, when the heads sit on it), the logits'
    scale and the input normalisation when it has them, and that head as cluster_head.0 (self-labelling, eval)."""
    prefix = f'cluster_head.{head}.'
    if not any(k.startswith(prefix) for k in state):
        heads = sorted({k.split('.')[1] for k in state if k.startswith('cluster_head.')})
        raise UserError(f'the model has no head {head} (heads: {", ".join(heads) or "none"})')
    out = {k: v for k, v in state.items() if k.startswith(('backbone.', 'contrastive_head.'))
           or k in ('logit_scale', 'input_normalized')}
    out.update({'cluster_head.0.' + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return out


def holds_projection(state):
    """Whether a state dict holds a projection head (contrastive_head.*): a pretext model's, or the one a clustering
    model's heads sit on (heads_on: projection)."""
    return any(k.startswith('contrastive_head.') for k in state)
