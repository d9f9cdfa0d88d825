import json

import pytest
import torch

from mclib import train

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
    assert _same(a, b)
    more = train.train(TINY.replace(epochs=10, n_train=None), progress=False)
    assert more.mclib_metrics["test_acc"] > 0.85


def test_cache_hit_returns_the_same_model_without_training(monkeypatch):
    first = train.train(TINY, progress=False)
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("should have loaded from the cache"))
    assert _same(first, train.train(TINY, progress=False))
    assert not list(train.checkpoint_path(TINY).parent.glob("*.tmp"))  # atomic write left no temp file


@pytest.mark.parametrize("damage", ["truncate", "garbage", "tensor", "recipe"])
def test_corrupt_or_mismatching_checkpoint_is_retrained(damage):
    model = train.train(TINY, progress=False)
    path = train.checkpoint_path(TINY)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint")
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
    assert _same(model, again)
    train.load_checkpoint(path, TINY)  # the rewritten file is valid again


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
