"""A model built the way a typical third-party CIFAR ResNet is (not with mclib), and data to train it on.

The architecture follows the widely copied CIFAR ResNet of He et al. (2016) as third-party code writes
it: option-A shortcuts as a ``LambdaLayer`` (stride-2 subsampling and zero-padded channels, no
parameters), a stem of ``conv1``/``bn1`` with a *functional* ReLU in ``forward`` (no ``nn.ReLU``
module to hook), ``layer1..layer3`` of BasicBlocks, functional average pooling and a head named
``linear``. It expects normalised inputs and holds no mclib ``Normalize``: wrap it with
:func:`mclib.models.with_normalization` to give it [0, 1] images.

Other tests import this file (``from thirdparty import ...``, tests/ is on the path under pytest).
Everything is deterministic and small enough to train in seconds on one CPU thread.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mclib import models

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)      # the kind of statistics a CIFAR model ships with


class LambdaLayer(nn.Module):
    def __init__(self, lambd):
        super().__init__()
        self.lambd = lambd

    def forward(self, x):
        return self.lambd(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            pad = (planes - in_planes) // 2          # option A: subsample, zero-pad the new channels
            self.shortcut = LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, num_blocks=(1, 1, 1), num_classes=10, width=8):
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(width, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(2 * width, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(4 * width, num_blocks[2], stride=2)
        self.linear = nn.Linear(4 * width, num_classes)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


def resnet(num_classes: int = 10, num_blocks=(1, 1, 1), width: int = 8, seed: int = 0) -> ResNet:
    """The bare third-party model (expects normalised inputs), initialised from ``seed``."""
    torch.manual_seed(seed)
    return ResNet(num_blocks, num_classes, width)


def make_data(n_per_class: int = 16, num_classes: int = 4, seed: int = 0, noise: float = 0.1):
    """Images in [0, 1] of shape (N, 3, 32, 32) with labels 0..num_classes-1 (N = n_per_class * num_classes).

    Each class is a smooth random colour pattern (a 4x4 grid upsampled to 32x32); each image is its
    class pattern plus Gaussian pixel noise, clipped to [0, 1]. Classes are interleaved (y = i % classes).
    """
    g = torch.Generator().manual_seed(seed)
    patterns = F.interpolate(torch.rand(num_classes, 3, 4, 4, generator=g), size=32, mode="bilinear",
                             align_corners=False)
    y = torch.arange(n_per_class * num_classes) % num_classes
    x = (patterns[y] + noise * torch.randn(len(y), 3, 32, 32, generator=g)).clamp(0, 1)
    return x, y


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 30, lr: float = 0.05,
          batch_size: int = 32, seed: int = 0) -> nn.Module:
    """SGD with momentum on (x, y) for ``steps`` minibatches (BatchNorm in train mode); returns the model in eval.

    ``model`` takes the inputs as given, so pass the wrapped model to train on [0, 1] images.
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def trained(num_classes: int = 4, n_per_class: int = 16, steps: int = 30, seed: int = 0,
            confident: float | None = None):
    """``(model, x, y)``: the third-party ResNet wrapped with its normalisation, trained on :func:`make_data`.

    ``confident``: multiply the head's weights and bias by this factor after training, which scales
    the logits: with a large factor the model is as over-confident as a fully trained CIFAR ResNet
    (float32 cross-entropy exactly 0 on many inputs) without training for hours.
    """
    x, y = make_data(n_per_class, num_classes, seed)
    body = resnet(num_classes, seed=seed)
    model = train(models.with_normalization(body, MEAN, STD), x, y, steps=steps, seed=seed)
    if confident is not None:
        with torch.no_grad():
            body.linear.weight.mul_(confident)
            body.linear.bias.mul_(confident)
    return model, x, y
