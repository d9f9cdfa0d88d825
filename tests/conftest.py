"""Shared fixtures: every test writes claims and caches into its own temporary folders."""
import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Keep tests away from the repo's _build/ and .cache/ (a book build must not see test claims)."""
    base = tmp_path_factory.mktemp("mclib")
    monkeypatch.setenv("MCLIB_BUILD_DIR", str(base / "_build"))
    monkeypatch.setenv("MCLIB_CACHE", os.environ.get("MCLIB_TEST_CACHE", str(base / "cache")))
    torch.manual_seed(0)
    yield
