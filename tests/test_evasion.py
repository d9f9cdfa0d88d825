"""Evasion attacks: FGSM/PGD against adversarial-robustness-toolbox, the optimisation attack and the
adaptive attack of the detection chapter (mclib.attacks.evasion)."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mclib.attacks import evasion


def _model(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(4 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 3))
    return m.eval()


def _trained():
    """A small CNN trained on three classes of the offline 8x8 digits (a few seconds)."""
    from mclib import data
    X, y = data.load("digits", "train")
    keep = y < 3
    X, y = X[keep], y[keep]
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    return model.eval(), X, y


@pytest.fixture(scope="module")
def setup():
    model, X, y = _trained()
    with torch.no_grad():
        ok = (model(X).argmax(1) == y).nonzero()[:, 0][:24]
    return model, X[ok], y[ok]


def _loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_pgd_raises_loss_and_respects_ball(setup, norm, eps):
    model, x, y = setup
    adv = evasion.pgd(model, x, y, eps=eps, steps=10, norm=norm, generator=torch.Generator().manual_seed(0))
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert _loss(model, adv, y).mean() > _loss(model, x, y).mean() + 0.05


def test_fgsm_raises_loss_and_respects_ball(setup):
    model, x, y = setup
    adv = evasion.fgsm(model, x, y, 0.1)
    assert ((adv - x).abs().amax() <= 0.1 + 1e-6) and adv.min() >= 0 and adv.max() <= 1
    assert _loss(model, adv, y).mean() > _loss(model, x, y).mean()


def _art(model):
    pytest.importorskip("art")
    from art.estimators.classification import PyTorchClassifier
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=3,
                             clip_values=(0.0, 1.0), device_type="cpu")


def test_fgsm_matches_art(setup):
    from art.attacks.evasion import FastGradientMethod
    model, x, y = setup
    clf = _art(model)
    ref = FastGradientMethod(clf, norm=np.inf, eps=0.1, targeted=False).generate(x.numpy(), y=np.eye(3)[y.numpy()])
    ours = evasion.fgsm(model, x, y, 0.1).numpy()
    assert np.abs(ours - ref).max() < 1e-5


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.02), ("l2", 0.5, 0.1)])
def test_pgd_matches_art(setup, norm, eps, step):
    from art.attacks.evasion import ProjectedGradientDescentNumpy
    model, x, y = setup
    clf = _art(model)
    art_norm = np.inf if norm == "linf" else 2
    ref = ProjectedGradientDescentNumpy(clf, norm=art_norm, eps=eps, eps_step=step, max_iter=5, targeted=False,
                                        num_random_init=0, batch_size=64, verbose=False
                                        ).generate(x.numpy(), y=np.eye(3)[y.numpy()])
    ours = evasion.pgd(model, x, y, eps=eps, steps=5, step_size=step, norm=norm, random_start=False).numpy()
    # identical up to float rounding: a pixel whose gradient is ~0 may take the other sign
    close = np.abs(ours - ref).reshape(len(x), -1) < 1e-4
    assert close.mean() > 0.99


def test_optimisation_attack_targeted(setup):
    model, x, y = setup
    target = (y + 1) % 3
    adv, info = evasion.optimisation_attack(model, x, target, lr=0.05, steps=100, return_info=True)
    assert adv.min() >= 0 and adv.max() <= 1
    assert _loss(model, adv, target).mean() < _loss(model, x, target).mean()
    assert info["success"].float().mean() > 0.8
    assert (info["steps"] == 100).all()


def test_optimisation_attack_early_stops(setup):
    model, x, y = setup
    target = (y + 1) % 3
    weak, iw = evasion.optimisation_attack(model, x, target, lr=0.05, steps=150, stop_on_success=True,
                                           return_info=True)
    strong, is_ = evasion.optimisation_attack(model, x, target, lr=0.05, steps=150, stop_loss=0.05,
                                              return_info=True)
    ok = iw["success"]
    assert ok.float().mean() > 0.8
    # stopped at the first success: fewer steps, a smaller change and a higher loss than run to confidence
    assert (iw["steps"][ok] <= is_["steps"][ok]).all() and iw["steps"].float().mean() < is_["steps"].float().mean()
    assert iw["loss"][ok].median() > is_["loss"][ok].median()
    assert (weak - x).flatten(1).norm(dim=1).mean() < (strong - x).flatten(1).norm(dim=1).mean()
    reached = is_["loss"] < 0.05
    assert reached.float().mean() > 0.8
    # a per-input threshold tensor works as well
    _, it = evasion.optimisation_attack(model, x, target, lr=0.05, steps=50, stop_loss=torch.full((len(x),), 0.05),
                                        return_info=True)
    assert it["steps"].max() <= 50


def test_optimisation_attack_batch_equals_single(setup):
    # in float64 a batched run equals one input at a time (in float32, Adam's normalised step can turn a
    # rounding-level gradient difference into a +-lr step on a pixel the loss hardly depends on)
    model, x, y = setup
    model = copy.deepcopy(model).double()
    x = x[:4].double()
    target = (y[:4] + 2) % 3
    batch = evasion.optimisation_attack(model, x, target, lr=0.05, steps=30, stop_on_success=True)
    single = torch.cat([evasion.optimisation_attack(model, x[i:i + 1], target[i:i + 1], lr=0.05, steps=30,
                                                    stop_on_success=True) for i in range(4)])
    assert torch.allclose(batch, single, atol=1e-10)


def test_optimisation_attack_untargeted(setup):
    model, x, y = setup
    adv = evasion.optimisation_attack(model, x, y, lr=0.05, steps=300, targeted=False, stop_on_success=True)
    assert _loss(model, adv, y).mean() > _loss(model, x, y).mean() + 0.5
    with torch.no_grad():     # the MSE pull toward the source limits how many flip within the budget
        assert (model(adv).argmax(1) != y).float().mean() > 0.25


def test_adaptive_pgd_lowers_barrier(setup):
    model, x, y = setup
    target = (y + 1) % 3
    # the detector's references: real images of the target class (lowest index first)
    refs = torch.stack([torch.stack([x[y == t][j] for j in range(2)]) for t in target.tolist()])
    kw = dict(eps=0.3, steps=20, num_points=6, generator=None, random_start=False)
    plain = evasion.adaptive_pgd(model, x, target, refs, barrier_weight=0.0, **kw)
    adapt = evasion.adaptive_pgd(model, x, target, refs, barrier_weight=5.0, **kw)
    assert (adapt - x).abs().amax() <= 0.3 + 1e-6 and adapt.min() >= 0 and adapt.max() <= 1
    with torch.no_grad():
        b_plain = evasion.barrier_surrogate(model, plain, refs, target, 16)
        b_adapt = evasion.barrier_surrogate(model, adapt, refs, target, 16)
    assert b_adapt.mean() < 0.9 * b_plain.mean()
    assert (b_adapt < b_plain).float().mean() > 0.8


def test_bad_input():
    model = _model()
    with pytest.raises(ValueError, match="batch size"):
        evasion.optimisation_attack(model, torch.rand(2, 1, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="references must have shape"):
        evasion.adaptive_pgd(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), torch.rand(2, 1, 8, 8), eps=0.1)


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_stops_at_first_success(setup, targeted):
    """Each input keeps the first PGD iterate that succeeds; the reference is plain PGD run for j = 0, 1, ...
    steps (the same trajectory, truncated), taking for each input the first successful j."""
    model, x, y = setup
    lab = (y + 1) % 3 if targeted else y
    kw = dict(eps=0.15, step_size=0.03, random_start=False, targeted=targeted)
    S = 8
    stopped = evasion.pgd(model, x, lab, steps=S, stop_on_success=True, **kw)
    iterates = [x] + [evasion.pgd(model, x, lab, steps=j, **kw) for j in range(1, S + 1)]

    def success(a):
        with torch.no_grad():
            hit = model(a).argmax(1) == lab
        return hit if targeted else ~hit

    ok = torch.stack([success(a) for a in iterates])            # (S + 1, N)
    first = torch.where(ok.any(0), ok.float().argmax(0), torch.full_like(y, S))
    assert 0 < ok.any(0).sum() < len(x) or ok[-1].all()         # the test discriminates: not all stop at once
    assert (first < S).sum() >= len(x) // 4
    expected = torch.stack([iterates[int(j)][i] for i, j in enumerate(first)])
    # identical up to float rounding (a pixel whose gradient is ~0 may take the other sign)
    assert ((stopped - expected).abs() < 1e-5).float().mean() > 0.99
    assert torch.equal(success(stopped), ok.any(0))
    # the full-strength attack moves further than the stopped one
    full = iterates[-1]
    assert (stopped - x).abs().sum() < (full - x).abs().sum()


def test_eps_is_required(setup):
    model, x, y = setup
    with pytest.raises(TypeError, match="eps"):
        evasion.pgd(model, x, y)
    with pytest.raises(TypeError, match="eps"):
        evasion.adaptive_pgd(model, x, y, x[:, None])


def test_logit_margin_against_hand_computed():
    z = torch.tensor([[2.0, 5.0, 1.0], [0.5, -1.0, 3.0]])
    # targeted: own logit minus the best other one; untargeted: the best wrong logit minus the true one
    assert torch.allclose(evasion.logit_margin(z, torch.tensor([1, 0])), torch.tensor([3.0, -2.5]))
    assert torch.allclose(evasion.logit_margin(z, torch.tensor([1, 0]), targeted=False), torch.tensor([-3.0, 2.5]))
    assert torch.allclose(evasion.logit_margin(z, torch.tensor([0, 2]), targeted=True), torch.tensor([-3.0, 2.5]))


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_extra_steps_continue_past_first_success(setup, targeted):
    """With ``extra_steps = e`` each input keeps the iterate ``e`` steps after its first success (plain PGD
    run for first + e steps on the same trajectory); inputs that never succeed keep the last search iterate."""
    model, x, y = setup
    lab = (y + 1) % 3 if targeted else y
    kw = dict(eps=0.15, step_size=0.03, random_start=False, targeted=targeted)
    S, E = 8, 3
    iterates = [x] + [evasion.pgd(model, x, lab, steps=j, **kw) for j in range(1, S + E + 1)]

    def success(a):
        with torch.no_grad():
            hit = model(a).argmax(1) == lab
        return hit if targeted else ~hit

    ok = torch.stack([success(a) for a in iterates[:S + 1]])      # the search covers iterates 0..S
    first = torch.where(ok.any(0), ok.float().argmax(0), torch.full_like(y, -1))
    assert (first >= 0).sum() >= len(x) // 4 and (first > 0).any()
    pushed = evasion.pgd(model, x, lab, steps=S, stop_on_success=True, extra_steps=E, **kw)
    expected = torch.stack([iterates[int(j) + E if j >= 0 else S][i] for i, j in enumerate(first)])
    assert ((pushed - expected).abs() < 1e-5).float().mean() > 0.99
    # extra_steps = 0 is the plain first-success attack, and the pushed examples are more confident
    assert torch.equal(evasion.pgd(model, x, lab, steps=S, stop_on_success=True, extra_steps=0, **kw),
                       evasion.pgd(model, x, lab, steps=S, stop_on_success=True, **kw))
    stopped = evasion.pgd(model, x, lab, steps=S, stop_on_success=True, **kw)
    hit = first >= 0
    with torch.no_grad():
        m0 = evasion.logit_margin(model(stopped[hit]), lab[hit], targeted)
        mE = evasion.logit_margin(model(pushed[hit]), lab[hit], targeted)
    assert mE.median() > m0.median()        # per input it may dip (the L-inf ball stops the push), not overall


def test_pgd_extra_steps_need_stop_on_success(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="stop_on_success"):
        evasion.pgd(model, x, y, 0.1, extra_steps=2)
    with pytest.raises(ValueError, match="extra_steps must be an int >= 0, got -1"):
        evasion.pgd(model, x, y, 0.1, stop_on_success=True, extra_steps=-1)


def test_optimisation_attack_stops_at_margin(setup):
    """``stop_margin = kappa`` keeps, per input, the first Adam iterate whose margin toward the target is at
    least kappa: the same input run alone without a stop for that many steps (float64: no rounding ties)."""
    model, x, y = setup
    model = copy.deepcopy(model).double()
    x = x[:6].double()
    target = (y[:6] + 1) % 3
    kappa = 2.0
    adv, info = evasion.optimisation_attack(model, x, target, lr=0.05, steps=200, stop_margin=kappa, return_info=True)
    with torch.no_grad():
        margin = evasion.logit_margin(model(adv), target)
    reached = margin >= kappa
    assert reached.float().mean() > 0.8 and (info["steps"][reached] < 200).all()
    for i in reached.nonzero()[:, 0].tolist():
        s = int(info["steps"][i])
        run = evasion.optimisation_attack(model, x[i:i + 1], target[i:i + 1], lr=0.05, steps=s)
        before = evasion.optimisation_attack(model, x[i:i + 1], target[i:i + 1], lr=0.05, steps=s - 1)
        assert torch.allclose(run, adv[i:i + 1], atol=1e-10)
        with torch.no_grad():
            assert float(evasion.logit_margin(model(before), target[i:i + 1])) < kappa
    # a higher confidence takes at least as many steps for every input, and kappa = 0 is the first success
    _, low = evasion.optimisation_attack(model, x, target, lr=0.05, steps=200, stop_margin=0.5, return_info=True)
    assert (low["steps"] <= info["steps"]).all() and low["steps"].float().mean() < info["steps"].float().mean()
    _, first = evasion.optimisation_attack(model, x, target, lr=0.05, steps=200, stop_on_success=True, return_info=True)
    _, zero = evasion.optimisation_attack(model, x, target, lr=0.05, steps=200, stop_margin=0.0, return_info=True)
    assert torch.equal(first["steps"], zero["steps"])


def test_margin_loss_reaches_a_confidence_the_ce_loss_stalls_below(setup):
    """With the MSE pull, the CE gradient (1 - p_target) fades as the input grows confident; the C&W margin
    loss keeps its gradient, so within the same budget it reaches a logit margin the CE attack does not."""
    model, x, y = setup
    target = (y + 1) % 3
    kw = dict(lr=0.01, steps=150, mse_weight=200.0, stop_margin=8.0, return_info=True)
    adv_ce, ce = evasion.optimisation_attack(model, x, target, **kw)
    adv_m, mg = evasion.optimisation_attack(model, x, target, loss="margin", **kw)
    with torch.no_grad():
        m_ce = evasion.logit_margin(model(adv_ce), target)
        m_m = evasion.logit_margin(model(adv_m), target)
    assert (m_m >= 8.0).float().mean() > 0.8 and (m_ce >= 8.0).float().mean() < 0.5
    assert (mg["steps"] < 150).float().mean() > 0.8
    with pytest.raises(ValueError, match="loss must be 'ce' or 'margin'"):
        evasion.optimisation_attack(model, x, target, loss="hinge")
