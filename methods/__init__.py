"""The methods of each stage by `setup` name: one module per method, one line per method here.

Adding a method: write methods/<name>.py with a subclass of PretextMethod, ClusteringMethod or
SelfLabelMethod (methods/base.py says what each declares), then add its line below. The stage's
`setup:` choices, the check of its criterion_kwargs and the training loop all come from here.
"""
from methods import (and_, byol, instdisc, nnm, pretrained, scan, selflabel, selflabel_per_cluster, simclr, snca, temi,
                     turtle)
from utils.errors import UserError
from utils.stages import STAGES

PRETEXT = {
    'simclr': simclr.SimCLR,
    'instdisc': instdisc.InstDisc,
    'and': and_.AND,
    'snca': snca.SNCA,
    'pretrained': pretrained.Pretrained,
    'byol': byol.BYOL,
}
CLUSTERING = {
    'scan': scan.SCAN,
    'nnm': nnm.NNM,
    'temi': temi.TEMI,
    'turtle': turtle.TURTLE,
}
SELFLABEL = {
    'selflabel': selflabel.SelfLabel,
    'selflabel_per_cluster': selflabel_per_cluster.SelfLabelPerCluster,
}
REGISTRIES = dict(zip(STAGES, (PRETEXT, CLUSTERING, SELFLABEL)))  # stage name -> its registry


def get_method(stage, setup):
    """The method class of a stage ('pretext', 'clustering', 'selflabel') by its setup name."""
    registry = REGISTRIES[stage]
    if setup not in registry:
        raise UserError(f"unknown {stage} setup '{setup}'; valid: {', '.join(registry)}")
    return registry[setup]
