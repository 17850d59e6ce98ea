"""A small CNN backbone for CPU-scale runs (digits, CIFAR-10 on a laptop)."""
import torch.nn as nn

from utils.errors import UserError


class SmallCNN(nn.Module):
    """conv3x3-BN-ReLU blocks of the given widths, max-pool 2x2 after the blocks marked in `pools`,
    global average pool. Returns features [b, widths[-1]]."""

    def __init__(self, in_channels=3, widths=(32, 64, 64, 64), pools=None):
        super().__init__()
        pools = list(pools) if pools is not None else [True] * (len(widths) - 1) + [False]
        if len(pools) != len(widths):
            raise UserError(f'backbone_kwargs: pools ({len(pools)}) must have one entry per width ({len(widths)})')
        layers, c = [], in_channels
        for width, pool in zip(widths, pools):
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
            c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.features(x)).flatten(1)


def small_cnn(in_channels=3, widths=(32, 64, 64, 64), pools=None):
    return {'backbone': SmallCNN(in_channels, widths, pools), 'dim': widths[-1]}
