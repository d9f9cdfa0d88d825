"""The model cache: checkpoints keyed by a hash of the whole recipe and of the code that trains it.

:func:`cached` returns the model of a recipe from the cache, or makes it (the caller's training function) and
caches it. It promises:

* **Nothing read back is unchecked.** One SHA-256 covers the format, the recipe, the code hash, the
  stored metrics (``test_acc``, ...) and every tensor (name, dtype, shape, bytes). A checkpoint that is
  corrupt, truncated, for another recipe or written by other model/training code (:func:`mclib.train.code_hash`)
  is made again with a warning, never used.
* **Atomic writes that respect the umask.** A checkpoint is written to a temporary file in the same
  folder (created with mode ``0o666 & ~umask``, like any other file), then renamed. Temporary files
  that a killed process left behind are removed by the next process that saves or loads there.
* **Train once, wait, then load.** Processes sharing a cache (Slurm jobs, several GPUs) take a lock
  per checkpoint (``<checkpoint>.lock``, an OS-level ``flock`` through the ``filelock`` package): the
  first trains, the others wait and then load its checkpoint. The OS releases the lock when its holder
  dies, however it dies (``kill -9``, node reboot on a local disk), so a killed job never blocks others;
  a process that *hangs* while training does keep others waiting.
* **No lost training.** Writability of the cache and its free space (against the checkpoint's size,
  :func:`checkpoint_bytes`) are checked before training; a read-only or full cache makes :func:`cached` warn
  and cache into a per-user temporary folder instead (``--cache-dir`` or ``$MCLIB_CACHE`` choose a writable
  one), and stops before training if that cannot take it either. A save that still fails after training
  (the disk filled up meanwhile: ``ENOSPC``, a quota) goes to that temporary folder, or else the trained
  model is kept in memory for the rest of the run, with one warning naming the path that could not be
  written -- the weights are never dropped.
* **Formats side by side.** The checkpoint format is part of the file name (:func:`checkpoint_path`), so
  mclib versions with different formats share a cache without evicting each other's checkpoints.

It sits below :mod:`mclib.train` and knows a recipe only through :class:`Recipe` (what the cache reads of it).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import filelock
import torch
from torch import nn

from mclib import runtime


class Recipe(Protocol):
    """What the cache reads of a recipe (:class:`mclib.train.Recipe` is one)."""

    arch: str
    dataset: str

    @property
    def key(self) -> str: ...            # the checkpoint's file name
    @property
    def code(self) -> str: ...           # the hash of the code that trains it
    def to_json(self) -> str: ...        # the whole recipe, canonical
    def build(self) -> nn.Module: ...    # a fresh model to load the weights into


# ------------------------------------------------------------------------------------------ checkpoint files
#: Version of the checkpoint layout; files of another version are retrained.
CHECKPOINT_FORMAT = 2


#: The checksummed text fields of a checkpoint (its tensors are checksummed too).
_RECORD = ("format", "recipe", "code", "metrics")


#: Temporary files of :func:`save_checkpoint`: ``.<checkpoint>.<pid>.<random>.tmp``.
_TEMP = re.compile(r"^\.(?P<target>.+)\.\d+\.[0-9a-f]+\.tmp$")


def _checksum(record: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the record (format, recipe, code hash, metrics) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps({k: record[k] for k in _RECORD}, sort_keys=True).encode())
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(json.dumps([k, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def checkpoint_path(recipe: Recipe, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`mclib.train.train` caches ``recipe``'s model: ``models/<arch>-<dataset>-<recipe key>-f<format>.pt``.

    The checkpoint format (``CHECKPOINT_FORMAT``) is part of the name, so mclib versions that write
    different formats keep their checkpoints side by side in one shared cache instead of each discarding
    (and retraining over) the other's.
    """
    name = f"{recipe.arch}-{recipe.dataset}-{recipe.key}-f{CHECKPOINT_FORMAT}.pt"
    return runtime.cache_dir(cache_dir) / "models" / name


def lock_path(path: Path) -> Path:
    """The lock file that guards the checkpoint ``path`` (kept after release, so waiters share one inode)."""
    return path.with_name(path.name + ".lock")


def _open_temp(path: Path) -> tuple[int, Path]:
    """Create a fresh temporary file next to ``path``.

    Mode ``0o666`` filtered by the umask, as for any other file (``mkstemp`` would force ``0o600``
    and lock other users of a shared cache out).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    return fd, tmp


def _write_and_rename(fd: int, tmp: Path, path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` into the open temporary file, flush it to disk, then rename it to ``path``."""
    try:
        with os.fdopen(fd, "wb") as fh:
            buf = io.BytesIO()
            torch.save(dict(payload), buf)
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())  # the rename must never expose a file whose bytes are still in flight
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _payload(recipe: Recipe, model: nn.Module, metrics: Mapping[str, Any]) -> dict[str, Any]:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    record = {"format": CHECKPOINT_FORMAT, "recipe": recipe.to_json(), "code": recipe.code,
              "metrics": json.dumps(dict(metrics), sort_keys=True)}
    return {**record, "state_dict": state, "checksum": _checksum(record, state)}


def save_checkpoint(path: Path, recipe: Recipe, model: nn.Module, metrics: Mapping[str, Any]) -> None:
    """Write atomically: a temporary file in the same folder (umask respected), then ``os.replace``.

    :func:`cached` holds the checkpoint's lock around this; other callers that share a cache should too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _open_temp(path)
    _write_and_rename(fd, tmp, path, _payload(recipe, model, metrics))


def clean_stale_temps(folder: Path, holding: Path | None = None) -> list[Path]:
    """Remove temporary files left by saves that died; returns the removed paths.

    A temporary file of checkpoint ``c`` is stale when nobody holds ``c``'s lock (writers hold it from
    creating the file until the rename; ``holding`` is the checkpoint whose lock the caller holds). Other
    ``*.tmp`` files are not mclib's and are left alone, as are files that cannot be removed (read-only cache).
    """
    removed = []
    for tmp in sorted(folder.glob("*.tmp")):
        try:
            match = _TEMP.match(tmp.name)
            if match is None:
                continue
            target = folder / match["target"]
            if target == holding:
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
                continue
            lock = filelock.FileLock(lock_path(target))
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                continue  # its writer is alive
            try:
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
            finally:
                lock.release()
        except OSError:
            continue
    return removed


class CheckpointInvalid(Exception):
    """A cached checkpoint that must not be used (corrupt, truncated, for another recipe or other code)."""


def load_checkpoint(path: Path, recipe: Recipe) -> tuple[nn.Module, dict]:
    """Load and validate a checkpoint; raise :class:`CheckpointInvalid` saying why it cannot be used.

    Everything returned is checksummed: the weights, the metrics and the recipe and code they belong to.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, ...
        raise CheckpointInvalid(f"unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or {"recipe", "state_dict", "checksum"} - set(payload):
        raise CheckpointInvalid("not an mclib checkpoint")
    if payload.get("format") != CHECKPOINT_FORMAT or set(_RECORD) - set(payload):
        raise CheckpointInvalid(f"checkpoint format {payload.get('format', 1)!r}, this mclib writes {CHECKPOINT_FORMAT}")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointInvalid("its state_dict is not a dict of tensors")
    try:
        intact = _checksum(payload, state) == payload["checksum"]
    except (TypeError, KeyError, ValueError, RuntimeError):
        intact = False
    if not intact:
        raise CheckpointInvalid("checksum mismatch (weights, metrics or recipe changed after writing)")
    if payload["recipe"] != recipe.to_json():
        raise CheckpointInvalid("written for another recipe")
    if payload["code"] != recipe.code:
        raise CheckpointInvalid("written by other model or training code (see mclib.train.code_hash)")
    model = recipe.build()
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointInvalid(f"its tensors do not fit the model: {err}") from None
    return model.eval(), json.loads(payload["metrics"])


# ------------------------------------------------------------------------------------------ the cache
def _signature(path: Path) -> tuple | None:
    """Identity of the file now at ``path`` (None if absent): a rename by another process changes it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _load_valid(path: Path, recipe: Recipe, warn: bool = True) -> tuple[nn.Module, dict] | None:
    """The checkpoint at ``path`` if it exists and is valid; an invalid one is reported (warning) and skipped."""
    if not path.exists():
        return None
    try:
        return load_checkpoint(path, recipe)
    except CheckpointInvalid as why:
        if warn:
            warnings.warn(f"cached checkpoint {path.name} ignored and retrained: {why}", stacklevel=4)
        return None


def _check_writable(folder: Path) -> None:
    """Raise :class:`OSError` unless a file can be created in ``folder`` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = _open_temp(folder / ".write-probe")
    os.close(fd)
    probe.unlink()


def fallback_cache_dir() -> Path:
    """The per-user temporary cache used when the configured one is read-only."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"mclib-cache-{user}"


def checkpoint_bytes(recipe: Recipe) -> int:
    """The disk space a checkpoint of ``recipe`` needs, over-estimated: its tensors' bytes plus 5% and 1 MiB
    for the archive's own records (a fresh model of the recipe is built to count them)."""
    state = recipe.build().state_dict()
    return int(1.05 * sum(t.numel() * t.element_size() for t in state.values())) + 2 ** 20


def _check_space(folder: Path, need: int) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``folder`` unless it has ``need`` bytes free (checked before training:
    an empty probe file can still be created on a full disk)."""
    free = shutil.disk_usage(folder).free
    if free < need:
        raise OSError(errno.ENOSPC, f"only {free / 2**20:.1f} MiB free, the checkpoint needs about "
                                    f"{need / 2**20:.1f} MiB", str(folder))


def _writable_path(recipe: Recipe, path: Path | None, why: OSError | None, need: int = 0) -> Path:
    """``path`` if its folder is writable and has ``need`` bytes free, else the fallback cache's path (with a
    warning naming the fix)."""
    if why is None:
        try:
            _check_writable(path.parent)
            _check_space(path.parent, need)
            return path
        except OSError as err:
            why = err
    where = path.parent.parent if path is not None else "the configured cache folder"
    fix = "pass a writable --cache-dir (cache_dir=...) with free space or set MCLIB_CACHE"
    try:
        fallback = checkpoint_path(recipe, fallback_cache_dir())
        _check_writable(fallback.parent)
        _check_space(fallback.parent, need)
    except OSError as err:
        cls = PermissionError if isinstance(why, PermissionError) and isinstance(err, PermissionError) else OSError
        raise cls(f"cannot cache the model of {recipe.arch}/{recipe.dataset}: {where} is not writable "
                  f"({why}) and neither is {fallback_cache_dir()} ({err}); {fix}") from None
    warnings.warn(f"model cache {where} is not writable ({why}); caching {fallback.name} in {fallback.parent} "
                  f"instead, which is temporary; {fix}", stacklevel=4)
    return fallback


#: Models trained in this process whose checkpoint could not be written (full disk): kept for the run, so a
#: later :func:`mclib.train.train` of the same recipe returns them instead of training again. Keyed by checkpoint path,
#: recipe and code hash; values are ``(state_dict, metrics)`` on the CPU.
_UNSAVED: dict[tuple[str, str, str], tuple[dict[str, torch.Tensor], dict]] = {}


_UNSAVED_WARNED: set[str] = set()


def _unsaved_key(recipe: Recipe, path: Path) -> tuple[str, str, str]:
    return str(path), recipe.to_json(), recipe.code


def _from_unsaved(recipe: Recipe, path: Path | None) -> tuple[nn.Module, dict] | None:
    """The model of ``recipe`` kept in memory by an earlier failed save in this process, or None."""
    if path is None:
        return None
    kept = _UNSAVED.get(_unsaved_key(recipe, path))
    if kept is None:
        return None
    model = recipe.build()
    model.load_state_dict(kept[0])
    return model.eval(), dict(kept[1])


def _save_elsewhere(recipe: Recipe, failed: Path, model: nn.Module, metrics: dict, err: OSError) -> bool:
    """After the checkpoint ``failed`` could not be written: save into the fallback cache instead (as for a
    read-only cache), with a warning naming both; False if that is the same place or cannot be written either."""
    fallback = checkpoint_path(recipe, fallback_cache_dir())
    if fallback == failed:
        return False
    try:
        _check_writable(fallback.parent)
        _check_space(fallback.parent, checkpoint_bytes(recipe))
        with filelock.FileLock(lock_path(fallback)):
            save_checkpoint(fallback, recipe, model, metrics)
    except OSError:
        return False
    warnings.warn(f"could not write the checkpoint {failed} ({err.strerror or err}); cached it in {fallback} "
                  f"instead, which is temporary: free space there or pass a writable --cache-dir (cache_dir=...)",
                  stacklevel=4)
    return True


def _keep_unsaved(recipe: Recipe, path: Path, model: nn.Module, metrics: dict, err: OSError) -> None:
    """Keep a trained model whose checkpoint ``path`` could not be written, and say so once per path."""
    _UNSAVED[_unsaved_key(recipe, path)] = ({k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                                            dict(metrics))
    if str(path) not in _UNSAVED_WARNED:
        _UNSAVED_WARNED.add(str(path))
        warnings.warn(f"could not write the checkpoint {path} ({err.strerror or err}); the trained model is kept "
                      f"in memory for this run only and will be trained again next run: free space there or "
                      f"pass a writable --cache-dir (cache_dir=...)", stacklevel=4)


def cached(recipe: Recipe, make: Callable[[], tuple[nn.Module, dict]], cache_dir: str | os.PathLike | None = None,
           retrain: bool = False) -> tuple[nn.Module, dict]:
    """The model of ``recipe`` and its metrics: loaded from the cache if a valid checkpoint exists, else made by
    ``make()`` (which trains it and returns it on the CPU with its metrics) and cached.

    Order of events: a valid checkpoint is loaded without any lock (renames are atomic, so a reader
    never sees half a file). Otherwise the cache is checked for writability (falling back to
    :func:`fallback_cache_dir` with a warning), the checkpoint's lock is taken -- waiting while
    another process trains the same recipe, then loading its result -- stale temporary files are
    removed, the temporary file is created, and only then is ``make`` called.
    """
    try:
        path, why = checkpoint_path(recipe, cache_dir), None
    except OSError as err:  # the cache folder itself cannot be created
        path, why = None, err
    seen = None
    if path is not None and not retrain:
        seen = _signature(path)
        hit = _load_valid(path, recipe)
        if hit is not None:
            with contextlib.suppress(OSError):
                clean_stale_temps(path.parent)
            return hit
    kept = None if retrain else _from_unsaved(recipe, path)
    if kept is not None:                        # trained earlier in this run, its checkpoint could not be written
        return kept
    target = _writable_path(recipe, path, why, checkpoint_bytes(recipe))
    if target != path:
        seen = None
    lock = filelock.FileLock(lock_path(target))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        print(f"waiting for another process that trains {target.name} (lock {lock.lock_file})", file=sys.stderr)
        lock.acquire()
    try:
        clean_stale_temps(target.parent, holding=target)
        if not retrain and _signature(target) not in (None, seen):  # written while we waited
            hit = _load_valid(target, recipe)
            if hit is not None:
                return hit
        fd, tmp = _open_temp(target)
        try:
            model, metrics = make()
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        try:
            _write_and_rename(fd, tmp, target, _payload(recipe, model, metrics))
        except OSError as err:                  # a full disk (ENOSPC), a quota, an I/O error: keep the weights
            if not _save_elsewhere(recipe, target, model, metrics, err):
                _keep_unsaved(recipe, path if path is not None else target, model, metrics, err)
    finally:
        lock.release()
    return model, metrics
