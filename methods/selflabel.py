"""SCAN's self-labelling: cross-entropy of strong views against the weak view's confident predictions
(max probability above `confidence_threshold`), optionally class-balanced."""
from losses.selflabel import ConfidenceBasedCE
from methods.base import SelfLabelMethod


class SelfLabel(SelfLabelMethod):
    loss = ConfidenceBasedCE
    kwargs = {'apply_class_balancing': True}
    settings = {'confidence_threshold': 0.99}  # SCAN's configs give it beside criterion_kwargs
    model_selection = 'last'  # SCAN's: the model of the last epoch

    def build_loss(self, cfg):
        return ConfidenceBasedCE(cfg.confidence_threshold, **cfg.criterion_kwargs)

    def selection(self):
        return f'confidence above {self.cfg.confidence_threshold}'
