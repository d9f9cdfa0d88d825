"""The paper path (issue 27): the small learnable CIFAR-10 and SVHN that ``make paper-path`` builds the book on
(``tests/paper_data.py``) load through :mod:`mclib.data` as the official files do, and the ``paper-smoke`` preset
is the paper's settings at small sizes: its own sizes (``mclib/presets/derived/paper-smoke.toml``) may only be
sizes. The full build is ``make paper-path`` (CI), not part of ``make test``."""
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mclib import config, data

sys.path.insert(0, str(Path(__file__).parent))
import paper_data  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return paper_data.write(tmp_path_factory.mktemp("paper_data"), n_train=500, n_test=200)


def _load(name, split, root, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X, y = data.load(name, split, data_root=root, **kw)
    return X, y, [str(w.message) for w in caught]


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_written_files_load_through_mclib_data(root, name):
    for split, n in (("train", 500), ("test", 200)):
        X, y, warned = _load(name, split, root)
        assert X.shape == (n, 3, 32, 32) and X.dtype == torch.float32 and y.dtype == torch.int64
        assert 0.0 <= float(X.min()) and float(X.max()) <= 1.0 and float(X.std()) > 0.05
        assert sorted(set(y.tolist())) == list(range(10))                    # SVHN's 10 is read as the digit 0
        assert np.bincount(y.numpy(), minlength=10).min() >= n // 10 - 1     # balanced
        # the same reader as the official files; only the warning tells them apart
        assert any("not the official files" in w for w in warned), warned
    X, y, _ = _load(name, "test", root, n=37)
    assert X.shape == (37, 3, 32, 32)


def test_written_files_are_the_format_torchvision_reads(root, monkeypatch):
    """torchvision's own readers (md5 check switched off) see the same images and labels."""
    import torchvision.datasets as tvd
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(svhn, "check_integrity", lambda *a, **k: True)
    ds = tvd.CIFAR10(str(root), train=True)
    X, y, _ = _load("cifar10", "train", root)
    assert torch.equal(torch.from_numpy(ds.data).permute(0, 3, 1, 2).float() / 255, X)
    assert ds.targets == y.tolist() and ds.classes[0] == "airplane"
    ds = tvd.SVHN(str(root / "svhn"), split="test")
    X, y, _ = _load("svhn", "test", root)
    assert torch.equal(torch.from_numpy(ds.data).float() / 255, X) and ds.labels.tolist() == y.tolist()


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_written_data_are_learnable(root, name):
    """Each class has its own pattern: nearest class mean on the training images is far above chance on the test."""
    X, y, _ = _load(name, "train", root)
    Xt, yt, _ = _load(name, "test", root)
    means = torch.stack([X[y == c].flatten(1).mean(0) for c in range(10)])
    acc = float((torch.cdist(Xt.flatten(1), means).argmin(1) == yt).float().mean())
    assert acc > 0.6, acc


def test_a_truncated_or_missing_file_names_the_folder(tmp_path):
    folder = paper_data.write_cifar10(tmp_path, n_train=50, n_test=20)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(data.DatasetUnavailable, match="could not be read"):
        _load("cifar10", "test", tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(data.DatasetUnavailable, match="data_batch_3") as info:
        _load("cifar10", "train", tmp_path)
    assert str(folder) in str(info.value) and "download=True" in str(info.value)


# ------------------------------------------------------------------------------------------ the preset
def test_paper_smoke_names_the_papers_datasets_and_architectures():
    ps, paper = config.get_preset("paper-smoke"), config.get_preset("paper")
    assert (ps.dataset, ps.arch) == (paper.dataset, paper.arch) == ("cifar10", "resnet20")
    for path in sorted(config._PRESET_DIR.glob("*.toml")):
        if path.stem == "base":
            continue
        got, want = ps.section(path.stem), paper.section(path.stem)
        assert set(got) == set(want)
        for k, v in want.items():
            if not config.is_size(v):   # every setting -- architectures, datasets, triggers, layers -- is the paper's
                assert got[k] == v, (path.stem, k)
    assert ps.section("across")["datasets"] == ["cifar10", "svhn"]
    assert ps.section("repair")["second_arch"] == "vgg16" and ps.section("paths")["second_arch"] == "vgg16"
    assert ps.section("som")["archs"] == ["resnet20", "resnet18_cifar"]


def test_the_c_chapters_pair_each_paper_architecture_with_its_dataset():
    """Zhao et al. measure CIFAR-10 with VGG and SVHN with ResNet: every C chapter's [paper] table names a dataset
    for each of its architectures, and each chapter covers every dataset C8 requires (across.toml), so that each of
    C1..C7 is measured on both; quick and smoke keep their one dataset (an empty table)."""
    paper = config.get_preset("paper")
    required = set(paper.section("across")["datasets"])
    assert required == {"cifar10", "svhn"}
    archs = {"curves": paper.section("curves")["archs"],
             "robustness": [*paper.section("robustness")["archs"], *paper.section("robustness")["map_archs"]],
             "repair": [paper.arch, paper.section("repair")["second_arch"]]}
    for chapter, names in archs.items():
        table = paper.section(chapter)["datasets"]
        assert set(names) <= set(table), (chapter, names, dict(table))
        assert {data.dataset_of(a, table, paper.dataset) for a in names} == required, chapter
        assert {data.dataset_of(a, table, paper.dataset) for a in names if a.startswith("vgg")} == {"cifar10"}, chapter
        assert {data.dataset_of(a, table, paper.dataset) for a in names if a.startswith("resnet")} == {"svhn"}, chapter
        for name in ("smoke", "quick"):
            assert dict(config.get_preset(name).section(chapter)["datasets"]) == {}, (name, chapter)


def test_the_record_check_names_a_c_claim_without_svhn(tmp_path):
    """``python tests/paper_data.py --check-records BUILD`` (after the paper-path build): every C record must name
    cifar10 and svhn, in its own ``dataset`` or its per-architecture entries."""
    import json

    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    both = {"arch": "resnet20", "dataset": "svhn", "other_archs": {"vgg16": {"dataset": "cifar10"}}}
    for cid in paper_data.C_CLAIMS:
        (claims_dir / f"{cid}.json").write_text(json.dumps({"values": both}))
    (claims_dir / "C1.json").write_text(json.dumps({"values": {"archs": {"vgg16_bn": {"dataset": "cifar10"},
                                                                          "resnet20": {"dataset": "svhn"}}}}))
    assert paper_data.check_c_records(tmp_path)["C1"] == {"cifar10", "svhn"}
    (claims_dir / "C6.json").write_text(json.dumps({"values": {"archs": {"vgg16_bn": {"dataset": "cifar10"}}}}))
    (claims_dir / "C4.json").unlink()
    with pytest.raises(AssertionError, match=r"C4: no record.*C6: measured on \['cifar10'\], not on \['svhn'\]"):
        paper_data.check_c_records(tmp_path)


def test_paper_smoke_own_sizes_are_sizes_of_known_keys():
    own = config.derived_sizes("paper-smoke")
    assert own, "mclib/presets/derived/paper-smoke.toml is read"
    ps = config.get_preset("paper-smoke")
    for chapter, table in own.items():
        got = {f: getattr(ps, f) for f in ("n_train", "n_test", "epochs", "batch_size", "lr")} \
            if chapter == "base" else ps.section(chapter)
        for k, v in table.items():
            assert got[k] == v, (chapter, k)


@pytest.mark.parametrize("text, match", [
    ("[repair]\nsecond_arch = 'mlp'\n", "is a setting"),
    ("[repair]\ncurve_stepz = 3\n", "unknown key"),
    ("[nochapter]\nn = 3\n", "not a preset file's table"),
    ("[repair]\ncurve_steps = -3\n", "allowed"),
    ("[repair]\ncurve_steps = [3]\n", "kind number"),
    ("[base]\narch = 'cnn'\n", "is a setting"),
])
def test_a_bad_derived_sizes_file_is_refused_naming_it(tmp_path, monkeypatch, text, match):
    (tmp_path / "paper-smoke.toml").write_text(text)
    monkeypatch.setattr(config, "_DERIVED_DIR", tmp_path)
    with pytest.raises(ValueError, match=match) as info:
        config.get_preset("paper-smoke").section("repair")
    assert "paper-smoke.toml" in str(info.value)


def test_the_other_presets_ignore_the_derived_sizes():
    """smoke, quick and paper read their own tables only: the derived file changes no value of theirs."""
    import tomllib

    for name in config.PRESET_NAMES:
        p = config.get_preset(name)
        for path in sorted(config._PRESET_DIR.glob("*.toml")):
            with open(path, "rb") as fh:
                table = tomllib.load(fh)[name]
            got = ({f: getattr(p, f) for f in table} if path.stem == "base" else dict(p.section(path.stem)))
            assert got == table, (name, path.stem)


def test_ci_runs_the_paper_path_after_the_cluster_test_and_before_the_book():
    root = Path(__file__).resolve().parents[1]
    make = (root / "Makefile").read_text()
    target = make[make.index("\npaper-path:"):]
    target = target[: target.index("\n\n")]
    assert "tests/paper_data.py" in target and "--preset paper-smoke" in target and "--data-root" in target
    steps = [line.strip() for line in (root / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert steps.index("make cluster-test") < steps.index("make paper-path") < steps.index("make book"), steps


def test_paper_cost_counts_every_chapters_dominant_work():
    """benchmarks/paper_cost.py: the step counts come from the paper tables (grow with them), and the timer runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import paper_cost

    paper, small = paper_cost.chapter_steps("paper"), paper_cost.chapter_steps("paper-smoke")
    assert set(paper) == set(small) >= {"a1_real_paths", "c1_curves", "c2_backdoor_repair", "c6_robustness_hessian"}
    total = lambda work: sum(n for items in work.values() for _, _, n in items)   # noqa: E731
    assert total(paper) > 1000 * total(small) > 0
    for items in paper.values():
        assert all(kind in ("train", "curve", "grad") and n >= 0 for _, kind, n in items)
        assert sum(n for _, _, n in items) > 0
    secs = paper_cost.step_seconds("cnn", torch.device("cpu"), batch=8, iters=1)
    assert set(secs) == {"train", "curve", "grad"} and all(v > 0 for v in secs.values())
