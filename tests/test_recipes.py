"""Training recipes as preset data (issue 34, point 3): the optimiser, momentum, weight decay and augmentation of
the standard recipe come from ``mclib/presets/recipe.toml``; quick and smoke keep exactly the recipe (and so the
checkpoint keys and claims) they had -- Adam at 1e-3, no weight decay, no augmentation."""
import hashlib
import json

import pytest
import torch

from mclib import config, data, train


def _old_key(recipe: train.Recipe) -> str:
    """The key as mclib computed it before ``augment`` existed: the JSON of every other field."""
    import dataclasses

    fields = {k: v for k, v in dataclasses.asdict(recipe).items() if k != "augment"}
    fields["split_version"] = data.SPLIT_VERSION
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=list).encode()).hexdigest()[:16]


@pytest.mark.parametrize("preset", ["smoke", "quick"])
def test_quick_and_smoke_recipes_are_unchanged(preset):
    r = train.recipe_for(config.get_preset(preset), arch="cnn")
    assert (r.optimizer, r.lr, r.weight_decay, r.augment) == ("adam", 1e-3, 0.0, "none")
    assert r.key == _old_key(r)                    # same checkpoint as before the recipe became preset data
    assert "augment" not in json.loads(r.to_json())


def test_paper_recipe_is_garipovs_vgg16_endpoint_recipe():
    r = train.recipe_for(config.get_preset("paper"), arch="vgg16_bn")
    assert (r.optimizer, r.lr, r.momentum, r.weight_decay, r.augment, r.epochs) == ("sgd", 0.05, 0.9, 5e-4, "crop_flip", 200)
    assert json.loads(r.to_json())["augment"] == "crop_flip"     # a recipe that augments has its own key
    assert r.key != r.replace(augment="none").key


def test_unknown_augmentation_is_refused_where_it_enters():
    with pytest.raises(ValueError, match="unknown augment 'cutout'; valid: none, crop_flip"):
        train.Recipe(arch="mlp", dataset="digits", augment="cutout")


def test_crop_flip_is_a_padded_crop_then_a_flip():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(16, 3, 10, 12)
    out = data.crop_flip(x, g, pad=2)
    # replay the draws (same order: dy, dx, flip) and build each image by slicing
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 5, (16,), generator=g), torch.randint(0, 5, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for k in range(16):
        ref = padded[k, :, dy[k]:dy[k] + 10, dx[k]:dx[k] + 12]
        ref = ref.flip(-1) if flip[k] else ref
        assert torch.equal(out[k], ref)
    assert out.shape == x.shape and flip.any() and (~flip).any()
    same = data.crop_flip(x, torch.Generator().manual_seed(1), pad=0)   # pad 0: the image or its mirror
    assert all(torch.equal(s, i) or torch.equal(s, i.flip(-1)) for s, i in zip(same, x))


def test_training_with_augmentation_is_deterministic_and_differs_from_without():
    r = train.Recipe(arch="mlp", dataset="digits", epochs=1, batch_size=64, n_train=128, arch_kwargs={"hidden": (16,)},
                     augment="crop_flip")
    a = train.train(r, progress=False, retrain=True).model
    b = train.train(r, progress=False, retrain=True).model
    c = train.train(r.replace(augment="none"), progress=False, retrain=True).model
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
