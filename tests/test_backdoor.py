"""Backdoor triggers, poisoning, ASR and error injection (mclib.attacks.backdoor)."""
import copy

import pytest
import torch
from torch import nn

from mclib import curves, models, train
from mclib.attacks import backdoor as bd


def _images(n=40, c=1, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, c, h, w, generator=g) * 0.5
    y = torch.arange(n) % 10
    return X, y


class Fixed(nn.Module):
    """A 'model' that returns given logits: predicts ``pred(x)`` per image (for exact ASR checks)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return nn.functional.one_hot(self.fn(x), 10).float() + 0 * self.dummy


def test_trigger_default_is_white_3x3_bottom_right():
    X, _ = _images(h=28, w=28)
    out = bd.Trigger().apply(X)
    assert torch.equal(out[:, :, 25:, 25:], torch.ones(40, 1, 3, 3))
    changed = (out != X).any(0).any(0)
    assert changed[:25].sum() == 0 and changed[:, :25].sum() == 0
    assert torch.equal(out[:, :, :25], X[:, :, :25]) and torch.equal(out[:, :, :, :25], X[:, :, :, :25])
    assert torch.equal(X, _images(h=28, w=28)[0])  # input untouched


@pytest.mark.parametrize("position,corner", [("center", (12, 12)), ((2, 5), (2, 5)), ((-4, -3), (24, 25)),
                                             ("top_left", (0, 0))])
def test_trigger_positions_size_value(position, corner):
    t = bd.Trigger(size=3, position=position, value=0.25)
    r, c = corner
    assert t.corner(28, 28) == (r, c)
    mask = t.mask((1, 28, 28))
    assert mask.sum() == t.size ** 2 and mask[r, c] and mask[r + t.size - 1, c + t.size - 1]
    X, _ = _images(n=3, h=28, w=28)
    out = t.apply(X)
    assert torch.all(out[:, :, mask] == 0.25)
    assert torch.equal(out[:, :, ~mask], X[:, :, ~mask])


def test_trigger_rgb_per_channel_value_and_errors():
    X, _ = _images(n=2, c=3, h=32, w=32)
    out = bd.Trigger(value=(1.0, 0.0, 0.5)).apply(X)
    assert torch.equal(out[:, 0, 29:, 29:], torch.ones(2, 3, 3))
    assert torch.equal(out[:, 1, 29:, 29:], torch.zeros(2, 3, 3))
    assert torch.all(out[:, 2, 29:, 29:] == 0.5)
    with pytest.raises(ValueError, match="does not fit"):
        bd.Trigger(size=9).apply(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="position"):
        bd.Trigger(position="somewhere")
    assert bd.Trigger.make({"size": 2, "position": [1, 1]}).corner(8, 8) == (1, 1)


def test_poison_single_target_labels_pixels_and_rate():
    X, y = _images(n=200)
    Xp, yp, idx = bd.poison(X, y, generator=torch.Generator().manual_seed(0), mode="single", target=3, rate=0.1,
                            trigger={"size": 3, "position": "bottom_right"}, return_index=True)
    assert len(idx) == 20 and len(Xp) == 200
    assert torch.all(y[idx] != 3)                      # only non-target images are poisoned
    assert torch.all(yp[idx] == 3)
    rest = torch.ones(200, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(yp[rest], y[rest]) and torch.equal(Xp[rest], X[rest])
    assert torch.all(Xp[idx][:, :, 5:, 5:] == 1.0)
    assert torch.equal(Xp[idx][:, :, :5], X[idx][:, :, :5])
    # deterministic under the generator
    Xq, yq = bd.poison(X, y, generator=torch.Generator().manual_seed(0), mode="single", target=3, rate=0.1)
    assert torch.equal(Xq, Xp) and torch.equal(yq, yp)


def test_poison_all_to_all_shifts_labels_and_is_a_recipe_hook():
    X, y = _images(n=100)
    Xp, yp, idx = bd.poison(X, y, generator=torch.Generator().manual_seed(1), mode="all2all", rate=0.3,
                            return_index=True)
    assert len(idx) == 30
    assert torch.equal(yp[idx], (y[idx] + 1) % 10)
    assert int((yp != y).sum()) == 30
    hook = train.resolve("mclib.attacks.backdoor:poison")
    r = train.Recipe(arch="cnn", dataset="digits", data_hook="mclib.attacks.backdoor:poison",
                     data_hook_kwargs={"mode": "all2all", "rate": 0.3, "trigger": {"size": 3, "position": [1, 2]}})
    X2, y2 = hook(X, y, generator=torch.Generator().manual_seed(1), **train._unfreeze(r.data_hook_kwargs))
    assert torch.all(X2[y2 != y][:, :, 1:4, 2:5] == 1.0)


def test_poison_rejects_bad_arguments():
    X, y = _images()
    with pytest.raises(ValueError, match="mode"):
        bd.poison(X, y, mode="many")
    with pytest.raises(ValueError, match="rate"):
        bd.poison(X, y, rate=1.5)


def test_asr_excludes_target_class_and_counts_all_in_all2all():
    X, y = _images(n=100)
    trig = bd.Trigger()
    # predicts the target 0 on every triggered image -> ASR 1 although 10 images are already class 0
    always_zero = Fixed(lambda x: torch.zeros(len(x), dtype=torch.long))
    assert bd.asr(always_zero, X, y, trig, "single", target=0) == 1.0
    # predicts the true class (read back from a side channel): never succeeds, and target-class images
    # would count as successes if they were not excluded
    lookup = {float(x.sum()): int(c) for x, c in zip(trig.apply(X), y)}
    truthful = Fixed(lambda x: torch.tensor([lookup[float(v.sum())] for v in x]))
    assert bd.asr(truthful, X, y, trig, "single", target=0) == 0.0
    Xt, yt = bd.triggered_set(X, y, trig, "single", target=0)
    assert len(Xt) == 90 and torch.all(yt == 0)
    # all-to-all: success = y + 1, over all images
    shifted = Fixed(lambda x: torch.tensor([(lookup[float(v.sum())] + 1) % 10 for v in x]))
    assert bd.asr(shifted, X, y, trig, "all2all") == 1.0
    assert bd.asr(truthful, X, y, trig, "all2all") == 0.0
    assert len(bd.triggered_set(X, y, trig, "all2all")[0]) == 100


def test_backdoored_training_learns_the_trigger():
    torch.manual_seed(0)
    X, y = _images(n=300)
    X[:, :, 5:, 5:] = 0.0  # the corner is empty in clean images, like MNIST
    Xp, yp = bd.poison(X, y, generator=torch.Generator().manual_seed(0), rate=0.2, target=0)
    m = models.build("cnn", in_shape=(1, 8, 8), num_classes=10)
    train.fit(m, Xp, yp, epochs=8, batch_size=64, lr=3e-3, progress=False)
    assert bd.asr(m, X, y, bd.Trigger(), "single", 0) > 0.9


def _small_trained(seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(10, 1, 8, 8, generator=g)  # ten well separated classes
    y = torch.arange(200) % 10
    X = (protos[y] + 0.15 * torch.randn(200, 1, 8, 8, generator=g)).clamp(0, 1)
    m = models.build("cnn", in_shape=(1, 8, 8), num_classes=10)
    train.fit(m, X, y, epochs=8, batch_size=64, lr=3e-3, progress=False)
    return m, X, y


def test_inject_errors_changes_only_the_chosen_layer_and_flips_the_chosen_images():
    m, X, y = _small_trained()
    chosen, wrong = X[:4], torch.tensor([7, 7, 5, 9])
    layer = bd.default_layer(m)
    assert isinstance(m.get_submodule(layer), nn.Linear)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    inj = bd.inject_errors(m, chosen, wrong, X[4:], y[4:], generator=torch.Generator().manual_seed(0))
    assert bd.injection_success(inj, chosen, wrong) == 1.0
    assert bd.injection_success(m, chosen, wrong) == 0.0
    for k, v in m.state_dict().items():  # the input model is untouched
        assert torch.equal(v, before[k])
    changed = {k for k, v in inj.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(layer + ".") for k in changed)
    right = m(X[4:]).argmax(1) == y[4:]  # the images the original model gets right mostly stay right
    assert (inj(X[4:][right]).argmax(1) == y[4:][right]).float().mean() >= 0.9


def test_inject_errors_on_a_named_conv_layer_and_bad_name():
    m, X, y = _small_trained()
    conv = [n for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)][0]
    inj = bd.inject_errors(m, X[:2], torch.tensor([5, 5]), X[2:], y[2:], layer=conv, steps=20)
    changed = {k for k, v in inj.state_dict().items() if not torch.equal(v, m.state_dict()[k])}
    assert changed and all(k.startswith(conv + ".") for k in changed)
    with pytest.raises(ValueError, match="no layer"):
        bd.inject_errors(m, X[:2], torch.tensor([5, 5]), X[2:], y[2:], layer="nope")


def test_optimise_trigger_against_models_keeps_place_and_range():
    m, X, y = _small_trained()
    trig = bd.optimise_trigger([m], X, y, bd.Trigger(size=3, position="center"), target=5, steps=15,
                               generator=torch.Generator().manual_seed(0))
    assert trig.pattern.shape == (1, 3, 3) and trig.pattern.min() >= 0 and trig.pattern.max() <= 1
    assert trig.start.shape == (1, 3, 3)
    out = trig.apply(X[:2])
    assert torch.equal(out[:, :, 2:5, 2:5], trig.pattern.expand(2, 1, 3, 3))
    assert torch.equal(out[:, :, :2], X[:2, :, :2])
    m.zero_grad(set_to_none=True)                    # what training left
    again = bd.optimise_trigger([m], X, y, bd.Trigger(size=3, position="center"), target=5, steps=15,
                                generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.pattern, trig.pattern)  # deterministic given the generator
    # issue 31: only the pattern is differentiated -- nothing lands in the model's .grad, and its layout is its own
    assert all(p.grad is None for p in m.parameters())
    assert all(p.is_contiguous() for p in m.parameters())


def test_optimise_trigger_along_a_curve_leaves_the_bends_untouched():
    m0, X, y = _small_trained()
    m1 = copy.deepcopy(m0)
    with torch.no_grad():
        for p in m1.parameters():
            p.add_(0.01)
    curve = curves.Curve([m0, m1], num_bends=1)
    bends = [b.detach().clone() for b in curve.bend_parameters()]
    trig = bd.optimise_trigger(curve, X, y, bd.Trigger(size=3, position="center"), target=5, steps=5,
                               generator=torch.Generator().manual_seed(0))
    assert trig.pattern.shape == (1, 3, 3) and not torch.equal(trig.pattern, trig.start)
    assert all(b.grad is None and torch.equal(b, b0) for b, b0 in zip(curve.bend_parameters(), bends))


_CHECKER = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]])


def _backdoored(pattern=None, seed=0):
    """A small CNN on 8x8 images with a bottom-right backdoor (white square, or ``pattern``) to class 0.

    With a ``pattern``, a fifth of the training images also carries the white square with its TRUE
    label, so that the white square is a decoy that fools nothing while the pattern fools the model.
    """
    torch.manual_seed(seed)
    X, y = _images(n=400, seed=seed)
    X[:, :, 5:, 5:] = 0.0
    trig = bd.Trigger(pattern=pattern) if pattern is not None else bd.Trigger()
    Xp, yp = bd.poison(X, y, generator=torch.Generator().manual_seed(seed), rate=0.2, target=0, trigger=trig)
    if pattern is not None:
        decoy = torch.arange(len(X)) % 5 == 1
        Xp = torch.cat([Xp, bd.Trigger().apply(X[decoy])])
        yp = torch.cat([yp, y[decoy]])
    m = models.build("cnn", in_shape=(1, 8, 8), num_classes=10)
    train.fit(m, Xp, yp, epochs=10, batch_size=64, lr=3e-3, progress=False)
    return m, X, y, trig


def test_optimise_trigger_finds_a_backdoor_from_a_random_start():
    # the control of claim C5: against a backdoored model the optimiser must reach a high ASR from noise
    m, X, y, real = _backdoored()
    assert bd.asr(m, X, y, real) > 0.9
    dark = torch.zeros(1, 3, 3)  # a start that fools nothing: the clean images' own (empty) corner
    trig = bd.optimise_trigger([m], X, y, bd.Trigger(), init=dark, steps=60, generator=torch.Generator().manual_seed(1))
    assert torch.equal(trig.start, dark)
    assert bd.asr(m, X, y, bd.Trigger(pattern=dark)) < 0.5
    assert bd.asr(m, X, y, trig) > 0.9
    assert (trig.pattern - trig.start).abs().mean() > 0.1  # the trigger moved


def test_optimise_trigger_leaves_a_wrong_start_at_the_box_edge():
    # the model's backdoor is a checkerboard; starting from the white square (every pixel at the upper
    # edge of [0, 1]) the attacker must move the off-pixels down -- a saturated sigmoid could not
    m, X, y, real = _backdoored(pattern=_CHECKER)
    white = bd.Trigger()
    assert bd.asr(m, X, y, real) > 0.9 and bd.asr(m, X, y, white) < 0.5
    trig = bd.optimise_trigger([m], X, y, white, init="trigger", steps=60, generator=torch.Generator().manual_seed(2))
    assert torch.equal(trig.start, torch.ones(1, 3, 3))
    assert bd.asr(m, X, y, trig) > 0.9
    assert trig.pattern[0][_CHECKER[0] == 0].mean() < 0.5


def test_optimise_trigger_rejects_bad_arguments():
    m, X, y = _small_trained()
    with pytest.raises(ValueError, match="init must be"):
        bd.optimise_trigger([m], X, y, init="white")
    with pytest.raises(ValueError, match="init must be"):
        bd.optimise_trigger([m], X, y, init=torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="non-empty list"):
        bd.optimise_trigger([], X, y)
    with pytest.raises(ValueError, match="steps and n_t"):
        bd.optimise_trigger([m], X, y, steps=0)


def test_rgb_32x32_paths():
    X, y = _images(n=20, c=3, h=32, w=32)
    m = models.build("vgg_bn", in_shape=(3, 32, 32), num_classes=10, widths=(8, "M", 8, "M"))
    Xp, yp = bd.poison(X, y, generator=torch.Generator().manual_seed(0), rate=0.5)
    assert Xp.shape == X.shape
    assert 0.0 <= bd.asr(m, X, y) <= 1.0
    inj = bd.inject_errors(m, X[:2], torch.tensor([1, 2]), X[2:], y[2:], steps=3)
    assert 0.0 <= bd.injection_success(inj, X[:2], torch.tensor([1, 2])) <= 1.0


def test_support_fraction_measures_where_a_trigger_writes():
    """Share of images with a pixel above the threshold inside the patch; the corner of MNIST-like images is empty."""
    X = torch.zeros(10, 1, 8, 8)
    X[:4, 0, 3:5, 3:5] = 1.0                          # four images mark the centre
    X[0, 0, 7, 7] = 0.05                              # below the threshold: not marked
    assert bd.support_fraction(X, {"size": 3, "position": "center"}) == pytest.approx(0.4)
    assert bd.support_fraction(X, {"size": 3, "position": "bottom_right"}) == 0.0
    rgb = torch.zeros(5, 3, 8, 8)
    rgb[:, 2, -1, -1] = 0.5                           # any channel counts
    assert bd.support_fraction(rgb, {"size": 3, "position": "bottom_right"}) == 1.0
    with pytest.raises(ValueError, match="non-empty batch"):
        bd.support_fraction(torch.zeros(0, 1, 8, 8), None)


def test_triggers_are_preset_data_with_the_papers_corner_square():
    from mclib import config

    for name in ("smoke", "quick", "paper"):
        trig = dict(config.get_preset(name).section("repair")["triggers"])
        assert trig["corner"] == {"size": 3, "position": "bottom_right"}      # Zhao et al.: 3x3, bottom right
        assert set(trig) == {"corner", "in-support"}
        for spec in trig.values():
            bd.Trigger.make(spec)                                        # valid Trigger arguments
