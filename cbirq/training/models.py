"""ResNet20 for CIFAR-10 (He et al. 2016, section 4.2): conv3x3 -> BasicBlock -> ResNet -> resnet20.

Parameter names follow the widely used CIFAR ResNet code the course's exp2.py derives from
(conv1, bn1, layer1-3, linear), so `final.pth['net']` loads into that model as well.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        # Option A of the paper: identity shortcut, subsampled and zero-padded where the
        # shape changes, so the net keeps its ~0.27 M parameters.
        self.pad = planes - in_planes if stride != 1 or in_planes != planes else 0
        self.stride = stride

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pad:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks: list[int], widths=(16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.in_planes = widths[0]
        self.layer1 = self._stage(widths[0], blocks[0], stride=1)
        self.layer2 = self._stage(widths[1], blocks[1], stride=2)
        self.layer3 = self._stage(widths[2], blocks[2], stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)  # no parameters: checkpoints do not change
        self.linear = nn.Linear(widths[2], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _stage(self, planes: int, count: int, stride: int) -> nn.Sequential:
        blocks = []
        for block_stride in [stride] + [1] * (count - 1):
            blocks.append(BasicBlock(self.in_planes, planes, block_stride))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 64-d penultimate vector (global average pool), for search by image."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def resnet20(num_classes: int = 10) -> ResNet:
    return ResNet([3, 3, 3], num_classes=num_classes)
