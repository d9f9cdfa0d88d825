"""Training and evaluation, with checkpoints cached by a hash of the whole recipe.

A :class:`Recipe` names everything that determines a trained model: architecture, dataset, seed,
sizes, optimiser, and optional *hooks* given as importable names (``"module:function"``) with keyword
arguments, so that they hash like everything else:

* ``data_hook(X, y, generator=..., **kw) -> (X, y)`` changes the training set once before training
  (e.g. backdoor poisoning, :func:`mclib.attacks.backdoor.poison`);
* ``batch_hook(model, x, y, **kw) -> x`` changes every batch before the step
  (e.g. PGD adversarial training, :func:`mclib.attacks.evasion.pgd`).

Hooks are named rather than passed because a recipe must be hashable, JSON-serialisable data; they are
imported from mclib (or packages allowed with :func:`allow_hooks`) only, see :func:`resolve`.

The model cache (:func:`train` loads, or trains and caches) is :mod:`mclib.checkpoints`: checksummed, atomic,
locked per recipe, never losing a trained model; its docstring states what it promises.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import math
import os
import textwrap
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mclib import _check as check
from mclib import checkpoints, data, infer, models, runtime, torchutil

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
    augment: str = "none"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        data.info(self.dataset)
        runtime.check_seed(self.seed)
        check.positive_int(self.epochs, "Recipe epochs")       # 0 steps would cache an untrained model
        check.positive_int(self.batch_size, "Recipe batch_size")
        check.positive_float(self.lr, "Recipe lr")
        check.non_negative_float(self.weight_decay, "Recipe weight_decay")
        check.probability(self.momentum, "Recipe momentum")
        if self.n_train is not None:
            check.positive_int(self.n_train, "Recipe n_train")
        if self.augment not in data.AUGMENTATIONS:
            raise ValueError(f"unknown augment {self.augment!r}; valid: {', '.join(data.AUGMENTATIONS)}")
        for name in ("arch_kwargs", "data_hook_kwargs", "batch_hook_kwargs"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, _freeze(value))

    def replace(self, **changes) -> "Recipe":
        """A copy with some fields changed (dict-valued kwargs are frozen automatically)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """The recipe as canonical JSON, with the data split's version (a new split retrains).

        Fields added after the first cached models (:data:`LATER_FIELDS`) are left out at their default value, so
        a recipe that does not use them keeps its key (and its checkpoint)."""
        fields = dict(dataclasses.asdict(self), split_version=data.SPLIT_VERSION)
        for name, default in LATER_FIELDS.items():
            if fields[name] == default:
                del fields[name]
        return json.dumps(fields, sort_keys=True, default=list)

    @property
    def key(self) -> str:
        """The checkpoint's file name, a short hash of the whole recipe."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @property
    def code(self) -> str:
        """The hash of the code that trains this recipe (:func:`code_hash`), stored with its checkpoint."""
        return code_hash(self)

    def build(self) -> nn.Module:
        """A freshly initialised model of this recipe's architecture (seeded by the recipe's seed)."""
        torch.manual_seed(self.seed)
        return models.build(self.arch, dataset=self.dataset, **_unfreeze(self.arch_kwargs))


#: Recipe fields added later, with the default at which :meth:`Recipe.to_json` leaves them out.
LATER_FIELDS = {"augment": "none"}


def recipe_defaults(ctx_or_preset) -> dict[str, Any]:
    """The standard recipe's training fields of a preset, from ``mclib/presets/recipe.toml``: ``optimizer``,
    ``momentum``, ``weight_decay`` and ``augment`` (sizes, epochs and the learning rate are in ``base.toml``).
    The learning-rate schedule follows the optimiser (:func:`make_optimizer`: Adam constant, SGD cosine)."""
    section = ctx_or_preset.section("recipe")
    return {k: section[k] for k in ("optimizer", "momentum", "weight_decay", "augment")}


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
    arch = arch or p.arch
    # the preset's architecture arguments (recipe.toml's arch_kwargs: {} but at paper-smoke, whose narrower VGG-16
    # keeps the paper's layers at test cost); a chapter's own arch_kwargs= replaces them
    shape = dict(p.section("recipe").get("arch_kwargs", {}).get(arch, {}))
    base = Recipe(arch=arch, dataset=p.dataset, seed=seed, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                  n_train=p.n_train, **({"arch_kwargs": shape} if shape else {}), **recipe_defaults(p))
    return base.replace(**changes) if changes else base


#: Top-level packages whose functions a recipe may name as hooks (:func:`resolve`); extend with :func:`allow_hooks`.
HOOK_PACKAGES: frozenset[str] = frozenset({"mclib"})


def allow_hooks(*packages: str) -> frozenset[str]:
    """Let recipes name hooks in the modules ``packages`` (and their submodules), e.g. ``allow_hooks("mylab")``
    for ``"mylab.attacks:poison"``; returns the allowed packages. mclib's own are always allowed."""
    global HOOK_PACKAGES
    for p in packages:
        if not isinstance(p, str) or not p or not all(part.isidentifier() for part in p.split(".")):
            raise ValueError(f"allow_hooks: {p!r} is not a module name; allowed: dotted Python identifiers such as 'mylab'")
    HOOK_PACKAGES = HOOK_PACKAGES | frozenset(packages)
    return HOOK_PACKAGES


def resolve(name: str) -> Callable:
    """The hook function named ``"package.module:function"`` (e.g. ``"mclib.attacks.backdoor:poison"``).

    Why hooks are names, not functions: a :class:`Recipe` is the key of the model cache, so it must be
    hashable, JSON-serialisable data (its hash names the checkpoint; the checkpoint stores it as JSON and
    compares it on load). A function object is neither, so a recipe names its hooks and this function imports
    them when the model is trained. That is why this core module reaches upper ones (:mod:`mclib.attacks`) at
    run time without an import statement: the dependency is chosen by the recipe, not by this module.

    Importing runs code, so only modules inside :data:`HOOK_PACKAGES` (``mclib`` and what :func:`allow_hooks`
    added) are imported; a recipe naming anything else -- say one read back from a file -- is refused before any
    import. Raises ValueError for a malformed name, a module outside those packages, or a hook that cannot be
    imported or is not callable.
    """
    if not isinstance(name, str) or name.count(":") != 1:
        raise ValueError(f"hook {name!r} must be written 'module:function'")
    mod, fn = name.split(":", 1)
    if not all(part.isidentifier() for part in mod.split(".")) or not fn.isidentifier():
        raise ValueError(f"hook {name!r} must be written 'module:function' with Python identifiers")
    if not any(mod == p or mod.startswith(p + ".") for p in HOOK_PACKAGES):
        raise ValueError(f"hook {name!r} is in module {mod!r}, outside the packages hooks may come from "
                         f"({', '.join(sorted(HOOK_PACKAGES))}); allow its package first with "
                         f"mclib.train.allow_hooks({mod.split('.')[0]!r})")
    try:
        hook = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import hook {name!r}: {err}") from None
    if not callable(hook):
        raise ValueError(f"hook {name!r} is a {type(hook).__name__}, not a function")
    return hook


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


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default training loss of :func:`fit`: mean cross-entropy :math:`\\mathrm{CE}(f(x), y)`."""
    return F.cross_entropy(check.model_call(model, x, "X"), y)


def make_optimizer(params: list[nn.Parameter], optimizer: str, lr: float, weight_decay: float, momentum: float,
                   total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """The optimiser of :func:`fit` and its schedule: Adam at a constant rate, or SGD with ``momentum`` and a
    cosine decay over ``total_steps`` (the usual schedule for SGD on these small problems)."""
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay), None
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, total_steps)
    raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


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
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy_loss,
    batch_modules: Callable[[torch.Generator | None, int], Sequence[nn.Module]] | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[float]:
    """Minimise ``loss`` (default cross-entropy) of ``model`` on ``(X, y)`` with minibatches; returns the
    per-batch losses. The one training loop of mclib: :func:`mclib.curves.train_curve` runs through it too.

    Every epoch shuffles ``X`` (``torch.randperm`` from ``generator``) and takes one optimiser step per
    batch of ``batch_size`` rows on the trainable parameters of ``model`` (``requires_grad``), with
    ``optimizer`` ``"adam"`` or ``"sgd"`` (:func:`make_optimizer`; ``weight_decay`` is the optimiser's).

    Per batch, in this order:

    1. ``batch_modules(generator, n_batches)`` (optional), called once per epoch right after the shuffle,
       gives the module each batch of the epoch trains *through* -- e.g. the point :math:`w(t)` of a curve at a
       freshly drawn :math:`t` (:func:`mclib.curves.train_curve`). Without it every batch uses ``model``.
       Call it ``m``;
    2. ``augment(x) -> x`` (optional; e.g. :func:`mclib.data.crop_flip`) transforms the batch, then
       ``batch_hook(m, x, y) -> x`` (optional) replaces it (e.g. PGD adversarial training);
    3. ``model`` is put in training mode and one step is taken on ``loss(m, x, y)``, a scalar tensor
       differentiable in ``model``'s parameters (gradients a hook left are discarded first);
    4. ``callback(step, model, loss)`` (optional) is called after the step (used to watch barriers
       evolve during training, claim A7); it may raise to stop training.

    On the CPU a model with 2-d convolutions trained on image batches (N, C, H, W) runs in the channels-last
    memory format (weights and batches; oneDNN's fast convolution layout, 1.3-1.4x per step for the quick
    CNN and VGG-BN, issue 31): the same arithmetic in another summation order, so losses agree with the
    NCHW loop to float32 rounding. The model's tensors are back in their own layout and storage when ``fit``
    returns or raises (:func:`mclib.torchutil.channels_last`). Not for ``batch_modules`` (a curve's weights
    are formed per batch; :func:`mclib.curves.objective` lays them out channels-last itself).

    The model ends in eval mode on ``device``.
    """
    if len(X) != len(y):
        raise ValueError(f"X and y differ in length: {len(X)} vs {len(y)}")
    if len(X) == 0:
        raise ValueError("X is empty: fit needs at least one training input")
    epochs, batch_size = check.positive_int(epochs, "epochs"), check.positive_int(batch_size, "batch_size")
    lr = check.non_negative_float(lr, "lr")       # 0 is allowed here: a probe of the gradients (tests)
    if loss is cross_entropy_loss:
        y = check.labels(y, "y", n=len(X))
    device = torch.device(device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = (len(X) + batch_size - 1) // batch_size
    opt, sched = make_optimizer(params, optimizer, lr, weight_decay, momentum, epochs * steps_per_epoch)
    losses: list[float] = []
    step = 0
    # channels-last convolutions on the CPU (see the docstring); the layout is restored on leaving
    fmt = (torch.channels_last if device.type == "cpu" and X.dim() == 4 and batch_modules is None
           and any(isinstance(mod, nn.Conv2d) for mod in model.modules()) else None)
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, disable=not progress, leave=False)
    with torchutil.channels_last(model) if fmt is not None else contextlib.nullcontext():
        for _ in range(epochs):
            order = torch.randperm(len(X), generator=generator)
            through = batch_modules(generator, steps_per_epoch) if batch_modules is not None else None
            for j, i in enumerate(range(0, len(X), batch_size)):
                idx = order[i:i + batch_size]
                xb, yb = X[idx].to(device), y[idx].to(device)
                if augment is not None:
                    xb = augment(xb)
                m = through[j] if through is not None else model
                if batch_hook is not None:
                    xb = batch_hook(m, xb, yb).detach()
                if fmt is not None:
                    xb = xb.contiguous(memory_format=fmt)
                model.train()
                value = loss(m, xb, yb)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                losses.append(value.item())
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if callback is not None:
                    callback(step, model, losses[-1])
    bar.close()
    model.eval()
    return losses


# ------------------------------------------------------------------------------------------ code hash
#: Whole modules whose code defines the networks and the pixels they are trained on.
CODE_MODULES = ("mclib.models", "mclib.data")


def _normalised(source: str) -> str:
    """The code of ``source`` without its docstrings, comments and layout (a dump of its syntax tree).

    Editing a comment, a docstring or the line breaks keeps the hash; changing any statement,
    default value, name or error message changes it.
    """
    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _digest(source: str) -> str:
    return hashlib.sha256(_normalised(source).encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def _module_digest(name: str) -> str:
    """Digest of a module's source as first read in this process (the code that is running)."""
    return _digest(inspect.getsource(importlib.import_module(name)))


def _code_parts(recipe: Recipe) -> dict[str, str]:
    """Name -> digest of every piece of code that :func:`code_hash` covers for ``recipe``."""
    parts = {name: _module_digest(name) for name in CODE_MODULES}
    parts[f"{__name__}:training"] = _TRAINING_DIGEST
    for hook in (recipe.data_hook, recipe.batch_hook):
        if hook:
            parts[f"hook {hook}"] = _hook_digest(hook)
    return parts


def _hook_digest(hook: str) -> str:
    """Digest of the module a hook lives in; of the hook alone where that module has no source file
    (a module made at run time, a notebook's ``__main__``), and of its bytecode where it has none either."""
    fn = resolve(hook)  # a hook that cannot be imported fails here, with resolve's message
    name = hook.split(":", 1)[0]
    with contextlib.suppress(OSError, TypeError):
        return _module_digest(name)
    with contextlib.suppress(OSError, TypeError):
        return _digest(inspect.getsource(fn))
    code = getattr(fn, "__code__", None)
    return hashlib.sha256(code.co_code if code is not None else hook.encode()).hexdigest()


def code_hash(recipe: Recipe) -> str:
    """A hash of the code that turns ``recipe`` into weights and metrics; a checkpoint of other code is retrained.

    Covered (docstrings, comments and layout excluded, see ``_normalised``):

    * :mod:`mclib.models` and :mod:`mclib.data`, whole: the architectures, their initialisation and
      normalisation, and the loading, scaling and splitting of the training images;
    * the training path of this module (:data:`TRAINING_CODE`: :meth:`Recipe.build`, :func:`fit`,
      :func:`evaluate`, :func:`logits`, ...), which decide the weights and the stored metrics;
    * the whole module of every hook the recipe names (e.g. :mod:`mclib.attacks.evasion` for PGD
      training), since a hook calls helpers of its module.

    Not covered: the cache machinery of this module (hashing, checksums, locks, saving) -- it does not
    change a model, and the checkpoint format has its own version (``CHECKPOINT_FORMAT``); other mclib
    modules that a hook imports; torch, numpy and the hardware, which change rounding but not what the
    model is. The sources are read once per process, so the hash describes the code that runs.
    The hash is kept in the checkpoint rather than in its file name: a code change then replaces the
    old checkpoint (with a warning saying why) instead of leaving it behind.
    """
    parts = _code_parts(recipe)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]



# ------------------------------------------------------------------------------------------ train
def _train_fresh(recipe: Recipe, device: torch.device, data_root, progress: bool) -> tuple[nn.Module, dict]:
    """Train ``recipe``'s model from scratch; returns it on the CPU with its metrics."""
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
    losses = fit(model, X, y, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr, optimizer=recipe.optimizer,
        weight_decay=recipe.weight_decay, momentum=recipe.momentum, generator=gen, batch_hook=hook,
        augment=data.augmentation(recipe.augment, gen),
        device=device, progress=progress, desc=f"train {recipe.arch}/{recipe.dataset} seed {recipe.seed}")
    seconds = time.perf_counter() - start
    if not losses:        # never cache (or return) a model that took no step as if it were trained
        raise RuntimeError(f"training {recipe.arch}/{recipe.dataset} took no optimiser step; nothing to cache")
    Xt, yt = data.load(recipe.dataset, "test", data_root=data_root)
    # evaluated where it was trained (the inference engine runs on the model's device), then moved to the CPU
    tr, te = evaluate(model, X[:2000], y[:2000]), evaluate(model, Xt, yt)
    model.cpu()
    metrics = {"train_loss": tr["loss"], "train_acc": tr["acc"], "test_loss": te["loss"], "test_acc": te["acc"],
               "seconds": seconds}
    check_learned(recipe, metrics, losses)
    return model, metrics


#: :func:`check_learned`: eval-mode accuracy at most this many times chance counts as "at chance" ...
AT_CHANCE_FACTOR = 1.5
#: ... while a train-mode cross-entropy (last tenth of the batches, median) below this fraction of ln K -- the
#: cross-entropy of guessing among K classes -- says that the model did fit its training batches.
LEARNED_CE_FRACTION = 0.5


def check_learned(recipe: Recipe, metrics: Mapping[str, float], losses: Sequence[float]) -> None:
    r"""Stop (``RuntimeError``) when a freshly trained model fits its batches in training mode but is at chance in
    evaluation mode, before it is cached and every later chapter measures a constant-prediction model.

    At chance: eval-mode accuracy on the training rows and on the test split both at most
    :data:`AT_CHANCE_FACTOR` :math:`/K`. Fitted: the median train-mode cross-entropy of the last tenth of the
    batches (``losses``, as :func:`fit` returns them) below :data:`LEARNED_CE_FRACTION` :math:`\cdot \ln K`.
    Both together mean that the model behaves differently in the two modes: BatchNorm running statistics that did
    not settle (too few steps for the momentum, or batches too small), or dropout. The message names the recipe
    and what to change. A model at chance in both modes is left to the claims' judges (inconclusive evidence).
    """
    k = data.info(recipe.dataset).num_classes
    if not losses or k < 2:
        return
    tail = sorted(losses[-max(1, len(losses) // 10):])
    fitted_ce = tail[len(tail) // 2]
    chance = 1.0 / k
    at_chance = max(metrics["train_acc"], metrics["test_acc"]) <= AT_CHANCE_FACTOR * chance
    if at_chance and fitted_ce < LEARNED_CE_FRACTION * math.log(k):
        steps = len(losses)
        raise RuntimeError(
            f"the model of recipe {recipe.arch}/{recipe.dataset} seed {recipe.seed} (epochs={recipe.epochs}, "
            f"batch_size={recipe.batch_size}, lr={recipe.lr:g}, optimizer={recipe.optimizer}, {steps} steps; "
            f"checkpoint key {recipe.key}) fits its training batches in training mode (cross-entropy "
            f"{fitted_ce:.3f}, guessing gives {math.log(k):.3f}) but is at chance in evaluation mode (accuracy "
            f"{metrics['train_acc']:.1%} on training images, {metrics['test_acc']:.1%} on the test split; chance "
            f"{chance:.0%}). Likely cause: BatchNorm running statistics that have not settled -- too few steps "
            f"({steps}) or too small batches for the running averages -- so train more steps (epochs, n_train) or "
            "use an architecture without BatchNorm at this size; it was not cached")


























@dataclass(frozen=True, eq=False)
class Trained:
    """A trained model with what describes it: ``model`` (eval mode, on the run's device), its ``metrics``
    (``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``, ``seconds``; read-only) and its ``recipe``.
    Returned by :func:`train` and :meth:`mclib.config.Context.model`; nothing is attached to the module."""

    model: nn.Module
    metrics: Mapping[str, float]
    recipe: Recipe


def _result(model: nn.Module, metrics: dict, recipe: Recipe, device: torch.device) -> Trained:
    return Trained(model.to(device).eval(), MappingProxyType(dict(metrics)), recipe)


def train(
    recipe: Recipe,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> Trained:
    """The model of ``recipe``: loaded from the cache if a valid checkpoint exists, else trained and cached.

    Returns a :class:`Trained`: ``.model`` in eval mode on ``device``, ``.metrics`` (train/test loss and
    accuracy, training time) and ``.recipe``.

    The cache -- checksummed, atomic, locked per recipe, never losing a trained model -- is
    :func:`mclib.checkpoints.cached`.
    """
    device = runtime.get_device(device if not isinstance(device, torch.device) else str(device))
    model, metrics = checkpoints.cached(recipe, lambda: _train_fresh(recipe, device, data_root, progress),
                                        cache_dir=cache_dir, retrain=retrain)
    return _result(model, metrics, recipe, device)


#: The functions of this module that decide a trained model's weights and stored metrics (hashed by
#: :func:`code_hash`; taken when the module is imported, so a patched function does not change it).
TRAINING_CODE = (Recipe.build, _unfreeze, cross_entropy_loss, make_optimizer, fit, logits, evaluate, _train_fresh)
_TRAINING_DIGEST = hashlib.sha256("".join(_digest(inspect.getsource(f)) for f in TRAINING_CODE).encode()).hexdigest()
