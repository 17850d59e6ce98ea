"""No pretext training (setup: pretrained): the backbone keeps the weights of `backbone_weights`, and the stage only
writes the model file, then mines neighbours on the backbone's features. The later stages read pretext/model.pth.tar
as after any pretext method; their heads sit on the backbone (the projection head is untrained)."""
from methods.base import PretextMethod


class Pretrained(PretextMethod):
    trains = False

    def build_loss(self, cfg):
        return None

    @classmethod
    def resolve_kwargs(cls, name, given):
        return {}  # no loss: a config switched from a trained setup may keep its criterion_kwargs
