"""Architectures by name. Every model takes pixel-space inputs in [0, 1]: normalisation is its first layer.

Names accepted by :func:`build`:

* ``mlp`` -- fully connected ReLU network (``hidden`` widths).
* ``cnn`` -- small convolutional net (two conv blocks, one hidden dense layer).
* ``resnet<depth>`` (e.g. ``resnet20``, ``resnet8``) -- the CIFAR-style ResNet of He et al., depth 6n+2.
* ``vgg`` / ``vgg_bn`` -- a *small* VGG-style net (``widths``, three 3x3 convolutions by default, 0.36 M
  parameters on 3x32x32), without / with BatchNorm: the quick and smoke presets' cheap convolutional net.
* ``vgg16`` / ``vgg16_bn`` -- VGG-16 (-BN) for 32x32 inputs as in Garipov et al.'s curve code
  (``timgaripov/dnn-mode-connectivity``, ``models/vgg.py``): 13 convolutions (64, 64, M, 128, 128, M, 256 x 3,
  M, 512 x 3, M, 512 x 3, M) and a 512-512-classes head with dropout, about 15 M parameters.
* ``resnet18_cifar`` -- the CIFAR ResNet-18 (3x3 stride-1 stem, no max-pool; four stages of two basic
  blocks, widths 64..512), about 11.2 M parameters.
* ``resnet18`` / ``googlenet`` -- torchvision ImageNet models, pretrained weights loaded from a local
  file when one is present (``weights_path``); they are never downloaded at run time.

Any other ``nn.Module`` works with the rest of mclib as long as it maps [0, 1] images to logits;
:func:`with_normalization` puts a normalisation layer in front of a user's model.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from mclib import data as _data

ARCHS = ("mlp", "cnn", "resnet<depth>", "resnet18_cifar", "vgg", "vgg_bn", "vgg16", "vgg16_bn", "resnet18", "googlenet")


class Normalize(nn.Module):
    r"""Per-channel standardisation, the first layer of every mclib model.

    .. math:: \hat x_{c,i,j} = \frac{x_{c,i,j} - \mu_c}{\sigma_c},

    with :math:`\mu_c` and :math:`\sigma_c` the dataset's channel mean and standard deviation (``mean``,
    ``std``), so callers always pass pixels in :math:`[0, 1]`.
    """

    static_forward = True   # no branch on input values (mclib.infer.static_forward)

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PoolFirst(nn.Sequential):
    r"""An ``nn.Sequential`` that runs every ``nn.ReLU`` directly followed by an ``nn.MaxPool2d`` as pool-then-ReLU.

    The same modules, state dict and numbers as ``nn.Sequential``, bit for bit: ReLU is monotone, so for every
    pooling window :math:`\max_i \max(x_i, 0) = \max(\max_i x_i, 0)`, and the gradient goes to the same input
    (the window's first maximum when it is positive; nowhere when it is not, where ReLU's derivative is 0 on both
    sides; padding is :math:`-\infty` and never selected over a real element). The ReLU then reads and writes a
    quarter of the elements, and its backward pass too: on the quick CNN's 128 x 16 x 28 x 28 activations that
    was a third of a training step (issue 31: 1.6-1.7x per step).

    Where a hook is registered on the ReLU or the pool (or a global module hook), the pair runs in its written
    order, so the hook sees the activation it asked for (the internal codes of claims B1-B3 read ReLU outputs).
    """

    static_forward = True   # no branch on input values (mclib.infer.static_forward)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mods = list(self._modules.values())
        i, n = 0, len(mods)
        while i < n:
            m = mods[i]
            if i + 1 < n and type(m) is nn.ReLU and type(mods[i + 1]) is nn.MaxPool2d and _swappable(m, mods[i + 1]):
                x = m(mods[i + 1](x))
                i += 2
            else:
                x = m(x)
                i += 1
        return x


def _swappable(relu: nn.Module, pool: nn.MaxPool2d) -> bool:
    """No hook can tell the order apart: none on either module, no global module hook; the pool returns one tensor."""
    from torch.nn.modules import module as M

    if pool.return_indices or M._global_forward_hooks or M._global_forward_pre_hooks or M._global_backward_hooks \
            or M._global_backward_pre_hooks:
        return False
    return not any(h for m in (relu, pool) for h in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks,
                                                     m._backward_pre_hooks))


def with_normalization(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Sequential:
    """Wrap ``model`` so it accepts [0, 1] images: ``Sequential(Normalize(mean, std), model)``.

    ``mean`` and ``std`` must be the statistics the model was *trained* with, which are not always its
    dataset's: many public CIFAR models use ImageNet's ``(0.485, 0.456, 0.406)`` / ``(0.229, 0.224, 0.225)``
    (``IMAGENET_MEAN``, ``IMAGENET_STD``), others CIFAR-10's ``(0.4914, 0.4822, 0.4465)`` with
    ``(0.2470, 0.2435, 0.2616)`` or ``(0.2023, 0.1994, 0.2010)``, others 0.5 / 0.5. Where to find them: the
    ``transforms.Normalize(...)`` of the repository's training or evaluation script (or its data module / hub
    config), the model card, or a ``mean``/``std`` stored in the checkpoint. A wrong choice raises no error --
    it only lowers the accuracy (a public ResNet-20 trained with ImageNet's statistics: 0.40 without the
    wrapper). Check it: :func:`check_normalization` compares the test accuracy under the chosen statistics
    with common alternatives and warns when one is clearly better; the accuracy should match the published one.
    """
    return nn.Sequential(Normalize(mean, std), model)


def normalization_candidates(channels: int) -> dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None]:
    """Statistics that public models commonly use, for :func:`check_normalization`: ImageNet's (3 channels),
    the torchvision datasets' of that channel count (:mod:`mclib.data`), 0.5 / 0.5, and none (``None``: pixels
    in [0, 1] go in unchanged)."""
    out: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {}
    if channels == 3:
        out["ImageNet"] = (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))
    for name, info in _data.INFO.items():
        stats = (tuple(info.mean), tuple(info.std))
        if info.in_shape[0] == channels and stats not in out.values():      # mnist5k and mnist share theirs
            out[name] = stats
    out["0.5 / 0.5"] = ((0.5,) * channels, (0.5,) * channels)
    out["none"] = None
    return out


def check_normalization(model: nn.Module, X: torch.Tensor, y: torch.Tensor, mean: Sequence[float] | None,
                        std: Sequence[float] | None, candidates: dict | None = None, margin: float = 0.05,
                        batch_size: int = 256):
    """Accuracy of the bare ``model`` (expecting normalised inputs) on ``(X, y)``, images in [0, 1], under the
    chosen statistics ``(mean, std)`` (``None``: no normalisation) and under each of ``candidates`` (default
    :func:`normalization_candidates`). Returns a DataFrame (one row per choice, ``chosen`` marking the caller's,
    sorted by accuracy) and warns when an alternative beats the chosen statistics by more than ``margin``:
    a wrong normalisation shows only as low accuracy, never as an error.
    """
    import pandas as pd

    if X.dim() != 4:
        raise ValueError(f"X must be images (N, C, H, W) in [0, 1], got shape {tuple(X.shape)}")
    if len(X) != len(y) or len(X) == 0:
        raise ValueError(f"X and y must be non-empty and of one length, got {len(X)} and {len(y)}")
    C = X.shape[1]
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither (None: no normalisation)")
    cands = dict(normalization_candidates(C) if candidates is None else candidates)
    choices = {"chosen": (tuple(mean), tuple(std)) if mean is not None else None, **cands}
    dev = next(iter(model.parameters()), torch.zeros(0)).device
    was = model.training
    model.eval()
    rows = []
    try:
        for name, stats in choices.items():
            if stats is not None and (len(stats[0]) != C or len(stats[1]) != C):
                raise ValueError(f"candidate {name!r} has {len(stats[0])} channel means for {C}-channel images")
            net = model if stats is None else nn.Sequential(Normalize(*stats), model)
            correct = 0
            for i in range(0, len(X), batch_size):
                with torch.no_grad():
                    out = net(X[i:i + batch_size].to(dev))
                correct += int((out.argmax(1).cpu() == torch.as_tensor(y[i:i + batch_size]).cpu()).sum())
            rows.append({"statistics": name, "mean": None if stats is None else stats[0],
                         "std": None if stats is None else stats[1], "acc": correct / len(X), "chosen": name == "chosen"})
    finally:
        model.train(was)
    table = pd.DataFrame(rows)
    chosen = float(table.loc[table["chosen"], "acc"].iloc[0])
    best = table[~table["chosen"]].sort_values("acc", ascending=False).head(1)
    if len(best) and float(best["acc"].iloc[0]) > chosen + margin:
        warnings.warn(f"the model's accuracy is {chosen:.3f} with the chosen normalisation but "
                      f"{float(best['acc'].iloc[0]):.3f} with {best['statistics'].iloc[0]!r} (mean {best['mean'].iloc[0]}, "
                      f"std {best['std'].iloc[0]}): check which statistics the model was trained with", UserWarning,
                      stacklevel=2)
    return table.sort_values("acc", ascending=False, kind="stable").reset_index(drop=True)


def mlp(in_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 128)) -> nn.Sequential:
    """Flatten, then ReLU layers of the given widths, then a linear read-out."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = int(torch.tensor(in_shape).prod())
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def cnn(in_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32), hidden: int = 128) -> nn.Sequential:
    """Conv(3x3)-ReLU-MaxPool blocks (one per entry of ``channels``), then a ReLU dense layer and a read-out.

    A :class:`PoolFirst` sequence: each ReLU-MaxPool pair runs as pool-then-ReLU, the same numbers faster.

    Pooling is skipped once the feature map is 2 pixels or less, so 8x8 inputs work too.
    """
    c, h, w = in_shape
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()]
        if min(h, w) > 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c = out
    layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
    return PoolFirst(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1-conv) shortcut."""

    static_forward = True   # no branch on input values (mclib.infer.static_forward)

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    r"""CIFAR-style ResNet (He et al. 2016): a stem, three stages of :math:`n = (\mathrm{depth} - 2)/6` blocks,
    global pooling.

    The stages are exposed as ``stem``, ``layer1``..``layer3`` so hooks can name them.
    """

    static_forward = True   # no branch on input values (mclib.infer.static_forward)

    def __init__(self, in_shape: Sequence[int], num_classes: int, depth: int = 20, width: int = 16):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            blocks = [BasicBlock(cin if j == 0 else cout, cout, 2 if (j == 0 and i > 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def vgg(in_shape: Sequence[int], num_classes: int, widths: Sequence[int | str] = (32, "M", 64, "M", 128, "M"),
        batch_norm: bool = False, hidden: int = 128) -> nn.Sequential:
    """VGG-style stack: 3x3 convs (with BatchNorm if ``batch_norm``), ``"M"`` = 2x2 max-pool, then a dense head."""
    layers, c, h, w = _conv_stack(in_shape, widths, batch_norm)
    layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
    return PoolFirst(*layers)


def _conv_stack(in_shape: Sequence[int], widths: Sequence[int | str], batch_norm: bool, init=None):
    """The convolutional part of a VGG: a 3x3 convolution (then BatchNorm if ``batch_norm``, then ReLU) per width,
    ``"M"`` a 2x2 max-pool (skipped once the map is 1 pixel). ``init(conv)`` re-draws each convolution's weights right
    after it is made. Returns ``(layers, channels, height, width)`` of the output."""
    c, h, w = in_shape
    layers: list[nn.Module] = []
    for v in widths:
        if v == "M":
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            continue
        conv = nn.Conv2d(c, int(v), 3, padding=1)
        if init is not None:
            init(conv)
        layers.append(conv)
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU())
        c = int(v)
    return layers, c, h, w


class ResNet18Cifar(nn.Module):
    r"""ResNet-18 for 32x32 inputs (He et al. 2016, as commonly adapted to CIFAR-10): a 3x3 stride-1 stem with
    BatchNorm and no max-pool, four stages of two :class:`BasicBlock` s of widths ``width``, 2, 4 and 8 times it
    (strides 1, 2, 2, 2), global average pooling and a linear read-out. At ``width=64`` and 10 classes it has
    11,173,962 parameters.

    The stages are exposed as ``stem``, ``layer1``..``layer4`` so hooks can name them.
    """

    static_forward = True   # no branch on input values (mclib.infer.static_forward)

    def __init__(self, in_shape: Sequence[int], num_classes: int, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stages.append(nn.Sequential(BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


#: VGG-16's convolution widths ("M" = 2x2 max-pool), as in Garipov et al.'s ``models/vgg.py`` (config[16]).
VGG16_WIDTHS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16(in_shape: Sequence[int], num_classes: int, batch_norm: bool = False, hidden: int = 512,
          dropout: float = 0.5, width: int = 64) -> nn.Sequential:
    r"""VGG-16 (-BN) for small images as in Garipov et al. (2018)'s curve code, the VGG of Zhao et al. (2020).

    Thirteen 3x3 convolutions with bias (each followed by BatchNorm if ``batch_norm``, then ReLU), widths
    :data:`VGG16_WIDTHS` with a 2x2 max-pool after each block (skipped once the map is 1 pixel), then
    Dropout(``dropout``)-Linear(512, ``hidden``)-ReLU-Dropout-Linear(``hidden``, ``hidden``)-ReLU-Linear(``hidden``,
    classes). Convolution weights are drawn from :math:`\mathcal N(0, 2 / (k^2 c_{out}))` with zero bias, as in the
    reference. On 3x32x32 inputs with 10 classes: 15,253,578 parameters with BatchNorm, 15,245,130 without.
    ``width`` scales every convolution's width by ``width / 64`` (64: the reference; the same layers, narrower, for
    the paper's code paths at test sizes, ``mclib/presets/derived/paper-smoke.toml``).
    """
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"vgg16 width = {width!r}: allowed: an integer >= 1 (64 is the reference)")
    widths = [v if v == "M" else max(1, int(v) * width // 64) for v in VGG16_WIDTHS]

    def garipov_init(conv: nn.Conv2d) -> None:
        nn.init.normal_(conv.weight, 0.0, (2.0 / (9 * conv.out_channels)) ** 0.5)
        nn.init.zeros_(conv.bias)

    layers, c, h, w = _conv_stack(in_shape, widths, batch_norm, garipov_init)
    layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Dropout(dropout),
               nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
    return PoolFirst(*layers)


def torchvision_model(arch: str, num_classes: int = 1000, weights_path: str | os.PathLike | None = None) -> nn.Module:
    """torchvision ``resnet18`` or ``googlenet``, with ImageNet weights from ``weights_path`` if that file exists.

    Weights are never downloaded: without a file the model is randomly initialised and a warning says so.
    """
    import torchvision.models as tvm

    if arch == "resnet18":
        model = tvm.resnet18(weights=None, num_classes=num_classes)
    elif arch == "googlenet":
        model = tvm.googlenet(weights=None, num_classes=num_classes, aux_logits=False, init_weights=True)
    else:
        raise ValueError(f"unknown torchvision architecture {arch!r}; use 'resnet18' or 'googlenet'")
    if weights_path is not None and Path(weights_path).exists():
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("aux")}
        model.load_state_dict(state)
    else:
        where = f"at {weights_path}" if weights_path else "(no weights_path given)"
        warnings.warn(f"no pretrained {arch} weights found {where}: the model is randomly initialised", stacklevel=2)
    return model


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build(arch: str, in_shape: Sequence[int] | None = None, num_classes: int | None = None,
          dataset: str | None = None, **kwargs) -> nn.Module:
    """Build architecture ``arch`` for ``in_shape`` (C, H, W) and ``num_classes``, normalisation first.

    Give either ``dataset`` (shape, classes and channel statistics come from :mod:`mclib.data`) or
    ``in_shape`` and ``num_classes`` (then inputs are only centred: mean 0.5, std 0.5 per channel,
    unless ``mean``/``std`` are passed). Extra keyword arguments go to the architecture.
    """
    mean = kwargs.pop("mean", None)
    std = kwargs.pop("std", None)
    if dataset is not None:
        meta = _data.info(dataset)
        in_shape = in_shape or meta.in_shape
        num_classes = num_classes or meta.num_classes
        mean, std = mean or meta.mean, std or meta.std
    if in_shape is None or num_classes is None:
        raise ValueError("build() needs dataset=... or both in_shape=(C, H, W) and num_classes=...")
    in_shape = tuple(int(s) for s in in_shape)
    if len(in_shape) != 3:
        raise ValueError(f"in_shape must be (C, H, W), got {in_shape}")
    if arch == "mlp":
        body = mlp(in_shape, num_classes, **kwargs)
    elif arch == "cnn":
        body = cnn(in_shape, num_classes, **kwargs)
    elif arch in ("vgg", "vgg_bn"):
        body = vgg(in_shape, num_classes, batch_norm=arch == "vgg_bn", **kwargs)
    elif arch in ("vgg16", "vgg16_bn"):
        body = vgg16(in_shape, num_classes, batch_norm=arch == "vgg16_bn", **kwargs)
    elif arch == "resnet18_cifar":
        body = ResNet18Cifar(in_shape, num_classes, **kwargs)
    elif re.fullmatch(r"resnet\d+", arch) and arch != "resnet18":
        body = ResNet(in_shape, num_classes, depth=int(arch[6:]), **kwargs)
    elif arch in ("resnet18", "googlenet"):
        body = torchvision_model(arch, num_classes, **kwargs)
        if dataset is None and mean is None:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    return with_normalization(body, mean or (0.5,) * in_shape[0], std or (0.5,) * in_shape[0])
