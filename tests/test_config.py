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


def test_setup_turns_on_deterministic_kernels_without_importing_inductor():
    # the first cell of every chapter: deterministic kernels (warn only), and no 3 s Inductor import for it
    import subprocess
    import sys

    code = ("import sys, torch; from mclib import config; config.setup('smoke', 'cpu', 0, style=False); "
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), "
            "'torch._inductor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False"]


# --- bad input: seeds and preset files (issue 13, item 7) ---

@pytest.mark.parametrize("seed", [-1, 3.7, 3.0, "3", True, 2**63])
def test_bad_seed_fails_at_once_naming_the_value(seed):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\), got"):
        config.setup("smoke", "cpu", seed, style=False)
    with pytest.raises(ValueError, match="seed must be an integer"):
        config.seed_everything(seed)


def _preset_file(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(body)
    return path


BASE = ('dataset = "digits"\narch = "cnn"\nn_train = 256\nn_test = 128\nepochs = 3\n'
        'batch_size = 64\nlr = 1e-3\n')
CHAPTER = 'n_pairs = 20\ntolerance = 0.01\nsecond_arch = "mlp"\nsizes = [8, 16]\n'


def _three(table):
    return "".join(f"[{p}]\n{table}\n" for p in config.PRESET_NAMES)


def test_valid_preset_files_pass(tmp_path):
    assert config.check_preset_file(_preset_file(tmp_path, "base.toml", _three(BASE)))["paper"]["n_train"] == 256
    assert config.check_preset_file(_preset_file(tmp_path, "paths.toml", _three(CHAPTER)))["smoke"]["sizes"] == [8, 16]
    for path in sorted(config._PRESET_DIR.glob("*.toml")):  # the shipped presets
        config.check_preset_file(path)


@pytest.mark.parametrize("name, body, message", [
    ("paths.toml", _three(CHAPTER) + "[quick\n", r"paths.toml: not valid TOML"),
    ("paths.toml", _three(CHAPTER).replace("[paper]\n", "[paper]\nn_pair = 3\n"),
     r"paths.toml: \[paper\] unknown key\(s\) \['n_pair'\]"),
    ("paths.toml", _three(CHAPTER) + "[quik]\nn_pairs = 1\n", r"paths.toml: needs exactly the tables .*unknown \['quik'\]"),
    ("paths.toml", _three(CHAPTER).replace("[quick]\nn_pairs = 20", "[quick]\nn_pairs = -20"),
     r"paths.toml: \[quick\] n_pairs = -20: .*allowed: a finite number >= 0"),
    ("paths.toml", _three(CHAPTER).replace("[quick]\nn_pairs = 20", "[quick]\nn_pairs = 2.5"),
     r"paths.toml: \[quick\] n_pairs = 2.5: a count .*allowed: an integer >= 1"),
    ("paths.toml", _three(CHAPTER).replace("[paper]\nn_pairs = 20", '[paper]\nn_pairs = "lots"'),
     r"paths.toml: \[paper\] n_pairs = 'lots': allowed: a number, as in the other tables"),
    ("paths.toml", _three(CHAPTER).replace("[smoke]\nn_pairs = 20\ntolerance = 0.01", "[smoke]\nn_pairs = 20\ntolerance = nan"),
     r"\[smoke\] tolerance = nan: .*finite"),
    ("paths.toml", _three(CHAPTER).replace("[smoke]\nn_pairs = 20\ntolerance = 0.01\nsecond_arch = \"mlp\"\nsizes = [8, 16]",
                                           "[smoke]\nn_pairs = 20\ntolerance = 0.01\nsecond_arch = \"mlp\"\nsizes = [8, -16]"),
     r"\[smoke\] sizes\[1\] = -16"),
    ("base.toml", _three(BASE).replace("[quick]\ndataset = \"digits\"\narch = \"cnn\"\nn_train = 256",
                                       "[quick]\ndataset = \"digits\"\narch = \"cnn\"\nn_train = \"lots\""),
     r"base.toml: \[quick\] n_train = 'lots': allowed: an integer"),
    ("base.toml", _three(BASE).replace("epochs = 3", "epochs = 0"), r"base.toml: \[smoke\] epochs = 0: allowed: an integer >= 1"),
    ("base.toml", _three(BASE).replace("[smoke]\n", "[smoke]\nwidth = 3\n"), r"base.toml: \[smoke\] unknown key\(s\) \['width'\]"),
])
def test_bad_preset_file_names_file_key_value_and_what_is_allowed(tmp_path, name, body, message):
    path = _preset_file(tmp_path, name, body)
    with pytest.raises(ValueError, match=message):
        config.check_preset_file(path)


def test_preset_section_reads_through_the_checks(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "_PRESET_DIR", tmp_path)
    _preset_file(tmp_path, "base.toml", _three(BASE))
    _preset_file(tmp_path, "paths.toml", _three(CHAPTER).replace("[quick]\nn_pairs = 20", "[quick]\nn_pairs = -20"))
    with pytest.raises(ValueError, match=r"paths.toml: \[quick\] n_pairs = -20"):
        config.get_preset("quick").section("paths")


# --------------------------------------------------------------------------- typed chapter sizes
from dataclasses import dataclass  # noqa: E402
from typing import Any, ClassVar  # noqa: E402


@dataclass(frozen=True)
class _Toy(config.Sizes):
    FILE: ClassVar[str] = "toy"
    n: int
    rate: float
    arch: str
    seeds: tuple[int, ...]
    extra: dict[str, Any]


_TOY = {"n": 3, "rate": 1, "arch": "cnn", "seeds": [0, 1], "extra": {"a": 1}}


def test_sizes_from_a_table_are_typed_and_frozen():
    s = _Toy.from_table(_TOY)
    assert s.n == 3 and s.rate == 1 and s.arch == "cnn" and s.seeds == (0, 1) and s.extra == {"a": 1}
    with pytest.raises(AttributeError):
        s.n = 4   # frozen


@pytest.mark.parametrize("change, message", [
    ({"typo": 1}, r"where: unknown key\(s\) \['typo'\].*_Toy has no such field"),
    ({"n": None}, r"where: lacks the key\(s\) \['n'\]"),
    ({"n": 2.5}, r"where n = 2.5: allowed: an integer"),
    ({"n": True}, r"where n = True: allowed: an integer"),
    ({"rate": "fast"}, r"where rate = 'fast': allowed: a number"),
    ({"arch": 3}, r"where arch = 3: allowed: a string"),
    ({"seeds": 0}, r"where seeds = 0: allowed: a list \(a list of an integer\)"),
    ({"seeds": [0, "1"]}, r"where seeds\[1\] = '1': allowed: an integer"),
    ({"extra": [1]}, r"where extra = \[1\]: allowed: a table"),
])
def test_sizes_name_the_key_and_what_is_wrong(change, message):
    table = {k: v for k, v in {**_TOY, **change}.items() if v is not None}
    with pytest.raises((ValueError, TypeError), match=message):
        _Toy.from_table(table, where="where")


def test_sizes_read_names_the_file_and_preset(tmp_path, monkeypatch):
    body = "".join(f"[{p}]\nn = 2\nrate = 0.5\narch = 'cnn'\nseeds = [0]\nextra = {{}}\nmore = 1\n"
                   for p in config.PRESET_NAMES)
    (tmp_path / "toy.toml").write_text(body)
    monkeypatch.setattr(config, "_PRESET_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"toy.toml: \[quick\]: unknown key\(s\) \['more'\]"):
        _Toy.read("quick")
    (tmp_path / "toy.toml").write_text(body.replace("more = 1\n", ""))
    assert _Toy.read("quick").rate == 0.5


def _chapter_sizes():
    from mclib.studies import (across, bonafide, codes, curves, detection, evolution, pairs, percolation, robustness,
                               untrained)
    return [pairs.Sizes, detection.Sizes, codes.Sizes, untrained.Sizes, evolution.Sizes, percolation.Sizes,
            curves.Sizes, bonafide.Sizes, robustness.Sizes, across.Sizes]


def test_every_preset_file_but_base_and_recipe_has_a_sizes_class():
    # recipe.toml and base.toml are the training recipe's and the run's, read by mclib.train and config.Preset
    files = {cls.FILE for cls in _chapter_sizes()}
    assert files == {p.stem for p in config._PRESET_DIR.glob("*.toml")} - {"base", "recipe"}


@pytest.mark.parametrize("preset", [*config.PRESET_NAMES, *config.DERIVED_PRESETS])
def test_every_chapter_sizes_reads_every_preset(preset):
    """Each study's Sizes matches its preset file exactly (keys and types) under every preset, read from a preset
    name, a Preset or a Context alike."""
    for cls in _chapter_sizes():
        s = cls.read(preset)
        assert s == cls.read(config.get_preset(preset))
        assert set(vars(s)) == set(config.check_preset_file(config._PRESET_DIR / f"{cls.FILE}.toml")["smoke"])


def test_sizes_read_from_a_context_and_refuse_an_unknown_preset():
    from mclib.studies import pairs
    ctx = config.setup("smoke", "cpu", style=False)
    assert pairs.Sizes.read(ctx) == pairs.Sizes.read("smoke")
    assert pairs.Sizes.read(ctx).n_pairs == ctx.section("paths")["n_pairs"]
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        pairs.Sizes.read("fast")
