"""environment.yml and pyproject.toml name the same packages with the same version bounds."""
import re
import tomllib
from pathlib import Path

import yaml
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


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _reqs(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("python=3.11") for d in conda) and "pip" in conda
    have = _reqs(pip)
    assert set(have) == set(wanted), f"only in pyproject: {set(wanted) - set(have)}; only in environment.yml: {set(have) - set(wanted)}"
    drift = {k: (wanted[k], have[k]) for k in wanted if wanted[k] != have[k]}
    assert not drift, f"version bounds differ (pyproject, environment.yml): {drift}"


def test_pins_admit_the_torch_on_this_disk():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = _reqs(project["dependencies"])
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(reqs["torch"]).contains("2.14.1") and SpecifierSet(reqs["torchvision"]).contains("0.29.1")
    assert SpecifierSet(reqs["jupyter-book"]).contains("1.0.4") and not SpecifierSet(reqs["jupyter-book"]).contains("2.0.0")
