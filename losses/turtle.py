"""TURTLE's clustering loss (Gadetsky, Jiang and Brbic, ICML 2024, "Let Go of Your Labels with Unsupervised
Transfer"): the labelling of the images that a linear classifier on the features learns best, kept from putting
everything in one cluster by the entropy of the mean labelling."""
import torch
import torch.nn as nn

from losses.scan import entropy


def fit_linear(classifier, optimizer, x, targets, steps, groups=None, dtype=None):
    """`steps` optimiser steps of the linear `classifier` on x [b, D] towards the soft targets [b, C] (cross-entropy;
    the targets carry no gradient): TURTLE's inner learner. `groups`: the sizes of several classifiers' outputs side
    by side in C (one per head), each with its own softmax, their cross-entropies summed.

    The gradient is written in closed form, not taken by autograd: for the mean cross-entropy of softmax(z) with
    targets t, dL/dz = (softmax(z) * sum(t) - t) / b per group, dL/dW = (dL/dz)^T x, dL/db = sum_i dL/dz_i (less work
    than autograd's pass through the split softmaxes). `dtype` (e.g. torch.bfloat16, with amp: bf16): the two
    matrix products per step in that precision, the softmax, the gradient's sums and the optimiser in float32."""
    targets = targets.detach().float()
    groups = groups or [targets.shape[1]]
    x = x.detach().to(dtype or x.dtype)
    mass = torch.cat([t.sum(1, keepdim=True).expand_as(t) for t in targets.split(groups, 1)], 1)
    weight, bias = classifier.weight, classifier.bias
    for _ in range(steps):
        with torch.no_grad():
            logits = (x @ weight.to(x.dtype).t()).float() + bias
            probs = torch.cat([z.softmax(1) for z in logits.split(groups, 1)], 1)
            grad = (probs * mass - targets) / len(x)
            weight.grad = (grad.to(x.dtype).t() @ x).float()
            bias.grad = grad.sum(0)
        optimizer.step()


class TURTLELoss(nn.Module):
    """L = (1/b) sum_i CE(w(x_i), q_i) - entropy_weight * H(mean_i q_i).

    q = softmax(the head's logits) is the labelling (TURTLE's task encoder); w(x_i) are the logits of the inner
    linear classifier just fitted to q on the same images (fit_linear), held fixed here: a labelling the classifier
    already predicts well costs little, so the head moves towards labellings a linear classifier separates with a
    margin (the paper's first-order update of its bilevel problem).
    With several representation spaces, predicted is a list of one inner classifier's logits per space and the
    error is the sum of theirs (TURTLE's multi-space loss).
    Shape: labels [b, C] the head's logits; predicted [b, C] the inner classifier's logits (or a list of them).
    Returns {'total', 'error', 'entropy'}.
    """

    def __init__(self, entropy_weight):
        super().__init__()
        self.entropy_weight = float(entropy_weight)

    def forward(self, labels, predicted):
        q = labels.softmax(1)
        predicted = predicted if isinstance(predicted, (list, tuple)) else [predicted]
        error = sum(-(q * p.detach().log_softmax(1)).sum(1).mean() for p in predicted)
        ent = entropy(q.mean(0))
        return {'total': error - self.entropy_weight * ent, 'error': error.detach(), 'entropy': ent.detach()}
