"""Losses by name (`criterion` in the config)."""
from losses.memory import ANDLoss, InstDiscLoss, SNCALoss
from losses.scan import NNMLoss, SCANLoss
from losses.simclr import SimCLRLoss
from utils.errors import UserError

CRITERIA = {'simclr': SimCLRLoss, 'instdisc': InstDiscLoss, 'and': ANDLoss, 'snca': SNCALoss,
            'scan': SCANLoss, 'nnm': NNMLoss}


def get_criterion(cfg):
    if cfg.criterion not in CRITERIA:
        raise UserError(f"unknown criterion '{cfg.criterion}'; valid: {', '.join(CRITERIA)}")
    try:
        return CRITERIA[cfg.criterion](**(cfg.get('criterion_kwargs') or {}))
    except TypeError as e:
        raise UserError(f'criterion_kwargs do not fit {cfg.criterion}: {e}') from None
