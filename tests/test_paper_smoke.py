"""The ``paper-smoke`` preset (issue 27): the paper preset's settings -- datasets, architectures, triggers, layer
lists, optimiser, every value that is not a number -- at the smoke preset's sizes, so that the paper's code paths
can run at test sizes. The preset files already refuse a key that one table has and another lacks
(:func:`mclib.config.check_preset_file`), so a paper table cannot gain a key the smoke table lacks."""
import pytest

from mclib import config


def test_is_size_and_compose():
    assert config.is_size(3) and config.is_size(0.5) and config.is_size([1, 2]) and config.is_size({"a": {"b": [1]}})
    assert not config.is_size(True) and not config.is_size("vgg16") and not config.is_size(["cnn", "mlp"])
    assert not config.is_size({"norm": "linf", "steps": 5}) and not config.is_size([["corner", "single"]])
    got = config.compose({"arch": "vgg16", "n": 1000, "eps": [8, 16], "spec": {"p": "c", "s": 3}},
                         {"arch": "cnn", "n": 20, "eps": [1], "spec": {"p": "x", "s": 1}})
    assert got == {"arch": "vgg16", "n": 20, "eps": [1], "spec": {"p": "c", "s": 3}}


def test_paper_smoke_is_the_paper_settings_at_smoke_sizes():
    ps, paper, smoke = (config.get_preset(n) for n in ("paper-smoke", "paper", "smoke"))
    own = config.derived_sizes("paper-smoke")   # paper-smoke's own sizes (mclib/presets/derived/paper-smoke.toml)
    assert (ps.name, ps.dataset, ps.arch) == ("paper-smoke", paper.dataset, paper.arch)
    for f in ("n_train", "n_test", "epochs", "batch_size", "lr"):
        assert getattr(ps, f) == own.get("base", {}).get(f, getattr(smoke, f)), f
    for path in sorted(config._PRESET_DIR.glob("*.toml")):
        if path.stem == "base":
            continue
        got, p, s = ps.section(path.stem), paper.section(path.stem), smoke.section(path.stem)
        assert set(got) == set(p) == set(s)
        for k in got:
            size = own.get(path.stem, {}).get(k, s[k])
            assert got[k] == (size if config.is_size(p[k]) else p[k]), (path.stem, k)
    # the paper's architectures, datasets and recipe: the code paths a GPU user runs
    assert ps.section("curves")["archs"] == paper.section("curves")["archs"]
    assert ps.section("across")["datasets"] == ["cifar10", "svhn"]
    assert ps.section("recipe")["optimizer"] == "sgd" and ps.section("recipe")["augment"] == "crop_flip"


def test_paper_smoke_is_accepted_where_presets_are_named():
    assert config.check_preset("paper-smoke") == "paper-smoke"
    with pytest.raises(ValueError, match="smoke, quick, paper, paper-smoke"):
        config.check_preset("paper_smoke")
