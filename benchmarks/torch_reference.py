"""PyTorch CPU reference of the paper's bottleneck ResNets and their training steps.

The same architecture as ``comdml_jax.models.resnet`` (and as the original ComDML
code): a 3x3/16 stem, six groups of bottleneck blocks, global average pooling
and a linear head. Used only by the benchmarks, as the speed reference.
"""

from __future__ import annotations

from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or inplanes != out:
            self.down = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.down is None else self.down(x)))


def bottleneck_resnet(n: int, num_classes: int = 10) -> list[nn.Module]:
    """The stages [stem, g1..g6, head] of the paper's resnet56 (n=3) / resnet110 (n=6)."""
    stages: list[nn.Module] = [
        nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
        )
    ]
    inplanes = 16
    for planes, stride in zip((16, 16, 32, 32, 64, 64), (1, 1, 2, 1, 2, 1), strict=True):
        blocks = []
        for b in range(n):
            blocks.append(Bottleneck(inplanes, planes, stride if b == 0 else 1))
            inplanes = planes * 4
        stages.append(nn.Sequential(*blocks))
    stages.append(
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inplanes, num_classes))
    )
    return stages


def aux_head(channels: int, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
