"""Instance discrimination (Wu et al. 2018): every sample is its own class, scored against a memory bank."""
from losses.memory import InstDiscLoss
from methods.memory import MemoryMethod


class InstDisc(MemoryMethod):
    loss = InstDiscLoss
    kwargs = {'temperature': 0.1, 'nce_k': 0}
