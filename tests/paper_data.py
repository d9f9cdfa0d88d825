"""Small, learnable CIFAR-10 and SVHN in torchvision's on-disk format, for the paper-path run (issue 27).

``write(folder)`` writes ``folder/cifar-10-batches-py/`` (pickled ``data_batch_1..5``, ``test_batch``,
``batches.meta``) and ``folder/svhn/{train,test}_32x32.mat`` (``X`` of shape (32, 32, 3, N), ``y`` of shape (N, 1)
with the digit 0 labelled 10), which :func:`mclib.data.load` reads exactly as it reads the official files (it warns
that their md5 is not the official one). Learnable: each class has its own colour, its own stripe direction and
frequency and a bright blob at its own place, under pixel noise, so a few SGD steps of any of the book's networks
lift test accuracy well above chance; the images are not photographs, and nothing measured on them is a result.

Run as a script: ``python tests/paper_data.py FOLDER`` (used by ``make paper-path``) writes the data;
``python tests/paper_data.py --check-records BUILD`` then checks that the C chapters' claim records under
``BUILD/claims`` name both datasets (:func:`check_c_records`).
"""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

#: Images per split and dataset: CIFAR-10's five training batches hold N_TRAIN // 5 each.
N_TRAIN, N_TEST = 1000, 200   # test: the repair chapters evaluate on half of the whole split (c2: 11 path points)
CLASSES = 10


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8, (n, 32, 32, 3)) with balanced, shuffled labels 0..9 (int64)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % CLASSES)
    hues = np.linspace(0, 1, CLASSES, endpoint=False)
    # a distinct colour per class (points around the colour wheel, not too dark or too bright)
    colours = 0.5 + 0.35 * np.stack([np.cos(2 * np.pi * (hues + k / 3)) for k in range(3)], axis=1)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    x = np.empty((n, 32, 32, 3), dtype=np.float32)
    for c in range(CLASSES):
        idx = np.flatnonzero(y == c)
        angle = np.pi * c / CLASSES
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (2 + c % 3) * (np.cos(angle) * xx + np.sin(angle) * yy))
        cy, cx = 8 + 16 * (c // 5) / 1.0, 5 + 5.5 * (c % 5)
        blob = np.exp(-(((yy * 32 - cy) ** 2 + (xx * 32 - cx) ** 2) / 18.0))
        pattern = 0.55 * colours[c][None, None, :] + 0.3 * stripes[..., None] + 0.3 * blob[..., None]
        # per-image variation: brightness, a small shift, pixel noise
        for i in idx:
            shift = rng.integers(-2, 3, size=2)
            img = np.roll(pattern, tuple(shift), axis=(0, 1)) * rng.uniform(0.8, 1.1)
            x[i] = img + rng.normal(0, 0.08, size=img.shape)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8), y.astype(np.int64)


def _splits(n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training then test images, each split balanced over the classes."""
    (a, ya), (b, yb) = images(n_train, seed), images(n_test, seed + 1000)
    return np.concatenate([a, b]), np.concatenate([ya, yb])


def write_cifar10(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` as torchvision.datasets.CIFAR10 reads it; returns the folder."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    x, y = _splits(n_train, n_test, seed)
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)  # the red plane's 1024 bytes first, as in the originals
    per = n_train // 5
    for b in range(5):
        sl = slice(b * per, (b + 1) * per if b < 4 else n_train)
        batch = {"batch_label": f"training batch {b + 1} of 5", "labels": y[sl].tolist(), "data": rows[sl],
                 "filenames": [f"synthetic_{i}.png" for i in range(sl.start, sl.stop)]}
        (folder / f"data_batch_{b + 1}").write_bytes(pickle.dumps(batch, protocol=2))
    test = {"batch_label": "testing batch 1 of 1", "labels": y[n_train:].tolist(), "data": rows[n_train:],
            "filenames": [f"synthetic_{i}.png" for i in range(n_train, n_train + n_test)]}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {"num_cases_per_batch": per, "label_names": names, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def write_svhn(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 1) -> Path:
    """``root/svhn/{train,test}_32x32.mat`` as torchvision.datasets.SVHN reads them; returns the folder."""
    import scipy.io

    folder = Path(root) / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    x, y = _splits(n_train, n_test, seed)
    digit = np.where(y == 0, 10, y)  # SVHN's files label the digit 0 as 10
    for split, sl in (("train", slice(0, n_train)), ("test", slice(n_train, n_train + n_test))):
        scipy.io.savemat(folder / f"{split}_32x32.mat",
                         {"X": np.ascontiguousarray(x[sl].transpose(1, 2, 3, 0)),
                          "y": digit[sl].reshape(-1, 1).astype(np.uint8)})
    return folder


def write(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Path:
    """Both datasets under ``root`` (the ``--data-root`` of a build); returns ``root``."""
    root = Path(root)
    write_cifar10(root, n_train, n_test)
    write_svhn(root, n_train, n_test)
    return root


#: The C claims whose records must name every dataset of the paper preset (C8 reads them; it trains nothing).
C_CLAIMS = ("C1", "C2", "C3", "C4", "C5", "C6", "C7")


def check_c_records(build: Path, required=("cifar10", "svhn")) -> dict[str, set[str]]:
    """The datasets each C claim's record under ``build/claims`` was measured on
    (:func:`mclib.claims.paper_c.datasets_of`: the record's ``dataset`` and its per-architecture entries'); raises
    AssertionError naming every claim that is missing or lacks one of ``required`` (the paper preset: Zhao et al.
    measure CIFAR-10 with VGG and SVHN with ResNet)."""
    import json

    from mclib.claims import paper_c

    found, problems = {}, []
    for cid in C_CLAIMS:
        path = Path(build) / "claims" / f"{cid}.json"
        if not path.exists():
            problems.append(f"{cid}: no record at {path}")
            continue
        found[cid] = paper_c.datasets_of(json.loads(path.read_text())["values"])
        lacking = [d for d in required if d not in found[cid]]
        if lacking:
            problems.append(f"{cid}: measured on {sorted(found[cid]) or 'no named dataset'}, not on {lacking}")
    assert not problems, "the C records do not name the paper's datasets: " + "; ".join(problems)
    return found


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check-records":
        got = check_c_records(Path(sys.argv[2]))
        print("C records name " + "; ".join(f"{cid}: {', '.join(sorted(d))}" for cid, d in got.items()))
        sys.exit(0)
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/paper_data.py FOLDER | --check-records BUILD")
    print(f"wrote CIFAR-10 and SVHN ({N_TRAIN} train, {N_TEST} test images each) under {write(Path(sys.argv[1]))}")
