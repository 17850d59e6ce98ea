"""SCAN (Van Gansbeke et al. 2020): each anchor and one of its mined neighbours should get the same cluster."""
from losses.scan import SCANLoss
from methods.base import ClusteringMethod


class SCAN(ClusteringMethod):
    loss = SCANLoss
