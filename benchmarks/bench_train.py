"""Speed of the gradient passes: each heavy pass's fraction of the same-run GEMM peak, next to the forward engine's.

Run: ``.venv/bin/python benchmarks/bench_train.py``. Every number is a paired median of interleaved rounds at
one thread in process CPU time (``_timing.paired``). A pass's *fraction of peak* is its rate in floating-point
operations per CPU second over that of a 1024 x 1024 fp32 matrix product timed in the same rounds
(``_timing.peak_fraction``); the operations are counted with ``torch.utils.flop_counter``'s formulas on one
call of the pass itself -- forward *and* backward matrix products and convolutions (2 per multiply-add), not
the elementwise work, so the fraction is a lower bound on how busy the core is. The passes, on 1x28x28 inputs:

* ``train_cnn``: :func:`mclib.train.fit` of the quick CNN (``models.build("cnn")``), 4 Adam steps of batch 128;
* ``train_vgg_bn``: the same for the small VGG-BN (``models.build("vgg_bn")``), 2 steps;
* ``curve``: :func:`mclib.curves.train_curve` on a one-bend Bezier curve between two quick CNNs, 4 SGD steps;
* ``pgd``: :func:`mclib.attacks.evasion.pgd` on 128 inputs, 5 steps (L-inf, eps 0.3), the CNN in eval mode;
* ``trigger_curve`` / ``trigger_model``: :func:`mclib.attacks.backdoor.optimise_trigger` (the path-aware
  trigger attack of claim C5), 8 projected-Adam steps of batch 128 against the one-bend curve (4 points per
  step) and against one quick CNN;
* ``fvo``: :func:`mclib.synth.fvo`, 32 Adam (:class:`mclib.optim.RowAdam`) steps on 64 inputs;
* ``fvo_resnet8``: the same, 16 steps, on ResNet-8 (BatchNorm folded into its convolutions, issue 31's fourth round);
* ``bypass``: one round of :func:`mclib.paths.bypass` (32 RowAdam iterations) on 32 pairs;
* ``update_bn``: :func:`mclib.curves.update_bn` of the VGG-BN on 2048 inputs (train-mode forward passes; what
  :meth:`mclib.curves.Curve.at` does at every interior ``t``: 17% of c1's profiled time);
* ``hvp``: 8 input Hessian-vector products (:func:`mclib.hessian.input_hvp`, double backward) on 128 inputs.

``forward_engine_fraction_of_gemm_peak_cnn28`` is the forward engine (:func:`mclib.paths.linear_losses`) in the
same run, for comparison. Every gradient pass has a faster path than the code before issue 31 (channels-last
convolutions: in ``fit`` for ``train_*``, in the curve objective, ``torchutil.channels_last`` in PGD, FVO and
bypass); ``<pass>_new_vs_old`` pairs that code (``old_fit`` and ``old_optimise_trigger`` re-implemented below
as they were; the others with the channels-last helpers replaced by no-ops, :func:`old_code`) against today's in
one run (target 1.5x, the issue's), and the old side's fraction of peak is printed next to the new one's (new
fraction / ratio). The FLOPs are those of today's pass: ``optimise_trigger`` no longer computes the weights'
(or bends') gradients, so its old code's fraction counts only the work it needed.

``optimise_trigger`` (issue 31, second round): the largest gradient pass of c2 in a profile of the quick chapter
(cProfile, one thread: 128 s of 449 s profiled, against 181 s of training and 108 s of ``data.load``); it
called ``loss.backward()``, which also differentiated every weight (or the curve's bends) and left their
``.grad`` filled, on NCHW tensors. Now ``torch.autograd.grad`` on the pattern only, channels-last models and
curve points (:meth:`mclib.curves.Curve.forward_frozen`): 1.64-1.78x (curve) and 1.59x (model) paired in two
runs, patterns equal to 3e-8 after 8 steps; fraction of peak 0.08-0.10 -> 0.15-0.16 (curve), 0.10-0.11 -> 0.15-0.17
(model). The same two runs (load average 1-4) for the other passes, new/old: train_cnn 1.37-1.44x (0.24-0.29 of
peak), train_vgg_bn 1.44-1.53x (0.41-0.46), curve 1.48-1.49x (0.26-0.28), pgd 1.43-1.57x (0.20-0.21), fvo
1.39-1.68x (0.16-0.19), bypass 1.14-1.16x (0.07), hvp 0.16-0.18 of peak; forward engine 0.44-0.60.
``update_bn`` channels-last (third round, c1's profile): 1.78x (3 rounds), 0.18 -> 0.33 of peak; 1.73x for 4000
inputs in a separate paired run; C1's verdict and values unchanged but for one test image (56.4% -> 56.5%).

Third round (issue 31): ReLU before 2x2 max-pooling ran on the full 128 x 16 x 28 x 28 activation, forward and
backward (``threshold_backward`` 12% and ``clamp_min`` 6% of a CNN training step, plus their copies).
:class:`mclib.models.PoolFirst` runs each ReLU-MaxPool pair of the CNN and VGG bodies as pool-then-ReLU: the
same numbers bit for bit (``tests/test_pool_first.py``; the quick book's 21 claim records came out identical),
the ReLU on a quarter of the elements. The "old" side of every pair now also runs the written order
(:func:`written_order`). One run, one thread, quiet machine but for the test suite on the other core, new/old
and fraction of peak: train_cnn 1.69x (0.34), train_vgg_bn 1.67x (0.47), curve 1.42x (0.28), pgd 1.84x (0.21),
trigger_curve 2.20x (0.20), trigger_model 2.12x (0.26), fvo 1.81x (0.25), bypass 1.23x (0.09), update_bn 2.68x
(0.51), hvp 0.23 of peak; forward engine 0.58. What bounds the two under 1.5x (``torch.profiler``): the curve step
is convolutions 43%, max-pooling forward and backward with its int64 indices 17% and zero-fills 11% (the
curve's own point assembly, ``_CurvePoint``, 6%); bypass, as before, its path checks and small batches.

Fourth round (issue 31): in eval mode BatchNorm is an affine map, so FVO and bypass fold it into the convolution
before it (:func:`mclib.torchutil.fold_batchnorm`, ``torch.fx``'s conv-BN fusion; the old side keeps it):
``fvo_resnet8`` 1.35x, 0.32 -> 0.43 of peak, losses equal to 2e-5 after 16 steps. The passes without BatchNorm are
unchanged by it (the same run, the test suite on the other core): train_cnn 1.68x (0.30), train_vgg_bn 1.50x
(0.43), curve 1.71x (0.30), pgd 1.68x (0.23), trigger_curve 1.85x (0.22), trigger_model 1.95x (0.25), fvo 1.86x
(0.23), bypass 1.19x (0.07), update_bn 2.00x (0.31), hvp 0.25 of peak; forward engine 0.58. Bypass's own overhead
went down on both sides of its pair: its thousands of segment checks no longer recompute the model's signature
(:func:`mclib.infer.pinned`) or compare the frozen graph with the eager copy (:func:`mclib.infer.static_forward`):
12 -> 9.6 ms per check of 5 pairs x 64 points on the quick CNN.

Measured (issue 31; 2-core shared Intel Xeon, AVX-512, load average 5-9, two runs of 5 rounds; fraction of
the GEMM peak, old -> new, and the paired speed-up): forward engine 0.43-0.44; train_cnn 0.17-0.20 ->
0.22-0.25 (1.26-1.31x); train_vgg_bn 0.24-0.26 -> 0.34-0.35 (1.32-1.42x); curve 0.14-0.16 -> 0.19-0.21
(1.30-1.32x); pgd 0.11-0.12 -> 0.16-0.17 (1.39-1.50x); fvo 0.10-0.11 -> 0.14-0.16 (1.34-1.53x); bypass
0.055-0.061 -> 0.061-0.073 (1.10-1.19x); hvp 0.16-0.17 (unchanged). What bounds them (``torch.profiler``, self CPU time):

* training (CNN, after the change): convolution forward/backward and matrix products ~35%; the rest is
  memory-bound elementwise work on the 128 x 16 x 28 x 28 activations (ReLU forward and backward ~23%, the
  zero-fills of max-pool's and the optimiser's gradients ~13%, max-pool forward/backward ~15%, layout
  copies ~7%); ``Adam.step`` 7%, ``zero_grad`` 0.1%, the per-step ``.item()`` 0.0%. ``foreach=True`` Adam
  measured 0.95x and ``fused=True`` 1.07x [0.93-1.41] over the default in the new ``fit``: left out;
* PGD / FVO: the same elementwise share at batch 128 / 64; before the change NCHW max-pooling alone took a
  third of PGD's time (22 ms a call against 5.5 ms channels-last);
* bypass: one round is mostly its path checks (the forward engine) and per-operation overhead of small
  batches (only the pairs with a barrier, 15 of 32 here, take Adam steps), so the layout gains little;
* HVP (double backward): channels-last measured 0.69x (slower), so it stays NCHW.
"""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from _timing import forward_flops, paired, peak_fraction, single_thread
from mclib import curves, hessian, models, paths, synth, train
from mclib.attacks import backdoor, evasion
from mclib.torchutil import eval_mode

SHAPE = (1, 28, 28)


class _FlopCount(TorchDispatchMode):
    """``FlopCounterMode``'s formulas without its module tracker (whose backward hooks refuse
    ``torch.autograd.grad`` on a leaf, what every input-gradient pass calls)."""

    def __init__(self):
        super().__init__()
        self.flops, self.registry = 0, FlopCounterMode(display=False).flop_registry

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(fn) -> float:
    """Floating-point operations (2 per multiply-add) of matrix products and convolutions, forward and
    backward, in one call of ``fn`` (``torch.utils.flop_counter``'s formulas, on every dispatched op)."""
    with _FlopCount() as counter:
        fn()
    return float(counter.flops)


def old_fit(model, X, y, batch_size, lr, generator):
    """:func:`mclib.train.fit`'s loop before issue 31 (Adam, default cross-entropy, no hooks): NCHW tensors,
    ``torch.optim.Adam`` with its default (per-parameter) implementation, one ``.item()`` per step."""
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    order = torch.randperm(len(X), generator=generator)
    for i in range(0, len(X), batch_size):
        idx = order[i:i + batch_size]
        value = F.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        losses.append(value.item())
    model.eval()
    return losses


def old_optimise_trigger(curve_or_models, X, y, trigger, mode="single", target=0, num_classes=10, steps=200,
                         lr=0.05, batch_size=128, n_t=4, kappa=5.0, init="random", generator=None):
    """:func:`mclib.attacks.backdoor.optimise_trigger`'s loop before issue 31 (``loss.backward()``, which also
    differentiates the models' weights or the curve's bends, NCHW): the reference of the ``trigger`` pass."""
    trig = backdoor.Trigger.make(trigger)
    Xa, ya = X, backdoor.attack_labels(y, mode, target, num_classes)
    if mode == "single":
        Xa, ya = X[y != target], ya[y != target]
    is_curve = isinstance(curve_or_models, curves.Curve)
    models_ = None if is_curve else list(curve_or_models)
    p = backdoor._start_pattern(init, trig, X.shape[1], generator).clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    n_views = n_t if is_curve else len(models_)
    for m in ([curve_or_models] if is_curve else models_):
        m.eval()
    for _ in range(steps):
        idx = torch.randint(len(Xa), (min(batch_size, len(Xa)),), generator=generator)
        xb, yb = Xa[idx], ya[idx]
        xt = backdoor.Trigger(trig.size, trig.position, pattern=p).apply(xb)
        if is_curve:
            ts = (torch.arange(n_t, dtype=torch.float64) + torch.rand(n_t, generator=generator, dtype=torch.float64)) / n_t
            outs = [curve_or_models(xt, t) for t in ts]
        else:
            outs = [m(xt) for m in models_]
        loss = sum(backdoor.trigger_margin_loss(o, yb, kappa).mean() for o in outs) / n_views
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            p.clamp_(0.0, 1.0)
    return backdoor.Trigger(trig.size, trig.position, pattern=p.detach())


@contextlib.contextmanager
def _nothing(model):
    yield model


@contextlib.contextmanager
def written_order():
    """The networks' ReLU-MaxPool pairs in their written order (``nn.Sequential.forward`` for
    :class:`mclib.models.PoolFirst`), as before issue 31's third round."""
    saved = models.PoolFirst.forward
    models.PoolFirst.forward = torch.nn.Sequential.forward
    try:
        yield
    finally:
        models.PoolFirst.forward = saved


def _in_written_order(fn):
    """``fn`` run under :func:`written_order`."""
    def run():
        with written_order():
            return fn()
    return run


def old_code(fn):
    """``fn`` run as the code before issue 31: the channels-last helpers that the curve objective, PGD, FVO and
    bypass call (``torchutil.channels_last``/``channels_last_weight``) replaced by no-ops, and ReLU before
    max-pooling (:func:`written_order`)."""
    def run():
        saved = (evasion.channels_last, synth.for_input_gradients, paths.for_input_gradients,
                 curves._torchutil.channels_last_weight)
        evasion.channels_last = _nothing
        synth.for_input_gradients = paths.for_input_gradients = eval_mode     # no layout change, no BN folding
        curves._torchutil.channels_last_weight = lambda w: w
        try:
            with written_order():
                return fn()
        finally:
            (evasion.channels_last, synth.for_input_gradients, paths.for_input_gradients,
             curves._torchutil.channels_last_weight) = saved
    return run


def _net(arch: str, seed: int):
    torch.manual_seed(seed)
    return models.build(arch, in_shape=SHAPE, num_classes=10)


def _data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


def _agree(name: str, fn) -> None:
    """Print how far the new code's result is from the old code's (max |difference|)."""
    a, b = old_code(fn)(), fn()
    print(f"    {name}: max |new - old| = {float((a - b).abs().max()):.1e}", flush=True)


def _pass(name: str, fn, rounds: int, out: dict, old=None, note: str = "") -> None:
    """Time ``fn``'s fraction of peak (and, with ``old``, the paired speed-up over it); record both in ``out``."""
    fn()                                            # first-call costs out of the count and the timing
    flops = count_flops(fn)
    ratio = None
    if old is not None:
        ratio = paired(f"{name}_new_vs_old", old, fn, rounds=rounds, target=1.5, note=note)
        out[ratio.name] = ratio
    peak = peak_fraction(f"{name}_fraction_of_gemm_peak", fn, flops, rounds=rounds, target=None, note=note)
    out[peak.name] = peak
    ms = 1e3 * peak.candidate_s
    line = f"    {name}: {flops / 1e9:.2f} GFLOP per call, {ms:.0f} ms cpu, {peak.cpu:.3f} of the GEMM peak"
    if ratio is not None:
        line += (f"; old code {1e3 * ratio.reference_s:.0f} ms, {peak.cpu / ratio.cpu:.3f} of peak "
                 f"(new/old {ratio.cpu:.2f}x)")
    print(line, flush=True)


def _train_passes(rounds: int, out: dict) -> None:
    for arch, n in (("cnn", 512), ("vgg_bn", 256)):
        X, y = _data(n)
        net = _net(arch, 0)
        state = copy.deepcopy(net.state_dict())

        def new(net=net, X=X, y=y, state=state):
            net.load_state_dict(state)
            return train.fit(net, X, y, epochs=1, batch_size=128, lr=1e-3, generator=torch.Generator().manual_seed(0),
                             progress=False)

        def old(net=net, X=X, y=y, state=state):
            net.load_state_dict(state)
            with written_order():
                return old_fit(net, X, y, 128, 1e-3, torch.Generator().manual_seed(0))

        a, b = torch.tensor(old()), torch.tensor(new())
        note = f"{n // 128} Adam steps of batch 128; max |loss new - old| {float((a - b).abs().max()):.1e}"
        _pass(f"train_{arch}", new, rounds, out, old=old, note=note)


def main(rounds: int = 5) -> dict:
    out = {}
    with single_thread():
        cnn = _net("cnn", 0).eval()
        g = torch.Generator().manual_seed(0)
        A, C = torch.rand(32, *SHAPE, generator=g), torch.rand(32, *SHAPE, generator=g)
        t = torch.randint(0, 10, (32,), generator=g)
        fwd = lambda: paths.linear_losses(cnn, A, C, t, 100)  # noqa: E731
        fwd()
        r = peak_fraction("forward_engine_fraction_of_gemm_peak_cnn28", fwd, forward_flops(cnn, A[:1]) * 32 * 100,
                          rounds=rounds, target=0.5, note="paths.linear_losses, 32 x 100 points")
        out[r.name] = r

        _train_passes(rounds, out)

        X, y = _data(512)
        curve = curves.Curve([_net("cnn", 0), _net("cnn", 1)], num_bends=1)
        bends = [p.detach().clone() for p in curve.bend_parameters()]

        def curve_pass():
            with torch.no_grad():
                for p, b in zip(curve.bend_parameters(), bends):
                    p.copy_(b)
            return curves.train_curve(curve, X, y, epochs=1, batch_size=128, generator=torch.Generator().manual_seed(0),
                                      progress=False)
        _pass("curve", curve_pass, rounds, out, old=old_code(curve_pass), note="4 SGD steps of batch 128, quick CNN endpoints, 1 bend")

        Xa, ya = X[:128], y[:128]
        pgd = lambda: evasion.pgd(cnn, Xa, ya, eps=0.3, steps=5, generator=torch.Generator().manual_seed(0))  # noqa: E731
        _agree("pgd", pgd)
        _pass("pgd", pgd, rounds, out, old=old_code(pgd), note="128 inputs, 5 steps")
        trig = backdoor.Trigger(size=3, position="bottom_right")
        for what, obj in (("trigger_curve", curve), ("trigger_model", [cnn])):
            new = lambda obj=obj: backdoor.optimise_trigger(  # noqa: E731
                obj, X, y, trig, steps=8, generator=torch.Generator().manual_seed(0)).pattern
            old = _in_written_order(lambda obj=obj: old_optimise_trigger(
                obj, X, y, trig, steps=8, generator=torch.Generator().manual_seed(0)).pattern)
            print(f"    {what}: max |new - old| pattern = {float((new() - old()).abs().max()):.1e}", flush=True)
            _pass(what, new, rounds, out, old=old,
                  note="8 projected-Adam steps, batch 128" + (", n_t = 4 points" if what == "trigger_curve" else ""))
        fvo = lambda: synth.fvo(cnn, torch.arange(64) % 10, SHAPE, steps=32,  # noqa: E731
                                generator=torch.Generator().manual_seed(0), progress=False)
        _agree("fvo", lambda: fvo().loss)
        _pass("fvo", fvo, rounds, out, old=old_code(fvo), note="64 inputs, 32 RowAdam steps")
        resnet = _net("resnet8", 0).eval()      # BatchNorm: folded into the convolutions (torchutil.fold_batchnorm)
        fvo_rn = lambda: synth.fvo(resnet, torch.arange(64) % 10, SHAPE, steps=16,  # noqa: E731
                                   generator=torch.Generator().manual_seed(0), progress=False)
        _agree("fvo_resnet8", lambda: fvo_rn().loss)
        _pass("fvo_resnet8", fvo_rn, rounds, out, old=old_code(fvo_rn), note="ResNet-8 (BatchNorm), 64 inputs, 16 RowAdam steps")
        kw = dict(iterations=32, max_rounds=1, num_points=32, tolerance=0.0, progress=False)   # bend every pair with a gap
        bypass = lambda: paths.bypass(cnn, A, C, t, **kw)  # noqa: E731
        _pass("bypass", bypass, rounds, out, old=old_code(bypass),
              note="32 pairs, 1 round of 32 RowAdam iterations (with its path checks)")
        vgg, Xb = _net("vgg_bn", 0), _data(2048)[0]
        bn_old = _in_written_order(lambda: torch.optim.swa_utils.update_bn([Xb[i:i + 256] for i in range(0, len(Xb), 256)], vgg))
        _pass("update_bn", lambda: curves.update_bn(vgg, Xb), rounds, out, old=bn_old,
              note="VGG-BN running statistics re-estimated on 2048 inputs (Curve.at at every interior t), NCHW before")
        V = torch.randn(128, 784, generator=g)
        hvp = hessian.input_hvp(cnn, Xa, ya)
        _pass("hvp", lambda: [hvp(V) for _ in range(8)], rounds, out, note="128 inputs, 8 products, graph built once")
    return out


if __name__ == "__main__":
    main()
