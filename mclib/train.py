"""Training and evaluation, with checkpoints cached by a hash of the whole recipe.

A :class:`Recipe` names everything that determines a trained model: architecture, dataset, seed,
sizes, optimiser, and optional *hooks* given as importable names (``"module:function"``) with keyword
arguments, so that they hash like everything else:

* ``data_hook(X, y, generator=..., **kw) -> (X, y)`` changes the training set once before training
  (e.g. backdoor poisoning, :func:`mclib.attacks.backdoor.poison`);
* ``batch_hook(model, x, y, **kw) -> x`` changes every batch before the step
  (e.g. PGD adversarial training, :func:`mclib.attacks.evasion.pgd`).

:func:`train` returns the cached model when a valid checkpoint exists; a checkpoint whose recipe
differs or whose tensors fail their checksum is retrained, never used. Writes are atomic
(temporary file, then rename), so an interrupted run leaves no half-written checkpoint behind.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mclib import config, data, infer, models

OPTIMIZERS = ("adam", "sgd")


def _freeze(kw: Mapping[str, Any] | None) -> tuple:
    """A hashable, order-independent form of a keyword dict (nested dicts and lists allowed)."""
    def norm(v):
        if isinstance(v, Mapping):
            return tuple(sorted((k, norm(x)) for k, x in v.items()))
        if isinstance(v, (list, tuple)):
            return tuple(norm(x) for x in v)
        return v
    return norm(dict(kw or {}))


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a trained model. Equal recipes give the same cached checkpoint."""

    arch: str
    dataset: str
    seed: int = 0
    epochs: int = 4
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    n_train: int | None = None
    arch_kwargs: tuple = ()
    data_hook: str | None = None
    data_hook_kwargs: tuple = ()
    batch_hook: str | None = None
    batch_hook_kwargs: tuple = ()
    tag: str = ""

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        data.info(self.dataset)
        for name in ("arch_kwargs", "data_hook_kwargs", "batch_hook_kwargs"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, _freeze(value))

    def replace(self, **changes) -> "Recipe":
        """A copy with some fields changed (dict-valued kwargs are frozen automatically)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """The recipe as canonical JSON, with the data split's version (a new split retrains)."""
        fields = dict(dataclasses.asdict(self), split_version=data.SPLIT_VERSION)
        return json.dumps(fields, sort_keys=True, default=list)

    @property
    def key(self) -> str:
        """The checkpoint's file name, a short hash of the whole recipe."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def build(self) -> nn.Module:
        """A freshly initialised model of this recipe's architecture (seeded by the recipe's seed)."""
        torch.manual_seed(self.seed)
        return models.build(self.arch, dataset=self.dataset, **_unfreeze(self.arch_kwargs))


def _unfreeze(kw: tuple) -> dict:
    def back(v):
        if isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in v):
            return {k: back(x) for k, x in v}
        return v
    return back(kw) if kw else {}


def recipe_for(ctx_or_preset, arch: str | None = None, seed: int = 0, **changes) -> Recipe:
    """The book's standard recipe for a preset (dataset, epochs, sizes from ``presets/base.toml``).

    Chapters that use the same architecture and seed share one cached model.
    """
    p = getattr(ctx_or_preset, "preset", ctx_or_preset)
    base = Recipe(arch=arch or p.arch, dataset=p.dataset, seed=seed, epochs=p.epochs,
                  batch_size=p.batch_size, lr=p.lr, n_train=p.n_train)
    return base.replace(**changes) if changes else base


def resolve(name: str) -> Callable:
    """Import ``"package.module:function"``."""
    if ":" not in name:
        raise ValueError(f"hook {name!r} must be written 'module:function'")
    mod, fn = name.split(":", 1)
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import hook {name!r}: {err}") from None


def logits(model: nn.Module, X: torch.Tensor, batch_size: int | None = None,
           device: torch.device | str | None = None) -> torch.Tensor:
    """Model outputs for ``X`` (float32, on the CPU), through the inference engine (:func:`mclib.infer.logits`):
    a prepared eval-mode copy of the model, no gradients, ``batch_size`` inputs per forward pass (None: the
    engine's choice from the input size). Equal to eager fp32 within ``infer.ATOL + infer.RTOL * |logit|``."""
    return infer.logits(model, X, chunk=batch_size, device=device)


def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> dict[str, float]:
    """Mean cross-entropy ``loss`` and accuracy ``acc`` of ``model`` on ``(X, y)``."""
    y = torch.as_tensor(y)
    if y.shape != (len(X),):
        raise ValueError(f"y must hold one label per row of X, shape ({len(X)},); got shape {tuple(y.shape)}")
    out = logits(model, X, batch_size)
    return {"loss": F.cross_entropy(out, y).item(), "acc": (out.argmax(1) == y).float().mean().item()}


def fit(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    generator: torch.Generator | None = None,
    batch_hook: Callable | None = None,
    callback: Callable[[int, nn.Module, float], Any] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "train",
) -> list[float]:
    """Minimise cross-entropy of ``model`` on ``(X, y)`` with minibatches; returns the per-batch losses.

    ``callback(step, model, loss)`` is called after every optimiser step (used to watch barriers
    evolve during training, claim A7). ``batch_hook(model, x, y) -> x`` replaces every batch first.
    """
    if len(X) != len(y):
        raise ValueError(f"X and y differ in length: {len(X)} vs {len(y)}")
    device = torch.device(device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        # cosine decay: the usual schedule for SGD on these small problems
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    steps_per_epoch = (len(X) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch) if optimizer == "sgd" else None
    losses: list[float] = []
    step = 0
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, disable=not progress, leave=False)
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=generator)
        for i in range(0, len(X), batch_size):
            idx = order[i:i + batch_size]
            xb, yb = X[idx].to(device), y[idx].to(device)
            if batch_hook is not None:
                xb = batch_hook(model, xb, yb).detach()
            model.train()
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if callback is not None:
                callback(step, model, losses[-1])
    bar.close()
    model.eval()
    return losses


def _state_checksum(state: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def checkpoint_path(recipe: Recipe, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`train` caches ``recipe``'s model."""
    return config.cache_dir(cache_dir) / "models" / f"{recipe.arch}-{recipe.dataset}-{recipe.key}.pt"


def save_checkpoint(path: Path, recipe: Recipe, model: nn.Module, metrics: Mapping[str, Any]) -> None:
    """Write atomically: a temporary file in the same folder, then ``os.replace``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"recipe": recipe.to_json(), "state_dict": state, "checksum": _state_checksum(state), "metrics": dict(metrics)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            buf = io.BytesIO()
            torch.save(payload, buf)
            fh.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CheckpointInvalid(Exception):
    """A cached checkpoint that must not be used (corrupt, truncated or for another recipe)."""


def load_checkpoint(path: Path, recipe: Recipe) -> tuple[nn.Module, dict]:
    """Load and validate a checkpoint; raise :class:`CheckpointInvalid` saying why it cannot be used."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, ...
        raise CheckpointInvalid(f"unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or {"recipe", "state_dict", "checksum"} - set(payload):
        raise CheckpointInvalid("not an mclib checkpoint")
    if payload["recipe"] != recipe.to_json():
        raise CheckpointInvalid("written for another recipe")
    if _state_checksum(payload["state_dict"]) != payload["checksum"]:
        raise CheckpointInvalid("tensor checksum mismatch")
    model = recipe.build()
    model.load_state_dict(payload["state_dict"])
    return model.eval(), dict(payload.get("metrics", {}))


def train(
    recipe: Recipe,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> nn.Module:
    """The model of ``recipe``: loaded from the cache if a valid checkpoint exists, else trained and cached.

    The returned model is in eval mode on ``device`` and carries ``model.mclib_metrics``
    (train/test loss and accuracy, training time) and ``model.mclib_recipe``.
    """
    device = config.get_device(device if not isinstance(device, torch.device) else str(device))
    path = checkpoint_path(recipe, cache_dir)
    if path.exists() and not retrain:
        try:
            model, metrics = load_checkpoint(path, recipe)
            model.mclib_metrics, model.mclib_recipe = metrics, recipe
            return model.to(device)
        except CheckpointInvalid as why:
            warnings.warn(f"cached checkpoint {path.name} ignored and retrained: {why}", stacklevel=2)
    X, y = data.load(recipe.dataset, "train", n=recipe.n_train, data_root=data_root)
    gen = torch.Generator().manual_seed(recipe.seed)
    if recipe.data_hook:
        X, y = resolve(recipe.data_hook)(X, y, generator=gen, **_unfreeze(recipe.data_hook_kwargs))
    hook = None
    if recipe.batch_hook:
        fn, kw = resolve(recipe.batch_hook), _unfreeze(recipe.batch_hook_kwargs)
        hook = lambda m, xb, yb: fn(m, xb, yb, **kw)  # noqa: E731
    model = recipe.build()
    start = time.perf_counter()
    fit(model, X, y, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr, optimizer=recipe.optimizer,
        weight_decay=recipe.weight_decay, momentum=recipe.momentum, generator=gen, batch_hook=hook,
        device=device, progress=progress, desc=f"train {recipe.arch}/{recipe.dataset} seed {recipe.seed}")
    seconds = time.perf_counter() - start
    model.cpu()
    Xt, yt = data.load(recipe.dataset, "test", data_root=data_root)
    tr, te = evaluate(model, X[:2000], y[:2000]), evaluate(model, Xt, yt)
    metrics = {"train_loss": tr["loss"], "train_acc": tr["acc"], "test_loss": te["loss"], "test_acc": te["acc"],
               "seconds": seconds}
    save_checkpoint(path, recipe, model, metrics)
    model.mclib_metrics, model.mclib_recipe = metrics, recipe
    return model.to(device).eval()
