"""Presets and the run context: the layer above :mod:`mclib.train` that notebooks start from.

A *preset* is data, not code: ``mclib/presets/base.toml`` holds the sizes every
chapter shares (dataset, architecture, epochs, ...) and ``mclib/presets/<chapter>.toml``
the sizes of one chapter, each file with the three tables ``smoke``, ``quick`` and
``paper``.  Only sizes differ between presets, never code paths.

Notebooks start with :func:`setup`, which turns the papermill parameters
(``preset``, ``device``, ``seed``, ``data_root``, ``cache_dir``) into a
:class:`Context`, seeds every generator and applies the book's plot style. The run's environment (device,
seed, cache and build folders, the checkout) lives in :mod:`mclib.runtime`, below training, and is re-exported
here (``config.get_device``, ``config.cache_dir`` ...).
"""
from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from mclib.runtime import (  # noqa: F401 - re-exported: notebooks and the runner call config.get_device ...
    DEVICE_NAMES, REPO_ROOT, build_dir, cache_dir, check_seed, get_device, seed_everything,
    use_deterministic_kernels)

if TYPE_CHECKING:
    import torch

PRESET_NAMES = ("smoke", "quick", "paper")
#: Presets composed from two tables of every preset file: name -> (the table giving the settings, the table giving
#: the sizes). ``paper-smoke`` runs the paper preset's code paths -- its datasets, architectures, triggers, layer
#: lists, optimiser, every setting that is not a number -- at the smoke preset's sizes (:func:`compose`).
DERIVED_PRESETS = {"paper-smoke": ("paper", "smoke")}
_PRESET_DIR = Path(__file__).with_name("presets")


#: Where a derived preset's own sizes live: ``derived/<name>.toml``, one table per preset file (``[base]``,
#: ``[repair]``, ...), each key a size of that file that the derived preset sets instead of its sizes table's
#: (:func:`derived_sizes`). Only sizes: a setting (architecture, dataset, ...) there is refused.
_DERIVED_DIR = _PRESET_DIR / "derived"


def derived_sizes(preset: str) -> dict[str, dict[str, Any]]:
    """The sizes that the derived preset ``preset`` (:data:`DERIVED_PRESETS`) sets instead of its sizes table's,
    per preset file: ``{"base": {"n_train": 512}, ...}`` from ``mclib/presets/derived/<preset>.toml`` (empty
    where there is no such file).

    Checked, naming the file, table, key and value: each table names a preset file beside ``base.toml``; each key
    is one of that file's keys whose value in the settings table is a size (:func:`is_size`); each value is a size
    of the same kind (number, list, table) and passes the preset files' number checks."""
    path = _DERIVED_DIR / f"{preset}.toml"
    if preset not in DERIVED_PRESETS or not path.exists():
        return {}
    tables = _load_toml(path)
    settings_name = DERIVED_PRESETS[preset][0]
    known = sorted(p.stem for p in _PRESET_DIR.glob("*.toml"))
    for chapter, table in tables.items():
        if chapter not in known or not isinstance(table, dict):
            raise ValueError(f"{path}: [{chapter}] is not a preset file's table; allowed: {known}")
        reference = check_preset_file(_PRESET_DIR / f"{chapter}.toml")[settings_name]
        for key, value in table.items():
            where = f"{path}: [{chapter}]"
            if key not in reference:
                raise ValueError(f"{where} unknown key {key!r}; the keys of {chapter}.toml are {sorted(reference)}")
            if not is_size(reference[key]):
                raise ValueError(f"{where} {key} = {value!r}: {key} is a setting ({reference[key]!r} in "
                                 f"[{settings_name}]), not a size; a derived preset changes sizes only")
            if not is_size(value) or _kind(value) != _kind(reference[key]):
                raise ValueError(f"{where} {key} = {value!r}: allowed: a size of kind {_kind(reference[key])}, "
                                 "as in the preset file")
            _check_value(where, key, value)
    return tables


def _read_table(path: Path, preset: str) -> dict[str, Any]:
    """The table ``preset`` of the preset file ``path``, after :func:`check_preset_file` of the whole file; a
    derived preset (:data:`DERIVED_PRESETS`) is composed from two of its tables (:func:`compose`), then its own
    sizes (:func:`derived_sizes`) replace the sizes table's."""
    tables = check_preset_file(path)
    if preset in DERIVED_PRESETS:
        settings, sizes = DERIVED_PRESETS[preset]
        table = compose(tables[settings], tables[sizes])
        table.update(derived_sizes(preset).get(path.stem, {}))
        return table
    return dict(tables[preset])


def is_size(value: Any) -> bool:
    """Whether a preset value is a *size*: a number (not a bool), or a list or table whose every leaf is one
    (``n_bonafide = [50, 250]``, ``span = {2 = {sizes = [8, 16], samples = 40}}``). Strings, booleans and anything
    holding one (architectures, datasets, triggers, protocols, layer lists) are *settings*."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, list):
        return all(is_size(v) for v in value)
    if isinstance(value, dict):
        return all(is_size(v) for v in value.values())
    return False


def compose(settings: Mapping[str, Any], sizes: Mapping[str, Any]) -> dict[str, Any]:
    """A table with ``settings``' keys: each key's value from ``sizes`` where ``settings`` holds a size
    (:func:`is_size`), else from ``settings``. Both tables have the same keys (:func:`check_preset_file`)."""
    return {k: (sizes[k] if is_size(v) else v) for k, v in settings.items()}


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None


def _kind(value: Any) -> str:
    """The type a preset value must keep across the three tables (an int is accepted where a float is)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "table"}.get(type(value), type(value).__name__)


#: Preset keys (by ending) that are counts of at least one, like ``n_...``: a batch of 0 inputs or 0 epochs
#: would train or attack nothing, silently.
_POSITIVE_COUNTS = ("batch_size", "_batch", "epochs")


def _check_value(where: str, key: str, value: Any) -> None:
    """Every number in a preset (at any depth) is a finite size, count or rate: not negative, not NaN/inf;
    counts (``n_...``, ``..._batch_size``, ``..._batch``, ``...epochs``) are integers >= 1."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_value(where, f"{key}.{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_value(where, f"{key}[{i}]", v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{where} {key} = {value!r}: preset numbers are sizes, counts and rates; "
                             "allowed: a finite number >= 0")
        last = key.split(".")[-1]
        if last.startswith("n_") and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{where} {key} = {value!r}: a count (n_...); allowed: an integer >= 1")
        if last.endswith(_POSITIVE_COUNTS) and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{where} {key} = {value!r}: allowed: an integer >= 1 ({last} is a count)")


def check_preset_file(path: Path) -> dict[str, dict[str, Any]]:
    """Read a preset file and check it, naming the file, table, key and value of the first problem.

    Checked: TOML syntax; exactly the tables ``smoke``, ``quick``, ``paper``; the same keys in each (a key
    missing from some table is unknown, most likely a typo); each key of one kind in every table (number, string,
    list, ...); numbers finite and >= 0, ``n_...`` counts integers >= 1; in ``base.toml`` exactly the fields
    of :class:`Preset` with their types.
    """
    tables = _load_toml(path)
    unknown = [t for t in tables if t not in PRESET_NAMES]
    missing = [p for p in PRESET_NAMES if p not in tables]
    if unknown or missing or not all(isinstance(tables[p], dict) for p in PRESET_NAMES):
        raise ValueError(f"{path}: needs exactly the tables {list(PRESET_NAMES)}"
                         + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
    if path.name == "base.toml":
        expected = {f: t for f, t in Preset.__annotations__.items() if f != "name"}
    else:
        # the keys every table has, with their kind; a key only some tables have is unknown (a typo?)
        common = set.intersection(*(set(tables[p]) for p in PRESET_NAMES))
        expected = {k: _kind(v) for k, v in tables[PRESET_NAMES[0]].items() if k in common}
    for name in PRESET_NAMES:
        where = f"{path}: [{name}]"
        have = tables[name]
        extra, lacking = sorted(set(have) - set(expected)), sorted(set(expected) - set(have))
        if extra:
            raise ValueError(f"{where} unknown key(s) {extra}; the keys of every table here are {sorted(expected)}")
        if lacking:
            raise ValueError(f"{where} lacks the key(s) {lacking} that the other tables have")
        for key, value in have.items():
            want = expected[key]
            ok = ({"int": isinstance(value, int) and not isinstance(value, bool),
                   "float": _kind(value) == "number", "str": isinstance(value, str)}[want]
                  if path.name == "base.toml" else _kind(value) == want)
            if not ok:
                allowed = {"int": "an integer", "float": "a number", "str": "a string"}.get(want, f"a {want}")
                raise ValueError(f"{where} {key} = {value!r}: allowed: {allowed}, as in the other tables")
            _check_value(where, key, value)
            if path.name == "base.toml" and want == "int" and value < 1:
                raise ValueError(f"{where} {key} = {value!r}: allowed: an integer >= 1")
    return tables


def check_preset(name: str) -> str:
    """Return ``name`` if it is a known preset (or a derived one, :data:`DERIVED_PRESETS`), else raise a ValueError
    listing the valid ones."""
    if name not in PRESET_NAMES and name not in DERIVED_PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join((*PRESET_NAMES, *DERIVED_PRESETS))}")
    return name


@dataclass(frozen=True)
class Preset:
    """The sizes of one preset: the shared ones as attributes, a chapter's through :meth:`section`."""

    name: str
    dataset: str
    arch: str
    n_train: int
    n_test: int
    epochs: int
    batch_size: int
    lr: float

    def section(self, chapter: str) -> Mapping[str, Any]:
        """Read-only sizes of one chapter from ``mclib/presets/<chapter>.toml`` for this preset."""
        path = _PRESET_DIR / f"{chapter}.toml"
        if not path.exists():
            known = sorted(p.stem for p in _PRESET_DIR.glob("*.toml") if p.stem != "base")
            raise ValueError(f"no preset file for chapter {chapter!r} at {path}; known chapters: {known}")
        return MappingProxyType(_read_table(path, self.name))


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name`` (``smoke``, ``quick`` or ``paper``)."""
    check_preset(name)
    return Preset(name=name, **_read_table(_PRESET_DIR / "base.toml", name))


@dataclass(frozen=True)
class Context:
    """Everything a notebook needs to know about how it is being run."""

    preset: Preset
    device: torch.device
    seed: int
    data_root: Path | None
    cache_dir: Path
    extra: Mapping[str, Any] = field(default_factory=dict)

    def section(self, chapter: str) -> Mapping[str, Any]:
        """Shorthand for ``ctx.preset.section(chapter)``."""
        return self.preset.section(chapter)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU torch generator seeded from the run's seed (plus ``offset`` for independent streams)."""
        import torch

        return torch.Generator().manual_seed(self.seed + offset)

    def model(self, recipe=None, *, progress: bool = True, retrain: bool = False, **recipe_changes):
        """The trained model of ``recipe`` in this run: loaded from the run's cache or trained and cached
        (:func:`mclib.train.train` with this context's ``device``, ``cache_dir`` and ``data_root``).

        ``recipe`` None means the book's standard recipe for this preset (:func:`mclib.train.recipe_for`);
        ``recipe_changes`` change fields of it (``arch=``, ``seed=``, ``epochs=``, ...). Returns a
        :class:`mclib.train.Trained`: ``.model`` (eval mode, on ``device``), ``.metrics``, ``.recipe``.
        """
        from mclib import train   # torch and the training code: imported where a model is asked for

        if recipe is None:
            recipe = train.recipe_for(self, **recipe_changes)
        elif not isinstance(recipe, train.Recipe):
            raise TypeError(f"recipe must be a mclib.train.Recipe or None, got {type(recipe).__name__}")
        elif recipe_changes:
            recipe = recipe.replace(**recipe_changes)
        return train.train(recipe, device=self.device, cache_dir=self.cache_dir, data_root=self.data_root,
                           retrain=retrain, progress=progress)


def setup(
    preset: str = "quick",
    device: str | None = "auto",
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    style: bool = True,
) -> Context:
    """Validate the run parameters, seed everything, apply the plot style and return a :class:`Context`."""
    check_seed(seed)
    ctx = Context(
        preset=get_preset(preset),
        device=get_device(device),
        seed=int(seed),
        data_root=Path(data_root) if data_root else None,
        cache_dir=globals()["cache_dir"](cache_dir),
    )
    seed_everything(ctx.seed)
    # Deterministic kernels where torch has them; warn_only keeps GPU runs possible.
    use_deterministic_kernels()
    if style:
        from mclib import plots

        plots.use_style()
    global _CURRENT
    _CURRENT = ctx
    return ctx


_CURRENT: Context | None = None


def current() -> Context | None:
    """The :class:`Context` that :func:`setup` last returned in this process (None before any setup).

    Claim records read the run's preset, seed and device from it (:func:`mclib.claims.core.record`).
    """
    return _CURRENT


# --------------------------------------------------------------------------- typed chapter sizes
def _check_type(where: str, key: str, value: Any, want: Any) -> Any:
    """``value`` checked against the annotation ``want`` (``int``, ``float``, ``str``, ``bool``, ``tuple[T, ...]``,
    ``dict`` / ``dict[str, T]``, ``Any``), naming ``where`` and ``key`` when it does not fit. A TOML list becomes a
    tuple (sizes are frozen); an int is accepted where a float is (TOML writes ``2`` for ``2.0``)."""
    origin, args = typing.get_origin(want), typing.get_args(want)
    if want is Any:
        return value
    if want is bool or want is str:
        ok = isinstance(value, want)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif want is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where} {key} = {value!r}: allowed: a list ({_type_words(want)})")
        return tuple(_check_type(where, f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    elif want is dict or origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where} {key} = {value!r}: allowed: a table ({_type_words(want)})")
        if args:
            for k, v in value.items():
                _check_type(where, f"{key}.{k}", v, args[1])
        return value
    else:
        raise TypeError(f"{where} {key}: the Sizes field's type {want!r} is not one a preset can hold")
    if not ok:
        raise TypeError(f"{where} {key} = {value!r}: allowed: {_type_words(want)}")
    return value


def _type_words(want: Any) -> str:
    """An annotation in words for error messages: ``tuple[int, ...]`` -> "a list of int"."""
    origin, args = typing.get_origin(want), typing.get_args(want)
    if origin is tuple:
        return f"a list of {_type_words(args[0])}"
    if want is dict or origin is dict:
        return "a table" + (f" of {_type_words(args[1])}" if args else "")
    return {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}.get(want, repr(want))


@dataclass(frozen=True)
class Sizes:
    """Base of a chapter's typed sizes: one frozen dataclass per chapter, defined in its study module.

    A subclass names its preset file in ``FILE`` (``"paths"`` reads ``mclib/presets/paths.toml``) and declares one
    field per key of that file's tables, with its type; :meth:`read` returns the sizes of a run's preset::

        @dataclass(frozen=True)
        class Sizes(config.Sizes):
            FILE: ClassVar[str] = "paths"
            n_pairs: int
            ...

        S = pairs.Sizes.read(ctx)    # then S.n_pairs

    The table's keys and the fields must match exactly and every value must have its field's type: a missing or
    unknown key, or a value of another type, is an error naming the file, the preset and the key. Lists become
    tuples. Several chapters may share one preset file, and then one Sizes class."""

    FILE: ClassVar[str] = ""

    @classmethod
    def read(cls, ctx: "Context | Preset | str"):
        """The sizes of ``ctx``'s preset (a :class:`Context`, a :class:`Preset` or a preset name) from
        ``mclib/presets/<FILE>.toml``, checked against the fields (see the class docstring)."""
        name = ctx.preset.name if isinstance(ctx, Context) else ctx.name if isinstance(ctx, Preset) else ctx
        check_preset(name)
        if not cls.FILE:
            raise TypeError(f"{cls.__qualname__} sets no FILE: name the preset file it reads (FILE = 'paths')")
        path = _PRESET_DIR / f"{cls.FILE}.toml"
        return cls.from_table(_read_table(path, name), where=f"{path}: [{name}]")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "sizes"):
        """The sizes from one preset table (``where`` names it in errors): keys and fields must match exactly."""
        hints = typing.get_type_hints(cls)
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown, missing = sorted(set(table) - set(fields)), sorted(set(fields) - set(table))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}: {cls.__module__}.{cls.__qualname__} has no such "
                             f"field; its fields are {fields}")
        if missing:
            raise ValueError(f"{where}: lacks the key(s) {missing} that {cls.__module__}.{cls.__qualname__} needs")
        return cls(**{f: _check_type(where, f, table[f], hints[f]) for f in fields})
