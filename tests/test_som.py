"""Tests of mclib.som: BMUs and SOM errors against MiniSom, code metrics on constructed codes,
activation hooks on conv/dense layers, and the minimal-eps search on a model with a known answer."""
import math
import warnings

import numpy as np
import pytest
import torch
from minisom import MiniSom
from sklearn.metrics import mutual_info_score
from torch import nn

from mclib import models
from mclib import som as S


def _minisom_with(weights: np.ndarray) -> MiniSom:
    rows, cols, d = weights.shape
    m = MiniSom(rows, cols, d, sigma=1.0, random_seed=0)
    m._weights = weights.astype(np.float64).copy()
    return m


# --------------------------------------------------------------------------- SOM
def test_bmu_on_hand_made_map():
    # 2 x 2 map in 2-D; unit k = i * cols + j sits at the listed point
    W = torch.tensor([[[0.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]]])
    som = S.SOM(W)
    X = torch.tensor([[0.1, 0.1], [0.1, 0.9], [0.8, 0.2], [2.0, 2.0], [0.5, 0.5]])
    # the last point is equidistant to all four units: the first index wins (MiniSom's argmin rule)
    assert som.bmu(X).tolist() == [0, 1, 2, 3, 0]
    ms = _minisom_with(W.numpy())
    assert [int(np.ravel_multi_index(ms.winner(x), (2, 2))) for x in X.numpy()] == [0, 1, 2, 3, 0]
    assert som.grid.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_errors_match_minisom_on_same_weights():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(5, 4, 3, generator=g)
    X = torch.randn(300, 3, generator=g)
    som, ms = S.SOM(W), _minisom_with(W.numpy())
    Xn = X.double().numpy()
    assert som.quantization_error(X) == pytest.approx(ms.quantization_error(Xn), rel=1e-5)
    assert som.topographic_error(X) == pytest.approx(ms.topographic_error(Xn), abs=1e-6)
    winners = [int(np.ravel_multi_index(ms.winner(x), (5, 4))) for x in Xn]
    assert som.bmu(X).tolist() == winners


def _structured(n=1000, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    Z, A = torch.randn(n, 2, generator=g), torch.randn(2, d, generator=g)
    return torch.relu(Z @ A + 0.2 * torch.randn(n, d, generator=g))


def test_torch_som_matches_minisom_errors():
    X = _structured()
    ref = S.fit_som(X, 8, 8, backend="minisom", iterations=2 * len(X))
    own = S.fit_som(X, 8, 8, backend="torch", iterations=10)
    Zr, Zo = S.standardise(ref, X), S.standardise(own, X)
    qe_r, qe_o = ref.quantization_error(Zr), own.quantization_error(Zo)
    te_r, te_o = ref.topographic_error(Zr), own.topographic_error(Zo)
    assert qe_o == pytest.approx(qe_r, rel=0.15)
    assert abs(te_o - te_r) < 0.1
    # both organise the data far better than the untrained PCA plane would (sanity of the training)
    assert ref.weights.shape == own.weights.shape == (8, 8, 16)


def test_fit_som_is_deterministic_and_validates():
    X = _structured(200, 4)
    a = S.fit_som(X, 4, 4, iterations=400, seed=3)
    b = S.fit_som(X, 4, 4, iterations=400, seed=3)
    assert torch.equal(a.weights, b.weights)
    with pytest.raises(ValueError, match="backend"):
        S.fit_som(X, 4, 4, backend="nope")
    with pytest.raises(ValueError, match="codes"):
        S.SOM(a.weights).bmu(torch.zeros(3, 5))


# --------------------------------------------------------------------------- metrics
def test_metrics_all_one_bmu():
    grid = S._grid(3, 3)
    labels = torch.arange(40) % 4
    m = S.code_metrics(torch.zeros(40, dtype=torch.long), labels, grid)
    assert m["units_used"] == 1
    assert m["bmu_entropy"] == pytest.approx(0.0, abs=1e-12)
    assert m["mi"] == pytest.approx(0.0, abs=1e-12)
    assert m["purity"] == pytest.approx(0.25)
    assert m["label_entropy_at_bmu"] == pytest.approx(2.0)


def test_metrics_one_bmu_per_class():
    grid = S._grid(3, 3)
    labels = torch.arange(40) % 4
    bmus = labels * 2  # class c -> unit 2c
    m = S.code_metrics(bmus, labels, grid)
    assert m["purity"] == pytest.approx(1.0)
    assert m["mi"] == pytest.approx(2.0)  # = H(Y) = log2 4 for balanced classes
    assert m["nmi"] == pytest.approx(1.0)
    assert m["units_used"] == 4
    assert m["bmu_entropy"] == pytest.approx(2.0)
    assert m["within_class_spread"] == pytest.approx(0.0, abs=1e-12)


def test_mi_known_value_and_sklearn():
    # 2 units x 2 classes with counts [[2, 1], [1, 2]]: I = 1 - H2(1/3) bits
    bmus = torch.tensor([0, 0, 0, 1, 1, 1])
    labels = torch.tensor([0, 0, 1, 0, 1, 1])
    h = -(1 / 3) * math.log2(1 / 3) - (2 / 3) * math.log2(2 / 3)
    m = S.code_metrics(bmus, labels, S._grid(1, 2))
    assert m["mi"] == pytest.approx(1 - h)
    assert m["purity"] == pytest.approx(4 / 6)
    g = torch.Generator().manual_seed(0)
    b, y = torch.randint(0, 9, (500,), generator=g), torch.randint(0, 5, (500,), generator=g)
    ref = mutual_info_score(y.numpy(), b.numpy()) / math.log(2)
    assert S.code_metrics(b, y, S._grid(3, 3))["mi"] == pytest.approx(ref, rel=1e-9)


def test_within_class_spread_known_value():
    # one class on units (0,0) and (0,2): centroid (0,1), every input 1 grid unit away
    bmus = torch.tensor([0, 2, 0, 2])
    m = S.code_metrics(bmus, torch.zeros(4, dtype=torch.long), S._grid(3, 3))
    assert m["within_class_spread"] == pytest.approx(1.0)


def test_bmu_homogeneity():
    bmus = torch.tensor([0, 0, 0, 0, 1, 1])
    labels = torch.tensor([0, 1, 2, 3, 5, 5])
    h = S.bmu_homogeneity(bmus, labels, n_units=4)
    assert h["label_entropy"].tolist() == pytest.approx([2.0] * 4 + [0.0] * 2)
    assert h["n_classes"].tolist() == [4, 4, 4, 4, 1, 1]
    q = S.bmu_homogeneity(bmus, labels, n_units=4, query=torch.tensor([1, 3]))
    assert q["hits"].tolist() == [2, 0]


# --------------------------------------------------------------------------- hooks
def test_activation_shapes_cnn_and_channel_means():
    model = models.build("cnn", dataset="mnist5k").eval()
    X = torch.rand(5, 1, 28, 28)
    layers = S.default_layers(model)
    assert layers == ["1.1", "1.4", "1.8", "1.9"]  # conv1 ReLU, conv2 ReLU, dense ReLU, logits
    acts = S.activations(model, X, batch_size=2)
    assert [tuple(acts[n].shape) for n in layers] == [(5, 16), (5, 32), (5, 128), (5, 10)]
    assert not any(a.requires_grad for a in acts.values())   # codes are data: no autograd graph behind them
    with torch.no_grad():
        conv1 = model[1][1](model[1][0](model[0](X)))
        logits = model(X)
    assert torch.allclose(acts["1.1"], conv1.mean((2, 3)), atol=1e-6)
    assert torch.allclose(acts["1.9"], logits, atol=1e-5)
    assert tuple(S.activations(model, X, ["1.1"], reduce="flatten")["1.1"].shape) == (5, 16 * 28 * 28)
    with pytest.raises(ValueError, match="not modules"):
        S.activations(model, X, ["nope"])


def test_activation_shapes_resnets():
    model = models.build("resnet8", dataset="mnist5k").eval()
    acts = S.activations(model, torch.rand(3, 1, 28, 28))
    assert {n: tuple(a.shape) for n, a in acts.items()} == {
        "1.stem": (3, 16), "1.layer1.0": (3, 16), "1.layer2.0": (3, 32), "1.layer3.0": (3, 64), "1.fc": (3, 10)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no pretrained weights here: randomly initialised, on purpose
        r18 = models.build("resnet18", in_shape=(3, 32, 32), num_classes=10).eval()
    acts = S.activations(r18, torch.rand(2, 3, 32, 32))
    dims = {n: a.shape[1] for n, a in acts.items()}
    assert list(dims) == ["1.relu"] + [f"1.layer{s}.{b}" for s in range(1, 5) for b in range(2)] + ["1.fc"]
    assert [dims["1.relu"], dims["1.layer1.1"], dims["1.layer2.0"], dims["1.layer3.1"], dims["1.layer4.1"], dims["1.fc"]] \
        == [64, 64, 128, 256, 512, 10]




def test_default_layers_third_party_resnet():
    """A third-party CIFAR ResNet (functional ReLU stem, option-A lambda shortcuts, head named `linear`):
    the stem and the read-out are found from the call graph, not dropped."""
    import thirdparty
    model = models.with_normalization(thirdparty.resnet(num_classes=4), thirdparty.MEAN, thirdparty.STD).eval()
    layers = S.default_layers(model)
    assert layers == ["1.bn1", "1.layer1.0", "1.layer2.0", "1.layer3.0", "1.linear"]
    X = torch.rand(3, 3, 32, 32)
    acts = S.activations(model, X)
    assert [tuple(acts[n].shape) for n in layers] == [(3, 8), (3, 8), (3, 16), (3, 32), (3, 4)]
    body = model[1]
    with torch.no_grad():       # independent reference: the stem's BatchNorm output, channel means; the logits
        stem = body.bn1(body.conv1(model[0](X)))
        assert torch.allclose(acts["1.bn1"], stem.mean((2, 3)), atol=1e-5)
        assert torch.allclose(acts["1.linear"], model(X), atol=1e-5)


def test_default_layers_untraceable_names_candidates():
    class Branchy(nn.Module):        # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.layer1, self.layer2, self.layer3 = nn.Sequential(nn.Identity()), nn.Sequential(), nn.Sequential()
            self.out = nn.Linear(2, 2)

        def forward(self, x):
            h = self.layer1(self.conv(x))
            if h.sum() > 0:
                h = -h
            return self.out(h.mean((2, 3)))

    with pytest.raises(ValueError, match="layers=.*conv.*out"):
        S.default_layers(Branchy())
