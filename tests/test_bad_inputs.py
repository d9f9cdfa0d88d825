"""Bad inputs get one clear error naming the argument, the value and what is allowed (issue 13, part 2, item 8)."""
import numpy as np
import pytest
import torch
from torch import nn

from mclib import detect, percolation, som
from mclib.attacks import backdoor, evasion


def _model(classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, classes)).eval()


X = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize("attack", [
    lambda x, y: evasion.pgd(_model(), x, y, eps=0.1, steps=2),
    lambda x, y: evasion.fgsm(_model(), x, y, 0.1),
    lambda x, y: evasion.optimisation_attack(_model(), x, y, steps=2),
    lambda x, y: evasion.adaptive_pgd(_model(), x, y, X[:, None], eps=0.1, steps=2, num_points=2),
])
def test_attacks_reject_bad_images(attack):
    with pytest.raises(ValueError, match=r"x has values in \[5.69307, 254.252\]; allowed: pixels in \[0, 1\]"):
        attack(X * 255, Y)                      # a 0-255 image is not clamped into [0, 1]
    with pytest.raises(TypeError, match="x has integer dtype torch.uint8.*x.float\\(\\) / 255"):
        attack((X * 255).to(torch.uint8), Y)    # an integer image is not silently used
    bad = X.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="x holds 1 NaN/Inf"):
        attack(bad, Y)


@pytest.mark.parametrize("attack", [
    lambda y: evasion.pgd(_model(), X, y, eps=0.1, steps=2),
    lambda y: evasion.pgd(_model(), X, y, eps=0.1, steps=2, targeted=True),
    lambda y: evasion.fgsm(_model(), X, y, 0.1),
    lambda y: evasion.optimisation_attack(_model(), X, y, steps=2),
    lambda y: evasion.adaptive_pgd(_model(), X, y, X[:, None], eps=0.1, steps=2, num_points=2),
])
def test_attacks_reject_out_of_range_labels(attack):
    with pytest.raises(ValueError, match=r"labels in \[0, 3\]; allowed: 0..2"):
        attack(torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels in \[-1, 2\]; allowed: 0..2"):
        attack(torch.tensor([0, -1, 2, 0]))


def test_inject_errors_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"wrong_labels has labels in \[1, 7\]; allowed: 0..2"):
        backdoor.inject_errors(_model(), X[:2], torch.tensor([1, 7]), X, Y, steps=1)
    with pytest.raises(ValueError, match=r"y_keep has labels in \[-2, 2\]; allowed: 0..2"):
        backdoor.inject_errors(_model(), X[:2], torch.tensor([1, 2]), X, torch.tensor([0, 1, 2, -2]), steps=1)


def test_asr_rejects_out_of_range_target():
    with pytest.raises(ValueError, match=r"target = 12 is not a class; allowed: 0..9"):
        backdoor.asr(_model(), X, Y, target=12)
    with pytest.raises(ValueError, match=r"target = 5 is not a class; allowed: 0..2"):
        backdoor.asr(_model(), X, Y, target=5, num_classes=10)      # the model has only 3 outputs


def test_extract_rejects_more_references_than_selected():
    model = _model()
    pool = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    refs = detect.select_references(model, pool, torch.arange(30) % 3, k=2)
    with pytest.raises(ValueError, match=r"k = 5 references per input requested.*hold 2.*allowed: 1..2"):
        detect.extract(model, X, refs, num_points=4, k=5)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_fit_som_rejects_non_finite_codes(value):
    codes = torch.randn(20, 3)
    codes[4, 1] = value
    with pytest.raises(ValueError, match=r"codes hold 1 NaN/Inf values in 1 of 20 rows \(first rows \[4\]\)"):
        som.fit_som(codes, 3, 3)


@pytest.mark.parametrize("call", [
    lambda: percolation.random_sites((4, 4), 1.5),
    lambda: percolation.random_bonds((4, 4), -0.1),
    lambda: percolation.threshold_dimension(2.0),
    lambda: percolation.connection_surface([0.2, 1.2], [2], 64, 2),
])
def test_percolation_rejects_p_outside_unit_interval(call):
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        call()


@pytest.mark.parametrize("call", [
    lambda: percolation.bethe_estimate(0),
    lambda: percolation.pc_series(0),
    lambda: percolation.side_for(0, 100),
    lambda: percolation.connection_surface([0.2], [0, 2], 64, 2),
    lambda: percolation.random_labelling([0.5, 0.5], [0], 64, 2),
])
def test_percolation_rejects_zero_dimension(call):
    with pytest.raises(ValueError, match=r"must be integer dimensions >= 1, got"):
        call()


def test_valid_inputs_still_pass():
    assert percolation.bethe_estimate(np.array([2, 3])).shape == (2,)
    assert evasion.pgd(_model(), X, Y, eps=0.1, steps=1).shape == X.shape


# ================================================================ issue 32: library cases, before -> after
import errno          # noqa: E402
import math           # noqa: E402
import shutil         # noqa: E402
import tempfile       # noqa: E402
import warnings       # noqa: E402

from mclib import checkpoints, config, infer, paths, stats, train   # noqa: E402
from mclib.claims import core   # noqa: E402


def _cnn(classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, classes)).eval()


class _Tuple(nn.Module):
    """A model that returns ``(logits, features)`` (or a dict), as many hub models do."""

    def __init__(self, as_dict=False):
        super().__init__()
        self.net, self.as_dict = _model(), as_dict

    def forward(self, x):
        z = self.net(x)
        return {"logits": z} if self.as_dict else (z, x)


class _Detaches(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _model()

    def forward(self, x):
        return self.net(x.detach())


def _no_fit(*a, **k):
    raise AssertionError("fit must not run")


# ---------------------------------------------------------------- silent wrong results
@pytest.mark.parametrize("call, error, message", [
    # optimisation_attack(net, x, full(2.9)) targeted class 2
    (lambda: evasion.optimisation_attack(_model(), X, torch.full((4,), 2.9), steps=1), TypeError,
     r"target must hold integer class labels.*2\.9.*truncated"),
    (lambda: evasion.pgd(_model(), X, torch.tensor([0.5, 1, 2, 0]), eps=0.1, steps=1), TypeError, "y must hold integer"),
    (lambda: evasion.optimisation_attack(_model(), X, Y, steps=1, mse_weight=-1), ValueError,
     r"mse_weight must be a finite number >= 0, got -1"),
    (lambda: evasion.pgd(_model(), X, Y, eps=0.1, steps=2, step_size=-0.05), ValueError,
     r"step_size must be a finite number > 0, got -0.05"),
    (lambda: evasion.barrier_surrogate(_model(), X, X[:, None], Y, num_points=0), ValueError,
     r"num_points must be a positive int \(>= 1\), got 0"),
    (lambda: evasion.adaptive_pgd(_model(), X, Y, X[:, None], eps=0.1, steps=1, num_points=0), ValueError,
     r"num_points must be a positive int \(>= 1\), got 0"),
    (lambda: evasion.optimisation_attack(_Detaches(), X, Y, steps=3), ValueError,
     "no gradient with respect to its input.*optimisation_attack"),
    (lambda: evasion.pgd(_Detaches(), X, Y, eps=0.1, steps=2), ValueError,
     "no gradient with respect to its input.*the attack"),
    (lambda: som.contingency(torch.tensor([0, 1, 1]), torch.tensor([0, -1, 1]), 2, 2), ValueError,
     r"labels has labels in \[-1, 1\]"),
    (lambda: som.contingency(torch.tensor([0, 1, 1]), torch.tensor([0, 2, 1]), 2, 2), ValueError,
     r"labels has labels in \[0, 2\]; allowed: 0..1"),
    (lambda: som.contingency(torch.tensor([0, 1, 1]), torch.tensor([0.0, 1.5, 1.0]), 2, 2), TypeError,
     r"labels must hold integer class labels.*1\.5"),
    (lambda: som.fit_som(torch.randn(20, 3), 3, 3, sigma=-2), ValueError, r"sigma must be a finite number > 0, got -2"),
    (lambda: som.fit_som(torch.randn(20, 3), 3, 3, iterations=-3), ValueError,
     r"iterations must be a positive int \(>= 1\), got -3"),
    (lambda: percolation.random_labelling([float("nan"), 1.0], [2], 64, 2), ValueError, r"probs holds 1 NaN/Inf"),
    (lambda: percolation.label_fractions(_model(), X, Y, [float("nan")]), ValueError,
     r"radii entries must be a finite number >= 0, got nan"),
    (lambda: percolation.label_fractions(_model(), X * 255, Y, [0.1]), ValueError,
     r"X has values in \[5.69307, 254.252\]; allowed: pixels in \[0, 1\]; this looks like 0-255 pixels: divide by 255"),
    (lambda: paths.bypass(_model(), X, X.flip(0), 0, iterations=1, tolerance=-1, progress=False), ValueError,
     r"tolerance must be a finite number >= 0, got -1"),
    (lambda: train.fit(_model(), X, Y, batch_size=-8, progress=False), ValueError,
     r"batch_size must be a positive int \(>= 1\), got -8"),
    (lambda: train.fit(_model(), X, Y, epochs=-1, progress=False), ValueError,
     r"epochs must be a positive int \(>= 1\), got -1"),
    (lambda: train.Recipe(arch="mlp", dataset="digits", epochs=-2), ValueError,
     r"Recipe epochs must be a positive int \(>= 1\), got -2"),
])
def test_silent_wrong_results_are_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_untrained_model_is_never_cached(monkeypatch):
    """A training that takes no step (fit returning no losses) raises instead of caching the initial weights."""
    recipe = train.Recipe(arch="mlp", dataset="digits", epochs=1, batch_size=64, n_train=64, arch_kwargs={"hidden": (8,)})
    monkeypatch.setattr(train, "fit", lambda *a, **k: [])
    with pytest.raises(RuntimeError, match="took no optimiser step"):
        train.train(recipe, progress=False)
    assert not checkpoints.checkpoint_path(recipe).exists()


def test_bootstrap_of_samples_with_nan_is_inconclusive():
    iv = stats.bootstrap_ci([0.9] * 60 + [float("nan")])
    assert math.isnan(iv.lo) and math.isnan(iv.hi)
    verdict = core.judge_interval("rate", iv._asdict(), 0.8)
    assert verdict.status == "inconclusive", verdict      # was "holds: rate is nan [0.9, 0.9]"


def test_auroc_inputs_are_checked_and_one_class_is_inconclusive():
    with pytest.raises(ValueError, match=r"labels must be 0/1 or booleans.*\[0, 1, 2\]"):
        stats.auroc([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4])          # was: 2 silently taken as positive
    with pytest.raises(ValueError, match="scores hold 1 NaN/Inf"):
        stats.auroc([0, 1, 0, 1], [0.1, float("nan"), 0.3, 0.4])  # was: a NaN ranked as the largest score
    assert math.isnan(stats.auroc([1, 1, 1], [0.1, 0.2, 0.3]))   # undefined with one class, documented
    iv = stats.auroc_ci([1] * 10, np.arange(10.0), n_boot=10)
    assert core.judge_interval("AUROC", iv._asdict(), 0.9).status == "inconclusive"


# ---------------------------------------------------------------- unclear errors made clear
@pytest.mark.parametrize("call", [
    lambda m: evasion.pgd(m, X, Y, eps=0.1, steps=1),
    lambda m: evasion.fgsm(m, X, Y, 0.1),
    lambda m: evasion.optimisation_attack(m, X, Y, steps=1),
    lambda m: train.fit(m, X, Y, progress=False),
])
@pytest.mark.parametrize("as_dict", [False, True])
def test_model_returning_a_tuple_or_dict_is_a_clear_error(call, as_dict):
    kind = r"dict with keys \['logits'\]" if as_dict else "tuple of 2 items"
    with pytest.raises(TypeError, match=f"model returned a {kind}; mclib needs a model that returns one logits tensor"):
        call(_Tuple(as_dict))


@pytest.mark.parametrize("call", [
    lambda x: evasion.pgd(_model(), x, Y, eps=0.1, steps=1),
    lambda x: evasion.optimisation_attack(_model(), x, Y, steps=1),
    lambda x: train.fit(_model(), x, Y, progress=False),
])
def test_float64_inputs_to_a_float32_model_are_a_clear_error(call):
    with pytest.raises(TypeError, match=r"x has dtype torch.float64 but the model's weights are torch.float32|"
                                        r"X has dtype torch.float64 but the model's weights are torch.float32"):
        call(X.double())


@pytest.mark.parametrize("call", [
    lambda x: evasion.pgd(_cnn(), x, Y, eps=0.1, steps=1),
    lambda x: evasion.optimisation_attack(_cnn(), x, Y, steps=1),
    lambda x: train.fit(_cnn(), x, Y, progress=False),
])
@pytest.mark.parametrize("shape", [(4, 16), (4, 1, 5, 5)])
def test_flat_or_wrongly_sized_inputs_are_a_clear_error(call, shape):
    x = torch.rand(shape)
    with pytest.raises(ValueError, match=rf"the model cannot take [xX] of shape \({shape[0]}, {shape[1]}"):
        call(x)


def test_labels_as_lists_floats_or_2d():
    model = _model()
    a = evasion.pgd(model, X, Y.tolist(), eps=0.1, steps=2, random_start=False)      # a list is fine
    assert torch.equal(a, evasion.pgd(model, X, Y, eps=0.1, steps=2, random_start=False))
    whole = evasion.pgd(model, X, Y.double(), eps=0.1, steps=2, random_start=False)  # whole-number floats too
    assert torch.equal(a, whole)
    with pytest.raises(ValueError, match=r"y must be 1-D with one class label per input \(batch size 4"):
        evasion.pgd(model, X, Y[:, None], eps=0.1, steps=1)
    with pytest.raises(TypeError, match="y must hold integer class labels"):
        train.fit(model, X, Y + 0.5, progress=False)


@pytest.mark.parametrize("call, error, message", [
    (lambda: som.fit_som(torch.randn(20, 3), rows=2.5), TypeError, r"rows must be a positive int \(>= 1\), got 2.5"),
    (lambda: som.fit_som(torch.randn(20, 3), 3, 3, sigma=0), ValueError, "sigma must be a finite number > 0, got 0"),
    (lambda: percolation.spanning_thresholds(4.5, 2, 4), TypeError, r"L must be a positive int \(>= 1\), got 4.5"),
    (lambda: percolation.spanning_thresholds(4, 2, 4, steps=2.5), TypeError, r"steps must be a positive int"),
    (lambda: train.fit(_model(), X, Y, batch_size=0, progress=False), ValueError, "batch_size must be a positive int"),
    (lambda: train.Recipe(arch="mlp", dataset="digits", batch_size=0), ValueError, "Recipe batch_size must be a positive int"),
    (lambda: percolation.random_labelling([0.5, 0.5], [2], 10 ** 15, 1), MemoryError,
     r"random_labelling d=2 \(1e\+15 sites\) needs about .* GiB but only .* GiB of memory is available"),
    (lambda: percolation.random_sites((10 ** 7, 10 ** 7), 0.5), MemoryError, "random_sites .* needs about"),
    (lambda: percolation.connection_surface([0.5], [3], 10 ** 14, 1), MemoryError, "connection_surface d=3"),
    (lambda: percolation.crossing_probability([], 0.5), ValueError, "thresholds must be a non-empty 1-D array"),
    (lambda: percolation.crossing_probability([0.3, float("nan")], 0.5), ValueError, "thresholds holds 1 NaN/Inf"),
])
def test_unclear_errors_are_clear(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_zero_batch_in_a_preset_file_is_refused(tmp_path):
    base = (config.PRESET_DIR if hasattr(config, "PRESET_DIR") else
            __import__("pathlib").Path(config.__file__).parent / "presets") / "curves.toml"
    text = base.read_text().replace("curve_batch_size = 64", "curve_batch_size = 0", 1)
    assert "curve_batch_size = 0" in text
    bad = tmp_path / "curves.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=r"curves.toml: \[smoke\] curve_batch_size = 0: allowed: an integer >= 1 \(curve_batch_size is a count\)"):
        config.check_preset_file(bad)


# ---------------------------------------------------------------- item 3: a full disk does not lose the model
TINY = train.Recipe(arch="mlp", dataset="digits", epochs=1, batch_size=64, n_train=128, arch_kwargs={"hidden": (16,)})


def test_full_disk_is_found_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))   # every disk full
    monkeypatch.setattr(train, "fit", _no_fit)
    with pytest.raises(OSError, match=r"only 0.0 MiB free, the checkpoint needs about .* MiB.*--cache-dir") as err:
        train.train(TINY, cache_dir=tmp_path / "full", progress=False)
    assert err.value.errno is None or err.value.errno == errno.ENOSPC


def test_full_disk_falls_back_to_the_temporary_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    real = shutil.disk_usage
    full = tmp_path / "full"
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000) if str(p).startswith(str(full))
                        else real(p))
    with pytest.warns(UserWarning, match=r"not writable \(\[Errno 28\] only 0.0 MiB free"):
        first = train.train(TINY, cache_dir=full, progress=False)
    monkeypatch.setattr(train, "fit", _no_fit)
    with pytest.warns(UserWarning, match="not writable"):
        again = train.train(TINY, cache_dir=full, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))


def test_failed_save_keeps_the_trained_model_for_the_run(tmp_path, monkeypatch):
    """The disk fills up while training: the save fails (ENOSPC), the fallback too; the model is kept."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))

    def no_space(fd, tmp, path, payload):
        import os
        os.close(fd)
        tmp.unlink()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "_write_and_rename", no_space)
    monkeypatch.setattr(checkpoints, "save_checkpoint", lambda *a, **k: no_space(*checkpoints._open_temp(a[0]), a[0], None))
    path = checkpoints.checkpoint_path(TINY, tmp_path / "c")
    with pytest.warns(UserWarning, match=rf"could not write the checkpoint {path} \(No space left on device\); "
                                         r"the trained model is kept in memory"):
        first = train.train(TINY, cache_dir=tmp_path / "c", progress=False)
    assert first.metrics["test_acc"] > 0
    monkeypatch.setattr(train, "fit", _no_fit)                       # not trained a second time in this run
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                # and warned about once
        again = train.train(TINY, cache_dir=tmp_path / "c", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
    assert dict(again.metrics) == dict(first.metrics)


# ---------------------------------------------------------------- item 4: two checkpoint formats side by side
def test_two_checkpoint_formats_live_side_by_side(tmp_path, monkeypatch):
    calls, real_fit = [], train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    now = checkpoints.CHECKPOINT_FORMAT
    train.train(TINY, cache_dir=tmp_path, progress=False)                    # this mclib
    monkeypatch.setattr(checkpoints, "CHECKPOINT_FORMAT", now + 1)
    train.train(TINY, cache_dir=tmp_path, progress=False)                    # a newer mclib, same cache
    assert calls == [1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                        # nothing "ignored and retrained"
        monkeypatch.setattr(checkpoints, "CHECKPOINT_FORMAT", now)
        train.train(TINY, cache_dir=tmp_path, progress=False)
        monkeypatch.setattr(checkpoints, "CHECKPOINT_FORMAT", now + 1)
        train.train(TINY, cache_dir=tmp_path, progress=False)
    assert calls == [1, 1]                                                    # each loaded its own
    assert len(list((tmp_path / "models").glob("*.pt"))) == 2


# ---------------------------------------------------------------- item 5: the inference engine is never stale
def _two_level():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))).eval()


@pytest.mark.parametrize("change", ["data write", "swap submodule", "buffer data write", "setting"])
def test_infer_sees_every_change_of_the_function(change):
    model = _two_level()
    if change == "buffer data write":
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3)).eval()
    if change == "setting":
        model[1][1] = nn.LeakyReLU(0.01)
    x = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    for _ in range(3):                                    # prepared, then frozen into a graph on CPU
        infer.logits(model, x)
    with torch.no_grad():
        if change == "data write":
            model[1][-1].weight.data.mul_(0)
        elif change == "swap submodule":
            model[1][1] = nn.Tanh()
        elif change == "buffer data write":
            model[1].running_mean.data.add_(3.0)
        else:
            model[1][1].negative_slope = 1.0
        eager = model(x)
    assert torch.allclose(infer.logits(model, x), eager, atol=infer.ATOL, rtol=infer.RTOL)


def test_linear_losses_after_a_submodule_swap():
    model = _two_level()
    A, C = X, X.flip(0)
    paths.linear_losses(model, A, C, 0, num_points=8)
    paths.linear_losses(model, A, C, 0, num_points=8)
    model[1][1] = nn.Tanh()
    with torch.no_grad():
        a = paths.alphas(8).view(1, -1, 1, 1, 1)
        pts = (1 - a) * A[:, None] + a * C[:, None]
        ref = nn.functional.cross_entropy(model(pts.flatten(0, 1)), torch.zeros(32, dtype=torch.long),
                                          reduction="none").view(4, 8)
    assert torch.allclose(paths.linear_losses(model, A, C, 0, num_points=8), ref, atol=1e-4, rtol=1e-4)
