"""Where and how a run executes: the checkout, the compute device, the seed, the model cache and the build folder.

The bottom of the library's layers: :mod:`mclib.data` and :mod:`mclib.train` read these, and
:mod:`mclib.config` (presets and the run context, above :mod:`mclib.train`) re-exports them, so notebooks
keep calling ``config.get_device``, ``config.cache_dir`` ... Nothing here imports another mclib module, and torch
only inside the functions that use it: a book's chapter job reads presets and claim records without paying
torch's 2 s import (issue 31).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")
#: The repository root when mclib runs from a checkout (editable install), else None.
REPO_ROOT: Path | None = (
    Path(__file__).resolve().parent.parent
    if (Path(__file__).resolve().parent.parent / "pyproject.toml").exists()
    else None
)


def check_seed(seed: Any) -> int:
    """Return ``seed`` if it is a non-negative integer, else raise (3.7 must never silently become 3)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def get_device(name: str | None = "auto") -> torch.device:
    """Choose the compute device: ``auto`` prefers cuda, then mps, then cpu.

    An explicit name that is not available raises instead of silently falling back,
    so a GPU run never turns into an unnoticed CPU run.
    """
    import torch

    name = "auto" if name in (None, "") else str(name)
    base = name.split(":")[0]
    if base not in DEVICE_NAMES:
        raise ValueError(f"unknown device {name!r}; valid devices: {', '.join(DEVICE_NAMES)} (cuda may take an index, cuda:1)")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here; use device='auto' or 'cpu'")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but MPS is not available here; use device='auto' or 'cpu'")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) so a preset and a seed give the same results on CPU."""
    import torch

    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_deterministic_kernels() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its import of ``torch._inductor``.

    The public call imports Inductor only to set ``torch._inductor.config.deterministic``; that import took about 3 s
    of every chapter's first cell, and the library compiles nothing. The flag that picks the kernels is set here the
    same way; Inductor's is set too when it is already imported (else it is left to whoever imports it).
    """
    import sys

    import torch

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # a torch without the private setter: the public call, import and all
        torch.use_deterministic_algorithms(True, warn_only=True)
        return
    setter(True, warn_only=True)
    if "torch._inductor.config" in sys.modules:
        sys.modules["torch._inductor.config"].deterministic = True


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where trained models are cached: ``override``, else ``$MCLIB_CACHE``, else ``<repo>/.cache``.

    Outside a checkout the default is ``~/.cache/mclib``.
    """
    if override:
        path = Path(override)
    elif os.environ.get("MCLIB_CACHE"):
        path = Path(os.environ["MCLIB_CACHE"])
    elif REPO_ROOT is not None:
        path = REPO_ROOT / ".cache"
    else:
        path = Path.home() / ".cache" / "mclib"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_dir() -> Path:
    """Where executed notebooks and recorded claims go: ``$MCLIB_BUILD_DIR``, else ``<repo>/_build``."""
    if os.environ.get("MCLIB_BUILD_DIR"):
        path = Path(os.environ["MCLIB_BUILD_DIR"])
    elif REPO_ROOT is not None:
        path = REPO_ROOT / "_build"
    else:
        path = Path.cwd() / "_build"
    path.mkdir(parents=True, exist_ok=True)
    return path
