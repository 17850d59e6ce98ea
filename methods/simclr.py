"""SimCLR (NT-Xent over two augmented views of each image)."""
from losses.simclr import SimCLRLoss
from methods.base import PretextMethod


class SimCLR(PretextMethod):
    loss = SimCLRLoss
    kwargs = {'temperature': 0.1, 'symmetric': True}
