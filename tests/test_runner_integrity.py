"""What the runner promises about whose results a build reads and keeps (issues 26 and 32).

* a chapter that reads other chapters' claims (C8 reads C1-C7) runs after them under every executor, and never reads
  a record another run made;
* an interrupted build loses no finished chapter; a second build on the same folder is refused;
* a claim record edited by hand, truncated, renamed or incomplete is refused, naming the file, and every verdict
  shown is recomputed from the recorded values.
"""
import json
import os
from pathlib import Path

import pytest

from mclib import book, claims, jobs, runner
from mclib.claims import core
from test_book import _notebook, record_a1_in_good, tiny_book  # noqa: F401 - the fixture is used by name


def _holds(values):
    return core.holds(f"x is {values['x']}")


@pytest.fixture
def reader_book(tiny_book, tmp_path, monkeypatch):  # noqa: F811
    """A tiny book whose first chapter ('reader') reads the claim that the slow last chapter ('slow') records."""
    monkeypatch.setitem(core.PAPERS, "Z", "a test paper")
    monkeypatch.setitem(claims.CATALOGUE, "Z1", core.Claim("Z1", "z1", "-", "k", "x", _holds, "notebooks/slow.ipynb"))
    monkeypatch.setitem(claims.CATALOGUE, "Z2", core.Claim("Z2", "z2", "-", "k", "x", _holds, "notebooks/reader.ipynb",
                                                          needs=("Z1",)))
    marker = tmp_path / "slow-finished"
    (tiny_book / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: P\n    chapters:\n"
        "      - file: notebooks/reader\n      - file: notebooks/good\n      - file: notebooks/slow\n")
    _notebook(tiny_book / "notebooks" / "reader.ipynb",
              f"import pathlib\nassert pathlib.Path({str(marker)!r}).exists(), 'reader ran before slow finished'")
    _notebook(tiny_book / "notebooks" / "slow.ipynb",
              f"import pathlib, time\ntime.sleep(4)\npathlib.Path({str(marker)!r}).touch()")
    return tiny_book


def test_needs_come_from_the_catalogue_and_c8_reads_c1_to_c7():
    chapters = [nb for nb in book.notebooks() if nb.stem != "report"]
    needs = book.chapter_needs(chapters)
    assert needs["c8_across_architectures"] == {"c1_curves", "c2_backdoor_repair", "c4_error_injection",
                                                "c6_robustness_hessian"}
    order = [nb.stem for nb in book.order_chapters(chapters, needs, {"c8_across_architectures": 1e9})]
    assert order.index("c8_across_architectures") > order.index("c6_robustness_hessian")  # even if the longest


def test_longest_chain_of_work_starts_first_among_those_ready():
    nbs = [Path(f"notebooks/{n}.ipynb") for n in ("a", "b", "c")]
    order = book.order_chapters(nbs, {"a": set(), "b": set(), "c": {"a"}}, {"a": 5.0, "b": 50.0, "c": 500.0})
    assert [nb.stem for nb in order] == ["a", "c", "b"]     # the long c waits for the short a: a first
    order = book.order_chapters(nbs, {"a": set(), "b": set(), "c": {"a"}}, {"a": 5.0, "b": 50.0, "c": 1.0})
    assert [nb.stem for nb in order] == ["b", "a", "c"]     # 50 > 5 + 1: the longest first
    with pytest.raises(ValueError, match="cycle"):
        book.order_chapters(nbs, {"a": {"c"}, "b": set(), "c": {"a"}})


def test_a_short_chapter_that_another_reads_goes_before_an_equally_short_free_one():
    """Issue 31: c4 (48 s) started after a4 and a10 (54 s each), so c8, which reads c4's claims, ran alone at the
    end of the build while the other core idled."""
    nbs = [Path(f"notebooks/{n}.ipynb") for n in ("a4", "a10", "c4", "c8")]
    needs = {"c8": {"c4"}}
    order = book.order_chapters(nbs, needs, {"a4": 54.0, "a10": 54.0, "c4": 48.0, "c8": 8.0})
    assert [nb.stem for nb in order] == ["c4", "a4", "a10", "c8"]


def test_a_reader_waits_for_what_it_reads_under_two_local_jobs(reader_book):
    """On the old runner the first chapter in the table of contents started at once, beside the slow one."""
    book.build("smoke", html=False, root=reader_book, progress=False,
               executor=jobs.Options(executor="local", jobs=2, poll_s=0.3))
    build = Path(os.environ["MCLIB_BUILD_DIR"])
    assert book.read_run_record(build, Path("notebooks/reader.ipynb"))["status"] == "ok"


def test_a_reader_waits_for_what_it_reads_in_sequence(reader_book):
    result = book.build("smoke", html=False, root=reader_book, progress=False)
    assert list(result["notebooks"]).index("notebooks/reader.ipynb") > list(result["notebooks"]).index(
        "notebooks/slow.ipynb")


def test_only_a_reader_refuses_what_it_reads_when_stale(reader_book):
    with pytest.raises(book.StaleChapters, match=r"read the claims of chapters .*slow \(never executed\)"):
        book.build("smoke", only=["reader"], html=False, root=reader_book, progress=False)


def _record_z1(monkeypatch, **changes):
    monkeypatch.setitem(core.PAPERS, "Z", "a test paper")
    monkeypatch.setitem(claims.CATALOGUE, "Z1", core.Claim("Z1", "z1", "-", "k", "x", _holds, "notebooks/z1.ipynb"))
    monkeypatch.setitem(claims.CATALOGUE, "Z2", core.Claim("Z2", "z2", "-", "k", "x", _holds, "notebooks/z2.ipynb",
                                                          needs=("Z1",)))
    rec = claims.record("Z1", values={"x": 1}, measured="x = 1")
    if changes:
        rec.update(changes)
        rec["checksum"] = core.checksum(rec)
        (claims.claims_dir() / "Z1.json").write_text(json.dumps(rec))
    return rec


def test_load_needed_accepts_this_runs_records(monkeypatch):
    _record_z1(monkeypatch)
    assert claims.load_needed("Z2")["Z1"]["values"] == {"x": 1}


@pytest.mark.parametrize("changes, why", [({"seed": 7}, "another seed"), ({"mclib_hash": "0" * 64}, "another mclib_hash"),
                                          ({"source_hash": "f" * 64}, "another version of its notebook")])
def test_load_needed_refuses_a_record_of_another_run_naming_the_chapter(monkeypatch, changes, why):
    _record_z1(monkeypatch, **changes)
    with pytest.raises(claims.StaleRecords, match=f"z1 \\(Z1 was made .*{why}"):
        claims.load_needed("Z2")


def test_load_needed_inside_a_build_wants_the_same_build(monkeypatch):
    _record_z1(monkeypatch)
    monkeypatch.setenv("MCLIB_BUILD_ID", "this-build")
    with pytest.raises(claims.StaleRecords, match="Z1 was not made in this build"):
        claims.load_needed("Z2")
    run = Path(os.environ["MCLIB_BUILD_DIR"]) / "runs" / "z1.json"
    run.parent.mkdir(parents=True, exist_ok=True)
    run.write_text(json.dumps({"status": "ok", "build_id": "an-earlier-build"}))
    with pytest.raises(claims.StaleRecords, match="not made in this build"):
        claims.load_needed("Z2")
    run.write_text(json.dumps({"status": "ok", "build_id": "this-build"}))
    assert set(claims.load_needed("Z2")) == {"Z1"}
    (claims.claims_dir() / "Z1.json").unlink()
    with pytest.raises(claims.StaleRecords, match=r"z1 \(Z1 was not recorded\)"):
        claims.load_needed("Z2")


# --- records trusted only when intact, verdicts recomputed ---------------------------------------------------

def _a1_record():
    values = {"runs": {"cnn": {"tolerance": 0.01,
                               "barrier_fraction": {"estimate": 0.1, "lo": 0.06, "hi": 0.15, "n": 200}}}}
    return claims.record("A1", values=values, measured="m")


def _edit(path: Path, fn):
    rec = json.loads(path.read_text())
    fn(rec)
    path.write_text(json.dumps(rec))


@pytest.mark.parametrize("damage, message", [
    (lambda p: _edit(p, lambda r: r.update(status="fails")), "changed after it was written"),
    (lambda p: _edit(p, lambda r: r["values"]["runs"]["cnn"].update(tolerance=0.5)), "changed after it was written"),
    (lambda p: _edit(p, lambda r: r.pop("reason")), r"lacks \['reason'\]"),
    (lambda p: _edit(p, lambda r: r.update(id="A2")), "holds claim 'A2', not 'A1'"),
    (lambda p: p.write_text(p.read_text()[:40]), "is not valid JSON"),
])
def test_a_damaged_or_edited_record_is_refused_naming_the_file(damage, message):
    _a1_record()
    path = claims.claims_dir() / "A1.json"
    damage(path)
    with pytest.raises(claims.DamagedRecord, match=message) as err:
        claims.load_all()
    assert str(path) in str(err.value)
    with pytest.raises(claims.DamagedRecord):
        claims.report_markdown()


def test_the_shown_verdict_is_the_judges_verdict_of_the_recorded_values(monkeypatch):
    import dataclasses

    rec = _a1_record()
    assert claims.load_all()["A1"]["status"] == rec["status"] == "holds"
    # a judge that changed since the record was written: the report shows today's verdict, not the stored one
    today = dataclasses.replace(claims.CATALOGUE["A1"], judge=lambda values: core.fails("today's judge says no"))
    monkeypatch.setitem(claims.CATALOGUE, "A1", today)
    assert claims.load_all()["A1"]["status"] == "fails"
    assert "today's judge says no" in claims.report_markdown()


def test_a_broken_meta_file_is_named():
    (claims.claims_dir() / "_meta.json").write_text("{")
    with pytest.raises(claims.DamagedRecord, match="_meta.json is not valid JSON"):
        claims.meta()


def _built_recorder_book(tiny_book) -> Path:
    """The tiny book with 'good' recording claim A1 and no failing chapter, built once; returns the build folder."""
    record_a1_in_good(tiny_book)
    book.build("smoke", html=False, root=tiny_book, progress=False)
    return Path(os.environ["MCLIB_BUILD_DIR"])


def test_resume_does_not_reuse_an_edited_record(tiny_book):  # noqa: F811
    build = _built_recorder_book(tiny_book)
    _edit(build / "claims" / "A1.json", lambda r: r.update(status="fails"))
    again = book.build("smoke", html=False, root=tiny_book, progress=False, resume=True)
    assert "notebooks/good.ipynb" in again["notebooks"]  # rerun, not reused
    claims.load_all()  # and the record is whole again


# --- nothing lost, one build at a time -----------------------------------------------------------------------

def test_an_interrupted_build_keeps_every_finished_chapter(tiny_book, monkeypatch):  # noqa: F811
    """The old runner deleted every claim and run record when a full build started, so Ctrl-C lost them all."""
    build = _built_recorder_book(tiny_book)
    before = {p.name: p.read_bytes() for p in (build / "claims").glob("A1.json")}
    real = book.execute

    def interrupted(nb, out, params, root, progress=True):
        if Path(nb).stem == "good":  # Ctrl-C while the chapter that holds the claim reruns
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("partial")
            (claims.claims_dir() / "A1.json").write_text("half-written")
            raise KeyboardInterrupt
        return real(nb, out, params, root, progress)

    monkeypatch.setattr(runner, "execute", interrupted)
    with pytest.raises(book.Interrupted, match="results from the last finished run are kept"):
        book.build("smoke", html=False, root=tiny_book, progress=False)
    assert {p.name: p.read_bytes() for p in (build / "claims").glob("A1.json")} == before
    assert "partial" not in (build / "src" / "notebooks" / "good.ipynb").read_text()
    monkeypatch.setattr(runner, "execute", real)
    again = book.build("smoke", html=False, root=tiny_book, progress=False, resume=True)
    assert "notebooks/good.ipynb" in again["skipped"]


def test_a_second_build_on_the_same_folder_is_refused_naming_the_pid(tiny_book):  # noqa: F811
    build = Path(os.environ["MCLIB_BUILD_DIR"])
    with book.build_lock(build):
        with pytest.raises(book.BuildLocked, match=f"another build \\(PID {os.getpid()}\\) is using {build}"):
            book.build("smoke", html=False, root=tiny_book, progress=False)
    assert not (build / ".lock.pid").exists()


def test_a_killed_kernel_is_reported_at_the_running_cell_not_the_last_one(tiny_book):  # noqa: F811
    """papermill marks the cells after a dead kernel "completed"; the old runner named the notebook's last cell."""
    import nbformat

    path = tiny_book / "notebooks" / "bad.ipynb"
    _notebook(path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    nb = nbformat.read(path, as_version=4)
    nb.cells += [nbformat.v4.new_markdown_cell("## after"), nbformat.v4.new_code_cell("y = 2"),
                 nbformat.v4.new_markdown_cell("## the end")]
    nbformat.write(nb, path)
    with pytest.raises(book.NotebookFailed, match=r"the kernel died at cell 4 \(counting from 1, `import os, signal`\)"):
        book.build("smoke", html=False, root=tiny_book, progress=False)


def test_a_build_sets_damaged_records_aside_and_only_names_their_chapter(tiny_book, capsys):  # noqa: F811
    """`--only report` over an edited record used to publish it; now the record is refused and its chapter named."""
    build = _built_recorder_book(tiny_book)
    _edit(build / "claims" / "A1.json", lambda r: r.update(status="fails"))
    with pytest.raises(book.StaleChapters, match=r"good \(its claims \['A1'\] are missing\)"):
        book.build("smoke", only=["after"], html=True, root=tiny_book, progress=False)
    assert "refused claim record" in capsys.readouterr().out
    assert (build / "claims" / "refused" / "A1.json").exists() and not (build / "claims" / "A1.json").exists()


def test_a_fresh_build_starts_the_typically_longest_chapter_first(tmp_path):
    chapters = [nb for nb in book.notebooks() if nb.stem != "report"]
    order = book.order_chapters(chapters, book.chapter_needs(chapters), book.last_seconds(tmp_path, chapters))
    assert order[0].stem == "c2_backdoor_repair" and order[-1].stem == "c8_across_architectures"


def test_the_last_run_records_seconds_order_a_build_before_the_typical_table(tmp_path):
    """Issue 31: the longest chapter of *this* build folder's last run starts first; the table only fills gaps
    (no record, a record set aside by an interrupted rerun is still read, a record without seconds is not)."""
    chapters = [nb for nb in book.notebooks() if nb.stem != "report"]
    stems = {nb.stem: nb for nb in chapters}
    (tmp_path / "runs").mkdir()
    runner.run_record_path(tmp_path, stems["a7_barrier_evolution"]).write_text(json.dumps({"seconds": 1e4}))
    runner.run_record_path(tmp_path, stems["c2_backdoor_repair"]).write_text(json.dumps({"seconds": "n/a"}))
    aside = runner._previous(tmp_path, stems["a1_real_paths"])
    aside.mkdir(parents=True)
    (aside / "run.json").write_text(json.dumps({"seconds": 5e3}))
    seconds = book.last_seconds(tmp_path, chapters)
    assert seconds["a7_barrier_evolution"] == 1e4 and seconds["a1_real_paths"] == 5e3
    assert seconds["c2_backdoor_repair"] == book.TYPICAL_SECONDS["c2_backdoor_repair"]
    order = [nb.stem for nb in book.order_chapters(chapters, book.chapter_needs(chapters), seconds)]
    assert order[:3] == ["a7_barrier_evolution", "a1_real_paths", "c2_backdoor_repair"]
    assert order[-1] == "c8_across_architectures"            # it reads C1-C7's claims: after them whatever its time


def test_a_refused_submission_cancels_the_jobs_already_submitted(monkeypatch, tmp_path):
    """sbatch refusing a later chapter used to leave the earlier chapters' jobs in the queue."""
    cancelled = []

    class Job:
        def __init__(self, name):
            self.name, self.state = name, "PENDING"

        def done(self):
            return False

        def cancel(self, check=True):
            cancelled.append(self.name)

    class Refusing:
        def __init__(self):
            self.n = 0

        def update_parameters(self, **kw):
            pass

        def submit(self, fn, nb, *args):
            self.n += 1
            if self.n == 2:
                raise RuntimeError("sbatch: error: Batch job submission failed")
            return Job(nb)

    monkeypatch.setattr(jobs, "make_executor", lambda options, folder: Refusing())
    todo = [Path("notebooks/a.ipynb"), Path("notebooks/b.ipynb")]
    with pytest.raises(RuntimeError, match="submission failed"):
        jobs.run_chapters(todo, tmp_path, tmp_path / "_build", {}, jobs.Options(executor="local", jobs=2, poll_s=0.01))
    assert cancelled == ["notebooks/a.ipynb"]
