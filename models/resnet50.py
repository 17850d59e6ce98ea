"""torchvision's ResNet-50 with `fc` removed (D = 2048), for ImageNet subsets."""
import torch.nn as nn

from utils.errors import UserError


def resnet50(in_channels=3):
    if in_channels != 3:
        raise UserError('resnet50 takes RGB input; set channels: 3')
    from utils.tv import torchvision
    backbone = torchvision.models.resnet50()
    backbone.fc = nn.Identity()
    return {'backbone': backbone, 'dim': 2048}
