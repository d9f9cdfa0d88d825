"""Shared fixtures: every test writes claims and caches into its own temporary folders."""
import os
from pathlib import Path

import pytest
import torch

from mclib import claims

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Keep tests away from the repo's _build/ and .cache/ (a book build must not see test claims)."""
    base = tmp_path_factory.mktemp("mclib")
    monkeypatch.setenv("MCLIB_BUILD_DIR", str(base / "_build"))
    monkeypatch.setenv("MCLIB_CACHE", os.environ.get("MCLIB_TEST_CACHE", str(base / "cache")))
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """One intra-op thread: these tiny problems run fastest on one, and on a shared, loaded machine two
    threads spin and run ~10x slower. Modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# One smoke build of the whole book (every notebook, then the strict HTML build) in a temporary
# folder, shared by the notebook tests and the browser test.
@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("smokebook")
    old = {k: os.environ.get(k) for k in ("MCLIB_BUILD_DIR", "MCLIB_CACHE", "OMP_NUM_THREADS")}
    os.environ["MCLIB_BUILD_DIR"] = str(base / "_build")
    # one thread per kernel, as two local jobs on two cores get: trained weights depend on the thread count,
    # so the parity test in test_jobs.py can compare the jobs' claims with this sequential build's
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MCLIB_CACHE"] = os.environ.get("MCLIB_TEST_CACHE", str(base / "cache"))
    from mclib import book  # the optional book extra: only the tests that build the book need it

    try:
        result = book.build(preset="smoke", device="cpu", html=True, root=ROOT, progress=False)
        result["claims"] = claims.load_all()
        result["build"] = base / "_build"
        yield result
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
