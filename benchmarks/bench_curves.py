"""Speed of curve training: one curve step against a plain training step and against Garipov et al.'s CurveNet.

Run: ``.venv/bin/python benchmarks/bench_curves.py``. Every ratio is a paired median of interleaved rounds at
one thread in process CPU time (``_timing.paired``), on one CIFAR-size batch (32 x 3x32x32), for VGG-16
(Garipov et al.'s main network, no BatchNorm, ~15M parameters) and the CIFAR ResNet-20 (BatchNorm).

* plain step: cross-entropy, backward, SGD (momentum 0.9, weight decay 5e-4) on the network's parameters;
* curve step (mclib): ``curves.objective`` (CE + weight decay on w(t)) at t ~ U(0, 1), backward, SGD with
  momentum on the bends (``Curve.bend_parameters``) -- what ``curves.train_curve`` does per batch;
* Garipov step: a faithful generic re-implementation of Garipov et al.'s CurveNet (github
  timgaripov/dnn-mode-connectivity, ``curves.py``): every layer with parameters holds one Parameter per
  control point (the endpoints frozen), forms ``w = sum_k c_k p_k`` in its own forward and adds
  ``sum(w ** 2)`` to the l2 term; same objective and optimiser as the mclib curve step.

``curve_step_over_plain_*`` = t_curve / t_plain, target <= 1.05; ``curve_step_over_garipov_*`` =
t_curve / t_garipov, target <= 1.0 (no slower than CurveNet).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from _timing import paired, single_thread
from mclib import curves, models

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
BATCH, WD, STEPS = 32, 5e-4, 2


def build(arch: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if arch == "vgg16":
        return models.vgg((3, 32, 32), 10, widths=VGG16, hidden=512)
    return models.build(arch, in_shape=(3, 32, 32), num_classes=10)


class _Coeffs:
    """What Garipov's CurveNet passes to every curve layer: the coefficients c(t), and the l2 sum it collects."""

    coeffs: torch.Tensor
    l2: torch.Tensor | float = 0.0


class GaripovLayer(nn.Module):
    """One layer of Garipov et al.'s CurveNet for any module with direct parameters (Conv2d, Linear, BatchNorm)."""

    def __init__(self, m0: nn.Module, m1: nn.Module, holder: _Coeffs):
        super().__init__()
        self.base, self.holder = copy.deepcopy(m0), holder
        self.pnames = [n for n, _ in m0.named_parameters(recurse=False)]
        for n in self.pnames:
            p0, p1 = getattr(m0, n).detach(), getattr(m1, n).detach()
            for j, (value, train) in enumerate(((p0, False), (0.5 * (p0 + p1), True), (p1, False))):
                self.register_parameter(f"{n}_{j}", nn.Parameter(value.clone(), requires_grad=train))
            delattr(self.base, n)

    def forward(self, x):
        for n in self.pnames:
            w = None
            for j, c in enumerate(self.holder.coeffs):
                p = getattr(self, f"{n}_{j}")
                if w is None:
                    w = p * c
                else:
                    w += p * c
            self.holder.l2 = self.holder.l2 + torch.sum(w ** 2)
            setattr(self.base, n, w)
        return self.base(x)


def garipov_curvenet(m0: nn.Module, m1: nn.Module) -> tuple[nn.Module, _Coeffs]:
    """A copy of ``m0`` whose parameterised leaf modules are replaced by :class:`GaripovLayer` s."""
    net, holder = copy.deepcopy(m0), _Coeffs()
    mods1 = dict(m1.named_modules())
    for name, mod in list(net.named_modules()):
        if name and list(mod.parameters(recurse=False)):
            parent_name, _, attr = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, attr, GaripovLayer(mod, mods1[name], holder))
    return net, holder


def main(rounds: int = 9) -> dict:
    out = {}
    with single_thread():
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(BATCH, 3, 32, 32, generator=g), torch.randint(0, 10, (BATCH,), generator=g)
        # per-round ratios spread by +-10% (VGG-16) and +-15% (ResNet-20, ~0.13 s steps) on a shared VM:
        # 9 rounds, and twice as many for the short ResNet-20 steps
        for arch, n_rounds in (("vgg16", rounds), ("resnet20", 2 * rounds)):
            m0, m1, plain = build(arch, 0), build(arch, 1), build(arch, 2).train()
            curve = curves.Curve([m0, m1], num_bends=1).train()
            gnet, holder = garipov_curvenet(m0, m1)
            gnet.train()
            opt_p = torch.optim.SGD(plain.parameters(), lr=1e-3, momentum=0.9, weight_decay=WD)
            opt_c = torch.optim.SGD(curve.bend_parameters(), lr=1e-3, momentum=0.9)
            opt_g = torch.optim.SGD([p for p in gnet.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
            gen = torch.Generator().manual_seed(1)

            def plain_step():
                for _ in range(STEPS):
                    loss = F.cross_entropy(plain(x), y)
                    opt_p.zero_grad(set_to_none=True)
                    loss.backward()
                    opt_p.step()

            def curve_step():
                for _ in range(STEPS):
                    t = torch.rand(1, generator=gen, dtype=torch.float64)[0]
                    loss = curves.objective(curve, x, y, t, weight_decay=WD)
                    opt_c.zero_grad(set_to_none=True)
                    loss.backward()
                    opt_c.step()

            def garipov_step():
                for _ in range(STEPS):
                    t = float(torch.rand(1, generator=gen, dtype=torch.float64)[0])
                    holder.coeffs = curves.bernstein(t, 2).float()
                    holder.l2 = 0.0
                    loss = F.cross_entropy(gnet(x), y) + 0.5 * WD * holder.l2
                    opt_g.zero_grad(set_to_none=True)
                    loss.backward()
                    opt_g.step()

            n_par = sum(p.numel() for p in plain.parameters())
            note = f"{n_par / 1e6:.1f}M parameters, batch {BATCH} x 3x32x32, {STEPS} steps per call"
            r = paired(f"curve_step_over_plain_{arch}", curve_step, plain_step, rounds=n_rounds, target=1.05,
                       direction="<=", note=note)
            out[r.name] = r
            r = paired(f"curve_step_over_garipov_{arch}", curve_step, garipov_step, rounds=n_rounds, target=1.0,
                       direction="<=", note=note)
            out[r.name] = r
    return out


if __name__ == "__main__":
    main()
