"""TEMI's clustering loss (Adaloglou et al., BMVC 2023, "Exploring the limits of deep image clustering using
pretrained models"): weighted pointwise mutual information between the student's prediction for an image and a
teacher's for one of its mined neighbours."""
import torch
import torch.nn as nn

from losses.scan import EPS


def pmi(student, teacher, prior, beta):
    """log sum_k (s_k t_k)^beta / prior_k per row: student, teacher [b, C] probabilities, prior [C]."""
    return torch.log(((student * teacher).clamp_min(EPS) ** beta / prior).sum(1))


class TEMILoss(nn.Module):
    """L = -(1/b) sum_i w_i (pmi(s(x_i), t(n_i)) + pmi(s(n_i), t(x_i))) / 2, both directions of each pair.

    s: the student's probabilities (softmax of its logits / student_temperature); t: the teacher's, given; prior:
    the running mean of the teacher's probabilities (it keeps every cluster in use, as SCAN's entropy term does);
    w: the pair's weight, how much the teacher's heads agree that the two images share a cluster.
    Shape: anchors, neighbors [b, C] student logits; teacher_anchors, teacher_neighbors [b, C] probabilities;
    prior [C]; weight [b]. Returns {'total', 'pmi'}.
    """

    def __init__(self, beta, student_temperature):
        super().__init__()
        self.beta, self.temperature = float(beta), float(student_temperature)

    def forward(self, anchors, neighbors, teacher_anchors, teacher_neighbors, prior, weight):
        s_a, s_n = (anchors / self.temperature).softmax(1), (neighbors / self.temperature).softmax(1)
        both = (pmi(s_a, teacher_neighbors, prior, self.beta) + pmi(s_n, teacher_anchors, prior, self.beta)) / 2
        return {'total': -(weight * both).mean(), 'pmi': both.mean().detach()}
