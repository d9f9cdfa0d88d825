"""What the paper preset costs, per chapter, from timed steps at the paper's sizes (issue 27).

Run: ``.venv/bin/python benchmarks/paper_cost.py [--device cuda] [--iters 3]``. On a GPU (the ``device`` tool, or
any CUDA host) it prints the projected GPU hours; on a CPU the projected CPU hours of this machine.

What is timed (after one warm-up step, ``--iters`` steps each, median seconds per step), for every architecture
the paper preset trains -- ResNet-20, VGG-16, VGG-16-BN, the CIFAR ResNet-18 -- on random 3x32x32 inputs (the
cost of a step does not depend on the pixels):

* ``train``: one SGD step of batch ``batch_size`` (base.toml's paper table, 128) through :func:`mclib.train.fit`
  with the paper recipe's crop-and-flip augmentation;
* ``curve``: one step of :func:`mclib.curves.train_curve` on a one-bend Bezier curve between two such models, at
  the same batch size;
* ``grad``: one input-gradient step of PGD (:func:`mclib.attacks.evasion.pgd`, one step) on a batch of 128 --
  the unit of every attack, FVO, bypass and Hessian-vector product (an HVP counted as two).

Each chapter's projection multiplies those by the number of steps its paper-preset sizes ask for
(:func:`chapter_steps`, from ``mclib/presets/*.toml``'s paper tables: epochs x 50000 / 128 training steps per
model, curve epochs, attack steps x inputs / 128, ...). It counts the dominant work only (training, curves,
attacks and optimisations), not evaluation passes, SOM fitting or lattice percolation (a10 runs on the CPU), and
models shared between chapters through the cache are counted in every chapter that needs them (the first pays),
so the sum over chapters is an upper bound on a whole build's. It is a projection from a few timed steps, not a
measured run.

The C chapters train each architecture on its own dataset (``datasets`` in their preset tables: Zhao et al.'s VGG
on CIFAR-10 and ResNet on SVHN, :func:`chapter_datasets`). A step costs the same on either (3x32x32 inputs, 10
classes, ``n_train`` images per epoch), so the dataset changes which models are trained -- the ResNet-20 endpoints
of c1, c2, c4 and c6 are SVHN models, shared among those chapters and not with the A and B chapters' CIFAR-10
ResNet-20 -- not the number of steps each costs.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mclib import config, curves, data, models, train  # noqa: E402
from mclib.attacks import evasion  # noqa: E402
from mclib.studies import bonafide, codes, detection, pairs, robustness, untrained  # noqa: E402
from mclib.studies import curves as curve_study  # noqa: E402

ARCHS = ("resnet20", "vgg16", "vgg16_bn", "resnet18_cifar")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device, iters: int) -> float:
    fn()  # warm-up (cuDNN autotuning, allocator)
    times = []
    for _ in range(iters):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def step_seconds(arch: str, device: torch.device, batch: int, iters: int) -> dict[str, float]:
    """Seconds per ``train``, ``curve`` and ``grad`` step of ``arch`` at batch ``batch`` (see the module doc)."""
    g = torch.Generator().manual_seed(0)
    X = torch.rand(batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    m0 = models.build(arch, dataset="cifar10").to(device)
    m1 = models.build(arch, dataset="cifar10").to(device)
    aug = data.augmentation("crop_flip", g)

    def fit_step():
        train.fit(m0, X, y, epochs=1, batch_size=batch, lr=0.05, optimizer="sgd", weight_decay=5e-4,
                  device=device, progress=False, augment=aug)

    curve = curves.Curve([m0, m1], kind="bezier", num_bends=1).to(device)

    def curve_step():
        curves.train_curve(curve, X, y, epochs=1, batch_size=batch, lr=0.015, weight_decay=5e-4,
                           device=device, progress=False)

    m0.eval()
    Xd, yd = X.to(device), y.to(device)

    def grad_step():
        evasion.pgd(m0, Xd, yd, eps=8 / 255, steps=1)

    return {"train": _timed(fit_step, device, iters), "curve": _timed(curve_step, device, iters),
            "grad": _timed(grad_step, device, iters)}


def chapter_steps(preset: str = "paper") -> dict[str, list[tuple[str, str, float]]]:
    """Per chapter, its dominant work at ``preset``'s sizes: ``(architecture, kind, steps)`` with kind ``train``,
    ``curve`` or ``grad`` (one step of batch 128; see the module doc)."""
    p = config.get_preset(preset)
    per_epoch = math.ceil(p.n_train / p.batch_size)
    model = p.epochs * per_epoch                      # training steps of one standard model
    batches = lambda n: math.ceil(n / 128)            # noqa: E731  grad steps per 128 inputs
    c, r, rb, pa, d, s, u = (cls.Sizes.read(p) for cls in (curve_study, bonafide, robustness, pairs, detection, codes,
                                                           untrained))
    out: dict[str, list[tuple[str, str, float]]] = {}
    # C1: every architecture at the first seed pair, the main one at every pair; a curve per pair
    main, n_pairs = c.archs[0], len(c.seed_pairs)
    out["c1_curves"] = ([(a, "train", 2 * model) for a in c.archs] + [(main, "train", 2 * (n_pairs - 1) * model)]
                        + [(a, "curve", c.curve_epochs * per_epoch) for a in c.archs]
                        + [(main, "curve", (n_pairs - 1) * c.curve_epochs * per_epoch)])
    # C2/C3/C5: 2 triggers x 2 modes x 2 seeds backdoored models (main arch) and the second arch's settings; per
    # setting and bonafide size a curve and three trained baselines of curve_steps each; the path-aware attacker
    n_set, n_set2 = len(r.triggers) * 2, len(r.second_settings)
    repairs = lambda k, ns: 4 * r.curve_steps * k * len(ns)   # noqa: E731 curve + fine-tune + scratch + prune
    second_attacked = ["in-support", "single"] in [list(s) for s in r.second_settings]
    out["c2_backdoor_repair"] = [(p.arch, "train", (2 * n_set + 1) * model),   # + the untampered reference model
                                 (r.second_arch, "train", 2 * n_set2 * model),
                                 (p.arch, "curve", repairs(n_set, r.n_bonafide) / 4),
                                 (p.arch, "train", 3 * repairs(n_set, r.table_n) / 4),
                                 (r.second_arch, "curve", repairs(n_set2, r.second_n) / 4),
                                 (r.second_arch, "train", 3 * repairs(n_set2, r.second_n) / 4),
                                 (p.arch, "grad", 3 * len(r.triggers) * r.attack_steps * batches(1000)),
                                 (r.second_arch, "grad", 2 * second_attacked * r.attack_steps * batches(1000))]
    # C4: the clean endpoints of every seed pair, error injection, a repair sweep per pair; the second architecture
    # (its own dataset) at the first pair, over its bonafide sizes
    k4 = len(r.c4_seed_pairs)
    out["c4_error_injection"] = [(p.arch, "train", 2 * k4 * model), (p.arch, "train", 2 * k4 * r.inject_steps),
                                 (p.arch, "curve", k4 * r.curve_steps * len(r.n_bonafide)),
                                 (r.second_arch, "train", 2 * model + 2 * r.inject_steps),
                                 (r.second_arch, "curve", r.curve_steps * len(r.second_n))]
    # C6/C7: per architecture a regular and a PGD-trained endpoint (each step: adv_steps grad steps + a train step),
    # a curve; the map's extra radii; PGD along the curves; input-Hessian spectra (an HVP ~ 2 grad steps)
    out["c6_robustness_hessian"] = []
    for a in rb.archs:
        extra = len(rb.map_train_eps) - 1 if a in rb.map_archs else 0
        out["c6_robustness_hessian"] += [
            (a, "train", (2 + extra) * model), (a, "grad", (1 + extra) * rb.adv_steps * model),
            (a, "curve", (1 + extra) * rb.curve_epochs * per_epoch),
            (a, "grad", rb.n_t * batches(rb.n_eval) * rb.eval_steps
             + 2 * rb.n_t * batches(rb.n_hessian) * rb.hessian_iters),
            (a, "grad", 2 * (1 + extra) * len(rb.map_eval_eps) * rb.map_n_t * batches(rb.map_n_eval)
             * rb.eval_steps)]
    # A1-A3: both architectures at every training seed, the map's shorter runs; the bypass of the barrier pairs
    seeds = len(pa.train_seeds)
    archs = (p.arch, pa.second_arch)
    out["a1_real_paths"] = ([(a, "train", seeds * model + sum(e * per_epoch for e in pa.map_epochs[:-1]))
                             for a in archs]
                            + [(a, "grad", batches(pa.max_pairs) * pa.iterations * pa.max_rounds
                                * (1 + len(pa.map_mse_weights))) for a in archs])
    # A4/A5: FVO from noise and the interpolated pairs' optimisation, then their bypass
    out["a4_interpolated_synthetic"] = [(a, "grad", pa.fvo_budget_per_class * 10 * pa.fvo_steps / 128
                                         + 2 * pa.interp_budget * pa.interp_steps / 128
                                         + batches(pa.interp_budget) * pa.iterations * pa.max_rounds)
                                        for a in archs] + [(pa.second_arch, "train", model)]
    # A6: FVO and bypass on the untrained networks
    out["a6_untrained"] = [(a, "grad", n * u.pairs_per_class * 2 * (f + b * u.rounds) / 128)
                           for a, n, f, b in zip(u.archs, u.n_classes, u.fvo_steps, u.bypass_iterations)]
    # A8/A9: the standard model; PGD, the optimisation attack at two strengths, the adaptive attack, the map
    out["a8_detection"] = [(p.arch, "train", model),
                           (p.arch, "grad", batches(d.n) * (d.pgd_steps + d.opt_steps_first
                                                               + d.opt_steps_confident
                                                               + d.adaptive_steps * d.adaptive_points)
                            + len(d.map_kappas) * len(d.map_extra_steps) * batches(d.map_n)
                            * d.map_opt_steps)]
    # B: the SOM chapter's models; the minimal-eps searches (bisection over resolution, PGD steps each)
    vuln = sum(v["steps"] for v in s.vulnerability.values())
    out["b_internal_codes"] = [(a, "train", model) for a in s.archs] + [
        (a, "grad", batches(s.b3_budget) * math.ceil(math.log2(s.resolution) + 1) * vuln) for a in s.archs]
    return out


def chapter_datasets(preset: str = "paper") -> dict[str, dict[str, str]]:
    """Per C chapter, the dataset each of its architectures is trained and measured on at ``preset``
    (:func:`mclib.data.dataset_of` over the chapter's ``datasets`` table; the preset's dataset where none is named)."""
    p = config.get_preset(preset)
    c, r, rb = (cls.Sizes.read(p) for cls in (curve_study, bonafide, robustness))
    on = lambda sizes, archs: {a: data.dataset_of(a, sizes.datasets, p.dataset) for a in archs}  # noqa: E731
    repair = on(r, (p.arch, r.second_arch))
    return {"c1_curves": on(c, c.archs), "c2_backdoor_repair": repair, "c4_error_injection": repair,
            "c6_robustness_hessian": on(rb, dict.fromkeys([*rb.archs, *rb.map_archs]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=3, help="timed steps per kind and architecture (after a warm-up)")
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on a CPU (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = config.get_device(args.device)
    batch = config.get_preset(args.preset).batch_size
    work, where = chapter_steps(args.preset), chapter_datasets(args.preset)
    needed = sorted({a for items in work.values() for a, _, _ in items})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"Timing steps at batch {batch}, 3x32x32, on {name} ({args.iters} steps each after a warm-up):")
    secs = {}
    for a in needed:
        secs[a] = step_seconds(a, device, batch, args.iters)
        print(f"  {a:<16} " + "  ".join(f"{k} {v * 1000:8.1f} ms" for k, v in secs[a].items()), flush=True)
    unit = "GPU" if device.type == "cuda" else "CPU"
    print(f"\nProjected {unit} hours per chapter at the {args.preset} preset (dominant work only; see the module doc):")
    total = 0.0
    for chapter, items in sorted(work.items()):
        hours = sum(secs[a][k] * n for a, k, n in items) / 3600
        total += hours
        top = max(items, key=lambda it: secs[it[0]][it[1]] * it[2])
        on = "; " + ", ".join(f"{a} on {d}" for a, d in where[chapter].items()) if chapter in where else ""
        print(f"  {chapter:<26} {hours:10.1f} h   (most: {top[0]} {top[1]}, {top[2]:,.0f} steps{on})")
    print(f"  {'sum (models counted per chapter)':<26} {total:10.1f} h")
    print("  not modelled: a7_barrier_evolution and a10_percolation (small CNN, lattices on the CPU), c8 and report "
          "(read records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
