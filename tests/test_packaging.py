"""Packaging: environment.yml and pyproject.toml name the same packages with the same version bounds, and the
book runner's packages are an optional extra that the science never needs."""
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import yaml
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _reqs(specs) -> dict[str, str]:
    out = {}
    for s in specs:
        r = Requirement(s)
        out[_canon(r.name)] = str(r.specifier)
    return out


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_matches_pyproject():
    project = _project()
    extras = project["optional-dependencies"]
    wanted = _reqs(project["dependencies"] + extras["book"] + [d for d in extras["dev"] if Requirement(d).name != "mclib"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("python=3.11") for d in conda) and "pip" in conda
    have = _reqs(pip)
    assert set(have) == set(wanted), f"only in pyproject: {set(wanted) - set(have)}; only in environment.yml: {set(have) - set(wanted)}"
    drift = {k: (wanted[k], have[k]) for k in wanted if wanted[k] != have[k]}
    assert not drift, f"version bounds differ (pyproject, environment.yml): {drift}"


def test_pins_admit_the_torch_on_this_disk():
    project = _project()
    reqs = _reqs(project["dependencies"] + project["optional-dependencies"]["book"])
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(reqs["torch"]).contains("2.14.1") and SpecifierSet(reqs["torchvision"]).contains("0.29.1")
    assert SpecifierSet(reqs["jupyter-book"]).contains("1.0.4") and not SpecifierSet(reqs["jupyter-book"]).contains("2.0.0")


# ---------------------------------------------------------------- the book extra (issue 18)
def test_the_book_runner_packages_are_an_extra_that_dev_includes():
    from mclib import _optional

    project = _project()
    core, extras = _reqs(project["dependencies"]), project["optional-dependencies"]
    book = _reqs(extras["book"])
    assert set(book) == {_canon(d) for d in _optional.BOOK_MODULES.values()}
    assert {"papermill", "jupyter-book", "sphinxcontrib-bibtex", "django-static-mathjax", "submitit"} <= set(book)
    assert not set(book) & set(core), "a book package is still a required dependency"
    assert "mclib[book]" in extras["dev"]  # make setup installs .[dev]
    assert '-e ".[dev]"' in (ROOT / "Makefile").read_text()


#: Top-level modules of the book extra, hidden from the science below (sphinx* too: jupyter-book's stack).
_HIDDEN = ("papermill", "nbformat", "nbclient", "jupyter_client", "ipykernel", "IPython", "jupyter_book", "myst_nb",
           "myst_parser", "pybtex", "mathjax", "submitit", "yaml")

_BARE = textwrap.dedent("""
    import importlib, os, pkgutil, sys

    HIDDEN = set(sys.argv[1].split(","))


    class Hide:
        \"\"\"A meta-path finder in front of all others: the book packages look uninstalled.\"\"\"

        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in HIDDEN or top.startswith("sphinx"):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden: no book extra)", name=name)
            return None


    sys.meta_path.insert(0, Hide())
    import mclib
    import pytest

    for hidden in ("yaml", "papermill", "sphinxcontrib.bibtex", "submitit"):
        try:
            importlib.import_module(hidden)
        except ImportError:
            continue
        sys.exit(f"{hidden} is not hidden")
    for info in pkgutil.walk_packages(mclib.__path__, "mclib."):
        if info.name in ("mclib.book", "mclib.jobs", "mclib.runner"):
            try:
                importlib.import_module(info.name)
            except ImportError as err:
                assert 'pip install "mclib[book]"' in str(err), (info.name, err)
                print("guarded", info.name)
                continue
            sys.exit(f"{info.name} imported without the book extra")
        importlib.import_module(info.name)
        print("imported", info.name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN or m.startswith("sphinx"))
    assert not leaked, leaked


    @pytest.fixture(autouse=True)
    def _isolated(tmp_path_factory, monkeypatch):
        # what tests/conftest.py does, without its book import
        base = tmp_path_factory.mktemp("mclib")
        monkeypatch.setenv("MCLIB_BUILD_DIR", str(base / "_build"))
        monkeypatch.setenv("MCLIB_CACHE", str(base / "cache"))
        import torch
        torch.manual_seed(0)


    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--noconftest", *sys.argv[2:]],
                         plugins=[sys.modules[__name__]]))
""")


def test_science_imports_and_its_tests_pass_without_the_book_extra(tmp_path):
    """Every science module imports, and unit tests of the science pass, with the book packages hidden;
    mclib.book and mclib.jobs stop with the message naming pip install "mclib[book]"."""
    script = tmp_path / "bare.py"
    script.write_text(_BARE)
    tests = [str(ROOT / "tests" / t) for t in ("test_stats.py", "test_models.py", "test_torchutil.py")]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, str(script), ",".join(_HIDDEN), *tests], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "guarded mclib.book" in log and "guarded mclib.jobs" in log
    for name in ("mclib.train", "mclib.curves", "mclib.paths", "mclib.claims", "mclib.attacks.evasion", "mclib.cards"):
        assert f"imported {name}\n" in log
    assert " passed" in log and "failed" not in log


def test_book_import_without_the_extra_names_the_install_command(monkeypatch):
    from mclib import _optional

    monkeypatch.setattr(_optional, "missing", lambda modules: ["papermill", "yaml"])
    with pytest.raises(ImportError) as err:
        _optional.require_book("mclib.book (the book runner)")
    assert str(err.value) == ('mclib.book (the book runner) needs the optional book packages; missing here: '
                              'papermill, pyyaml. Install them with: pip install "mclib[book]"')
    monkeypatch.undo()
    assert _optional.missing(["json", "no_such_module_xyz", "no_such_pkg.sub"]) == ["no_such_module_xyz",
                                                                                    "no_such_pkg.sub"]
