import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import filelock
import pytest
import torch

from mclib import checkpoints, train

TINY = train.Recipe(arch="mlp", dataset="digits", epochs=1, batch_size=64, n_train=128, arch_kwargs={"hidden": (16,)})


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_recipe_hash_covers_every_field():
    assert TINY.key == TINY.replace().key
    assert TINY.key != TINY.replace(seed=1).key
    assert TINY.key != TINY.replace(arch_kwargs={"hidden": (32,)}).key
    assert TINY.replace(data_hook_kwargs={"b": 1, "a": 2}).key == TINY.replace(data_hook_kwargs={"a": 2, "b": 1}).key


def test_bad_recipes():
    with pytest.raises(ValueError, match="unknown optimizer"):
        train.Recipe(arch="mlp", dataset="digits", optimizer="lbfgs")
    with pytest.raises(ValueError, match="unknown dataset"):
        train.Recipe(arch="mlp", dataset="imagenet")
    with pytest.raises(ValueError, match="module:function"):
        train.resolve("no_colon")


def test_training_is_deterministic_and_learns():
    a = train.train(TINY, progress=False, retrain=True)
    b = train.train(TINY, progress=False, retrain=True)
    assert _same(a.model, b.model)
    more = train.train(TINY.replace(epochs=10, n_train=None), progress=False)
    assert more.metrics["test_acc"] > 0.85


def test_cache_hit_returns_the_same_model_without_training(monkeypatch):
    first = train.train(TINY, progress=False)
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("should have loaded from the cache"))
    assert _same(first.model, train.train(TINY, progress=False).model)
    assert not list(checkpoints.checkpoint_path(TINY).parent.glob("*.tmp"))  # atomic write left no temp file


@pytest.mark.parametrize("damage", ["truncate", "garbage", "tensor", "recipe", "metric bit"])
def test_corrupt_or_mismatching_checkpoint_is_retrained(damage):
    first = train.train(TINY, progress=False)
    path = checkpoints.checkpoint_path(TINY)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif damage == "metric bit":  # one flipped bit in the stored test accuracy, as a disk or copy could do
        _flip_last_bit_of(path, first.metrics["test_acc"])
    else:
        payload = torch.load(path, weights_only=True)
        if damage == "tensor":  # flipped weights, checksum kept: must be caught
            key = next(iter(payload["state_dict"]))
            payload["state_dict"][key] = payload["state_dict"][key] + 1
        else:
            payload["recipe"] = json.dumps({"arch": "other"})
        torch.save(payload, path)
    with pytest.warns(UserWarning, match="ignored and retrained"):
        again = train.train(TINY, progress=False)
    assert _same(first.model, again.model)
    assert again.metrics["test_acc"] == first.metrics["test_acc"]
    checkpoints.load_checkpoint(path, TINY)  # the rewritten file is valid again


def _flip_last_bit_of(path, value):
    """Flip the lowest bit of ``value`` where the file stores it (as text or as a pickled big-endian double)."""
    raw = bytearray(path.read_bytes())
    for form in (repr(value).encode(), struct.pack(">d", value)):
        at = raw.find(form)
        if at >= 0:
            raw[at + len(form) - 1] ^= 1  # a text digit stays a digit; a double changes by one ulp
            path.write_bytes(bytes(raw))
            return
    raise AssertionError(f"{value!r} not found in {path}")


def test_checksum_covers_every_field_read_back():
    train.train(TINY, progress=False)
    path = checkpoints.checkpoint_path(TINY)
    for field in ("format", "recipe", "code", "metrics", "checksum"):
        payload = torch.load(path, weights_only=True)
        payload[field] = payload[field] + (1 if isinstance(payload[field], int) else " ")
        damaged = path.with_name(f"damaged-{field}.pt")
        torch.save(payload, damaged)
        with pytest.raises(checkpoints.CheckpointInvalid, match="checksum|format"):
            checkpoints.load_checkpoint(damaged, TINY)


def test_data_hook_and_batch_hook_are_applied(monkeypatch):
    seen = {}

    def hook(X, y, generator=None, flip=0):
        seen["data"] = flip
        return X, (y + flip) % 10

    def bhook(model, x, y, scale=1.0):
        seen["batch"] = scale
        return x * scale

    import sys
    import types

    mod = types.ModuleType("_mclib_test_hooks")
    mod.hook, mod.bhook = hook, bhook
    monkeypatch.setitem(sys.modules, "_mclib_test_hooks", mod)
    monkeypatch.setattr(train, "HOOK_PACKAGES", train.HOOK_PACKAGES)  # undo allow_hooks afterwards
    train.allow_hooks("_mclib_test_hooks")
    r = TINY.replace(data_hook="_mclib_test_hooks:hook", data_hook_kwargs={"flip": 1},
                     batch_hook="_mclib_test_hooks:bhook", batch_hook_kwargs={"scale": 0.5})
    train.train(r, progress=False)
    assert seen == {"data": 1, "batch": 0.5}


def test_fit_callback_and_evaluate():
    X, y = torch.rand(40, 1, 8, 8), torch.randint(0, 10, (40,))
    steps = []
    model = TINY.build()
    losses = train.fit(model, X, y, epochs=2, batch_size=16, callback=lambda s, m, l: steps.append(s), progress=False)
    assert steps == list(range(1, 7)) and len(losses) == 6
    ev = train.evaluate(model, X, y)
    assert 0 <= ev["acc"] <= 1 and ev["loss"] > 0
    with pytest.raises(ValueError, match="differ in length"):
        train.fit(model, X, y[:3])


# ---------------------------------------------------------------- code changes retrain (issue 13, 2.4)
def _counting_fit(monkeypatch):
    calls, real = [], train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_code_change_that_keeps_shapes_retrains(monkeypatch):
    first = train.train(TINY, progress=False)
    calls = _counting_fit(monkeypatch)
    parts = getattr(train, "_code_parts", lambda r: {})
    # an edit of mclib/models.py, simulated: the digest of that module's source changes
    monkeypatch.setattr(train, "_code_parts", lambda r: {**parts(r), "mclib.models": "edited"}, raising=False)
    with pytest.warns(UserWarning, match="ignored and retrained: written by other model or training code"):
        again = train.train(TINY, progress=False)
    assert calls == [1] and _same(first.model, again.model)
    train.train(TINY, progress=False)  # the new checkpoint is used from then on
    assert calls == [1]


def test_code_change_that_changes_shapes_retrains(monkeypatch):
    train.train(TINY, progress=False)
    real_build = train.models.build
    monkeypatch.setattr(train.models, "build", lambda arch, **kw: real_build(arch, **{**kw, "hidden": (24,)}))
    monkeypatch.setattr(train, "code_hash", lambda r: "edited", raising=False)
    with pytest.warns(UserWarning, match="ignored and retrained"):
        model = train.train(TINY, progress=False).model
    assert 24 in {s for p in model.parameters() for s in p.shape}


def test_code_hash_covers_code_not_comments():
    assert train._normalised("def f(x):\n    '''doc'''\n    return x  # why\n") == train._normalised("def f(x):\n  return x")
    assert train._digest("def f(x):\n    return x") != train._digest("def f(x):\n    return x + 1")
    h = train.code_hash(TINY)
    assert h == train.code_hash(TINY.replace(seed=3))  # the recipe has its own hash; this one is code only
    adv = TINY.replace(batch_hook="mclib.attacks.evasion:pgd")
    poison = TINY.replace(data_hook="mclib.attacks.backdoor:poison")
    assert len({h, train.code_hash(adv), train.code_hash(poison)}) == 3
    assert set(train._code_parts(adv)) == {"mclib.models", "mclib.data", "mclib.train:training",
                                           "hook mclib.attacks.evasion:pgd"}
    with pytest.raises(ValueError, match="cannot import hook"):
        train.code_hash(TINY.replace(batch_hook="mclib.nothing:here"))


# ---------------------------------------------------------------- read-only cache (issue 13, 2.5)
def _deny_writes_to(monkeypatch, folders):
    """Make ``folders`` unwritable: chmod for ordinary users; root ignores modes, so the check is told so."""
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
        f.chmod(0o555)
    if os.geteuid() == 0:
        real = checkpoints._check_writable

        def check(folder):
            if Path(folder) in folders:
                raise PermissionError(13, "Permission denied", str(folder))
            real(folder)
        monkeypatch.setattr(checkpoints, "_check_writable", check)


def test_read_only_cache_falls_back_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    models_dir = tmp_path / "ro" / "models"
    _deny_writes_to(monkeypatch, [models_dir])
    calls = _counting_fit(monkeypatch)
    try:
        with pytest.warns(UserWarning, match=r"not writable.*--cache-dir.*MCLIB_CACHE"):
            first = train.train(TINY, cache_dir=tmp_path / "ro", progress=False)
        with pytest.warns(UserWarning, match="not writable"):
            again = train.train(TINY, cache_dir=tmp_path / "ro", progress=False)  # found in the fallback
    finally:
        models_dir.chmod(0o755)
    assert calls == [1] and _same(first.model, again.model)
    assert len(list((tmp_path / "tmp").rglob("*.pt"))) == 1 and not list(models_dir.iterdir())


def test_unwritable_cache_and_fallback_stop_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    folders = [tmp_path / "ro" / "models", tmp_path / "tmp" / f"mclib-cache-{os.getuid()}" / "models"]
    _deny_writes_to(monkeypatch, folders)
    calls = _counting_fit(monkeypatch)
    try:
        with pytest.raises(PermissionError, match=r"--cache-dir.*MCLIB_CACHE"):
            train.train(TINY, cache_dir=tmp_path / "ro", progress=False)
    finally:
        for f in folders:
            f.chmod(0o755)
    assert calls == []


# ---------------------------------------------------------------- permissions, stale temp files (issue 13, 2.6)
@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_checkpoint_mode_follows_the_umask(umask):
    old = os.umask(umask)
    try:
        train.train(TINY, progress=False, retrain=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(checkpoints.checkpoint_path(TINY).stat().st_mode) == 0o666 & ~umask


def test_stale_temporary_files_are_removed():
    path = checkpoints.checkpoint_path(TINY)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    own = folder / f".{path.name}.999999.deadbeef.tmp"  # a killed save of this recipe
    other = folder / ".mlp-digits-0123456789abcdef.pt.999999.cafe0123.tmp"  # of another recipe
    busy = folder / ".mlp-digits-fedcba9876543210.pt.999999.cafe0123.tmp"  # being written right now
    foreign = folder / "tmpab12cd.tmp"  # not a name mclib writes: someone else's file
    for f in (own, other, busy, foreign):
        f.touch()
    writer = filelock.FileLock(str(folder / "mlp-digits-fedcba9876543210.pt.lock"))
    with writer:
        train.train(TINY, progress=False)
    assert not own.exists() and not other.exists()
    assert busy.exists() and foreign.exists()
    own.touch()
    train.train(TINY, progress=False)  # a cache hit cleans too
    assert not own.exists()


# ---------------------------------------------------------------- a shared cache under concurrency (issue 19)
_CHILD = r"""
import hashlib, pathlib, sys, time
from mclib import train
work, me, mode, peers = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
recipe = train.Recipe(arch="mlp", dataset="digits", epochs=1, batch_size=64, n_train=128, arch_kwargs={"hidden": (16,)})
real_fit = train.fit
def fit(*a, **k):
    with open(work / "fits", "a") as fh:
        fh.write(me + "\n")
    if mode == "hang":
        while True:
            time.sleep(1)
    time.sleep(3)  # hold the lock while the other process arrives
    return real_fit(*a, **k)
train.fit = fit
(work / f"ready-{me}").touch()
while len(list(work.glob("ready-*"))) < peers:  # start train() together
    time.sleep(0.02)
model = train.train(recipe, progress=False).model
print(hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).hexdigest())
"""


def _child(tmp_path, me, mode, peers):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(script), str(tmp_path), me, mode, str(peers)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_train_once_and_share_the_weights(tmp_path):
    procs = [_child(tmp_path, str(i), "train", 2) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert (tmp_path / "fits").read_text().split() in (["0"], ["1"])  # trained exactly once
    digests = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(digests) == 1
    parent = train.train(TINY, progress=False).model
    assert hashlib.sha256(b"".join(t.numpy().tobytes() for t in parent.state_dict().values())).hexdigest() in digests


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_lock_of_a_killed_process_is_recovered(tmp_path):
    proc = _child(tmp_path, "0", "hang", 1)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "fits").exists():  # it is training: holds the lock, its temp file exists
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.1)
        lock = checkpoints.lock_path(checkpoints.checkpoint_path(TINY))
        with pytest.raises(filelock.Timeout):
            filelock.FileLock(str(lock)).acquire(timeout=0)
        assert list(lock.parent.glob("*.tmp"))
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs in the child
        proc.communicate()
    res = train.train(TINY, progress=False)  # neither blocked by the dead lock nor by its temp file
    assert res.metrics["test_acc"] > 0
    assert not list(lock.parent.glob("*.tmp"))


# ---------------------------------------------------------------- one training loop (issue 18)
def _reference_fit(model, X, y, epochs, batch_size, lr, optimizer, weight_decay, momentum, generator, batch_hook,
                   callback):
    """The minibatch loop of mclib.train.fit before issue 18 (commit 1524724), kept verbatim as the reference."""
    import torch.nn.functional as F

    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = (len(X) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch) if optimizer == "sgd" else None
    losses, step = [], 0
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=generator)
        for i in range(0, len(X), batch_size):
            idx = order[i:i + batch_size]
            xb, yb = X[idx], y[idx]
            if batch_hook is not None:
                xb = batch_hook(model, xb, yb).detach()
            model.train()
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
            step += 1
            if callback is not None:
                callback(step, model, losses[-1])
    model.eval()
    return losses


def _reference_fit_channels_last(model, X, y, *, batch_hook, **kw):
    """The reference loop above in fit's channels-last layout (issue 31): the model converted before the loop
    and back after it, each batch converted after the hook (the layout only; the steps are the old ones)."""
    cl = torch.channels_last
    model.to(memory_format=cl)
    try:
        return _reference_fit(model, X, y, batch_hook=lambda m, x, yb: batch_hook(m, x, yb).contiguous(memory_format=cl),
                              **kw)
    finally:
        model.to(memory_format=torch.contiguous_format)


@pytest.mark.parametrize("optimizer,weight_decay", [("adam", 0.0), ("adam", 1e-3), ("sgd", 5e-4)])
def test_fit_is_bit_identical_to_the_loop_before_issue_18(optimizer, weight_decay):
    """fit with its new loss and batch_modules parameters left at their defaults takes exactly the old steps:
    the same weights bit for bit, the same losses, the same generator state afterwards. (A convolutional
    model trains in the channels-last layout since issue 31, so the reference runs in that layout too; its
    agreement with the NCHW loop is the next test's.)"""
    from mclib import models
    from mclib.attacks import pgd

    X, y = torch.rand(70, 1, 8, 8, generator=torch.Generator().manual_seed(5)), torch.arange(70) % 4
    hook = lambda m, x, yb: pgd(m, x, yb, eps=0.05, steps=2)  # noqa: E731  (random start: global RNG, reseeded)
    runs = []
    for fn in (train.fit, _reference_fit_channels_last):
        torch.manual_seed(0)
        model = models.build("vgg_bn", in_shape=(1, 8, 8), num_classes=4, widths=(4, "M", 8))
        gen, steps = torch.Generator().manual_seed(1), []
        kw = dict(epochs=2, batch_size=16, lr=0.01, optimizer=optimizer, weight_decay=weight_decay, momentum=0.9,
                  generator=gen, batch_hook=hook, callback=lambda s, m, l: steps.append((s, l)))
        losses = fn(model, X, y, **kw, progress=False) if fn is train.fit else fn(model, X, y, **kw)
        runs.append((model, losses, steps, gen.get_state()))
    (new, l_new, s_new, g_new), (old, l_old, s_old, g_old) = runs
    assert len(l_new) == 10 and l_new == l_old and s_new == s_old and torch.equal(g_new, g_old)
    assert not new.training and _same(new, old)
    assert sorted(new.state_dict()) == sorted(old.state_dict())


def _longest_reduction(model) -> int:
    """The longest dot product of a forward pass: in_channels/groups * kernel area (conv), in_features (linear)."""
    import math
    return max(m.in_features if isinstance(m, torch.nn.Linear) else m.in_channels // m.groups * math.prod(m.kernel_size)
               for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))


@pytest.mark.parametrize("arch,shape", [("cnn", (1, 28, 28)), ("vgg_bn", (3, 8, 8))])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fit_channels_last_agrees_with_the_nchw_loop_to_float32_rounding(arch, shape, optimizer):
    """Issue 31: fit trains a convolutional model in the channels-last layout -- the same arithmetic in another
    summation order. Against the NCHW loop before it (same seeds, data order, optimiser): every loss agrees
    within the worst-case rounding of a float32 dot product of the net's longest length n,
    |dL| <= n * u * |L| (u = 2**-24) per step taken, the weights at the end within the same relative bound of
    their scale (SGD; Adam divides by sqrt(v), so a gradient that is zero in exact arithmetic -- a conv bias
    before BatchNorm, which BatchNorm cancels -- is rounding noise stepped by +-lr either way, invisible in
    the loss); the model is back in the standard layout afterwards, also when a callback stops training."""
    from mclib import models

    n_in = 96
    X = torch.rand(n_in, *shape, generator=torch.Generator().manual_seed(5))
    y = torch.arange(n_in) % 4
    runs, layouts = [], []

    def watch(step, model, loss):
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
        layouts.append(conv.weight.is_contiguous(memory_format=torch.channels_last)
                       and not conv.weight.is_contiguous())

    for fn in (train.fit, _reference_fit):
        torch.manual_seed(0)
        model = models.build(arch, in_shape=shape, num_classes=4, **({"widths": (4, "M", 8)} if arch == "vgg_bn" else {}))
        kw = dict(epochs=2, batch_size=32, lr=0.01, optimizer=optimizer, weight_decay=0.0, momentum=0.9,
                  generator=torch.Generator().manual_seed(1), batch_hook=None,
                  callback=watch if fn is train.fit else None)
        losses = fn(model, X, y, **kw, progress=False) if fn is train.fit else fn(model, X, y, **kw)
        runs.append((model, torch.tensor(losses, dtype=torch.float64)))
    (new, l_new), (old, l_old) = runs
    assert layouts == [True] * 6                     # the steps ran channels-last
    assert all(p.is_contiguous() for p in new.parameters())
    bound = _longest_reduction(new) * 2.0 ** -24
    steps = torch.arange(1, len(l_new) + 1, dtype=torch.float64)
    assert ((l_new - l_old).abs() <= steps * bound * l_old.abs()).all(), (l_new - l_old).abs().max()
    for a, b in zip(new.state_dict().values(), old.state_dict().values()):
        if a.is_floating_point() and optimizer == "sgd":   # Adam: see the docstring
            assert (a - b).abs().max() <= len(steps) * bound * b.abs().max().clamp_min(1.0)

    def stop(step, model, loss):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train.fit(new, X, y, epochs=1, batch_size=32, callback=stop, progress=False)
    assert all(p.is_contiguous() for p in new.parameters())


def test_fit_loss_and_batch_modules():
    """A custom loss sees the module batch_modules gives for its batch; batch_modules draws once per epoch."""
    X, y = torch.rand(40, 1, 8, 8), torch.randint(0, 10, (40,))
    model = TINY.build()
    calls, seen = [], []

    class Scaled(torch.nn.Module):
        def __init__(self, inner, k):
            super().__init__()
            self.inner, self.k = inner, k

        def forward(self, x):
            return self.inner(x) * self.k

    def modules(gen, n):
        calls.append(n)
        return [Scaled(model, k) for k in range(1, n + 1)]

    def loss(m, x, yb):
        seen.append(m.k)
        return torch.nn.functional.cross_entropy(m(x), yb)

    losses = train.fit(model, X, y, epochs=2, batch_size=16, loss=loss, batch_modules=modules, progress=False)
    assert calls == [3, 3] and seen == [1, 2, 3, 1, 2, 3] and len(losses) == 6
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'; valid: adam, sgd"):
        train.fit(model, X, y, optimizer="lbfgs", progress=False)


def test_resolve_imports_hooks_only_from_mclib_or_allowed_packages(monkeypatch):
    from mclib.attacks import backdoor

    assert train.resolve("mclib.attacks.backdoor:poison") is backdoor.poison
    with pytest.raises(ValueError, match=r"hook 'os:system' is in module 'os', outside the packages hooks may "
                                         r"come from \(mclib\); allow its package first with "
                                         r"mclib.train.allow_hooks\('os'\)"):
        train.resolve("os:system")
    with pytest.raises(ValueError, match="outside the packages"):
        train.resolve("mclibx.evil:f")  # a prefix of the name is not the package
    with pytest.raises(ValueError, match="written 'module:function' with Python identifiers"):
        train.resolve("mclib.attacks.backdoor:poison; import os")
    with pytest.raises(ValueError, match="written 'module:function'"):
        train.resolve("a:b:c")
    with pytest.raises(ValueError, match="not a function"):
        train.resolve("mclib.train:OPTIMIZERS")
    with pytest.raises(ValueError, match="outside the packages"):
        train.train(TINY.replace(data_hook="json:loads"), progress=False)
    monkeypatch.setattr(train, "HOOK_PACKAGES", train.HOOK_PACKAGES)
    assert train.allow_hooks("json") == {"mclib", "json"}
    import json

    assert train.resolve("json:loads") is json.loads
    with pytest.raises(ValueError, match="allow_hooks: 'not a name' is not a module name"):
        train.allow_hooks("not a name")


def test_context_model_trains_once_with_the_context_settings(tmp_path, monkeypatch):
    """ctx.model trains or loads through train.train with the context's device, cache and data root."""
    from mclib import config

    ctx = config.Context(preset=config.get_preset("smoke"), device=torch.device("cpu"), seed=0, data_root=None,
                         cache_dir=tmp_path / "cache")
    calls = []
    real = train.train
    monkeypatch.setattr(train, "train", lambda r, **kw: calls.append(kw) or real(r, **kw))
    res = ctx.model(TINY, progress=False)
    assert calls == [{"device": ctx.device, "cache_dir": ctx.cache_dir, "data_root": None, "retrain": False,
                      "progress": False}]
    assert res.recipe == TINY and isinstance(res.model, torch.nn.Module) and not res.model.training
    assert checkpoints.checkpoint_path(TINY, ctx.cache_dir).exists()
    assert set(res.metrics) == {"train_loss", "train_acc", "test_loss", "test_acc", "seconds"}
    assert not hasattr(res.model, "mclib_metrics") and not hasattr(res.model, "mclib_recipe")  # nothing attached
    with pytest.raises(TypeError):
        res.metrics["test_acc"] = 1.0
    with pytest.raises(AttributeError):
        res.model = None
    again = ctx.model(TINY, progress=False)  # from the cache: the same weights and metrics
    assert _same(again.model, res.model) and dict(again.metrics) == dict(res.metrics)
    changed = ctx.model(TINY, seed=1, progress=False)
    assert changed.recipe == TINY.replace(seed=1)
    monkeypatch.setattr(train, "train", lambda r, **kw: calls.append(r) or "result")
    assert ctx.model(arch="mlp", epochs=1) == "result"
    assert calls[-1] == train.recipe_for(ctx, arch="mlp", epochs=1)
    with pytest.raises(TypeError, match="recipe must be a mclib.train.Recipe or None, got str"):
        ctx.model("mlp")
