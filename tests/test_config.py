import pytest
import torch

from mclib import config


def test_presets_are_data_with_three_tables():
    sizes = {name: config.get_preset(name) for name in config.PRESET_NAMES}
    assert sizes["smoke"].n_train < sizes["quick"].n_train < sizes["paper"].n_train
    assert sizes["quick"].dataset == "mnist5k"


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="smoke, quick, paper"):
        config.get_preset("fast")


def test_unknown_device_lists_valid_ones():
    with pytest.raises(ValueError, match="auto, cpu, cuda, mps"):
        config.get_device("tpu")


def test_auto_device_and_unavailable_cuda():
    assert config.get_device("cpu").type == "cpu"
    assert config.get_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            config.get_device("cuda")


def test_seeding_is_reproducible():
    config.seed_everything(3)
    a = torch.rand(4)
    config.seed_everything(3)
    assert torch.equal(a, torch.rand(4))
    with pytest.raises(ValueError):
        config.seed_everything(-1)


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("MCLIB_CACHE", str(tmp_path / "env"))
    assert config.cache_dir() == tmp_path / "env"
    assert config.cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("MCLIB_CACHE")
    assert config.cache_dir().name == ".cache"


def test_setup_returns_context_and_sections():
    ctx = config.setup("smoke", "cpu", 1, style=False)
    assert ctx.preset.name == "smoke" and ctx.device.type == "cpu" and ctx.seed == 1
    with pytest.raises(ValueError, match="no preset file for chapter"):
        ctx.section("no_such_chapter")
    g1, g2 = ctx.generator(), ctx.generator()
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
