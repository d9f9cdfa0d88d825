import warnings

import pytest
import torch

from mclib import models


@pytest.mark.parametrize("arch", ["mlp", "cnn", "vgg", "vgg_bn", "resnet8"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_every_arch_maps_images_to_logits(arch, shape):
    model = models.build(arch, in_shape=shape, num_classes=7).eval()
    out = model(torch.rand(2, *shape))
    assert out.shape == (2, 7)
    assert isinstance(model[0], models.Normalize)


def test_normalisation_is_the_first_layer():
    model = models.build("mlp", dataset="mnist5k")
    x = torch.full((1, 1, 28, 28), 0.1307)
    assert torch.allclose(model[0](x), torch.zeros_like(x), atol=1e-6)


def test_bad_names_and_shapes():
    with pytest.raises(ValueError, match="unknown architecture"):
        models.build("transformer", in_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ValueError, match="6n\\+2"):
        models.build("resnet10", in_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ValueError, match="in_shape"):
        models.build("mlp")


def test_torchvision_wrapper_warns_without_weights_and_loads_them(tmp_path):
    with pytest.warns(UserWarning, match="randomly initialised"):
        model = models.build("resnet18", in_shape=(3, 32, 32), num_classes=10)
    body = model[1]
    path = tmp_path / "r18.pt"
    torch.save(body.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = models.build("resnet18", in_shape=(3, 32, 32), num_classes=10, weights_path=path)
    for (k, a), b in zip(body.state_dict().items(), again[1].state_dict().values()):
        assert torch.equal(a, b), k


# ------------------------------------------------------------------------------------------ the papers' architectures
def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _vgg16_reference(batch_norm: bool, classes: int = 10) -> int:
    """Parameters of Garipov et al.'s VGG16 / VGG16BN (dnn-mode-connectivity, models/vgg.py) on 3x32x32, counted
    from its config: 3x3 convolutions with bias (+ BatchNorm weight and bias), then 512-512-512-classes."""
    config = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
    total, cin = 0, 3
    for block in config:
        for c in block:
            total += 9 * cin * c + c + (2 * c if batch_norm else 0)
            cin = c
    return total + (512 * 512 + 512) * 2 + 512 * classes + classes


def _resnet18_cifar_reference(classes: int = 10) -> int:
    """torchvision's ImageNet ResNet-18 with its 7x7x3x64 stem replaced by a 3x3x3x64 one (no other parameter
    differs: the max-pool has none)."""
    import torchvision

    tv = _params(torchvision.models.resnet18(weights=None, num_classes=classes))
    return tv - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64


def test_vgg16_parameter_counts_match_garipovs_code():
    assert _params(models.build("vgg16_bn", in_shape=(3, 32, 32), num_classes=10)) == _vgg16_reference(True) == 15_253_578
    assert _params(models.build("vgg16", in_shape=(3, 32, 32), num_classes=10)) == _vgg16_reference(False) == 15_245_130


def test_resnet18_cifar_has_a_3x3_stem_and_the_reference_parameter_count():
    model = models.build("resnet18_cifar", in_shape=(3, 32, 32), num_classes=10)
    assert _params(model) == _resnet18_cifar_reference() == 11_173_962
    body = model[1]
    assert body.stem[0].kernel_size == (3, 3) and body.stem[0].stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in body.modules())
    feats = body.layer1(body.stem(torch.rand(2, 3, 32, 32)))
    assert feats.shape == (2, 64, 32, 32)          # full resolution after the stem: no stride-2 stem, no max-pool


def test_resnet20_has_about_the_papers_027_million_parameters():
    # He et al. (2016), Table 6: ResNet-20 has 0.27 M parameters (with parameter-free shortcuts); ours projects
    # the two down-sampling shortcuts with 1x1 convolutions (+2,752 parameters)
    n = _params(models.build("resnet20", in_shape=(3, 32, 32), num_classes=10))
    assert round(n / 1e6, 2) == 0.27


#: Architecture -> its parameter count on 3x32x32 with 10 classes where the papers (or their code) fix one; None for
#: the papers' unspecified small CNN (Vrabel et al.'s A6/A7 "CNN").
PAPER_PARAMS = {"vgg16_bn": _vgg16_reference(True), "vgg16": _vgg16_reference(False),
                "resnet18_cifar": 11_173_962, "resnet20": None, "cnn": None}


def _paper_archs() -> set[str]:
    from mclib import config

    p = config.get_preset("paper")
    archs = {p.arch}
    for chapter, keys in {"curves": ["archs"], "robustness": ["archs", "map_archs"], "som": ["archs"],
                          "untrained": ["archs"], "paths": ["second_arch"], "repair": ["second_arch"],
                          "evolution": ["arch"]}.items():
        S = p.section(chapter)
        for k in keys:
            archs |= set([S[k]] if isinstance(S[k], str) else S[k])
    return archs


def test_every_paper_preset_architecture_is_a_papers_architecture_with_its_parameter_count():
    archs = _paper_archs()
    assert archs <= set(PAPER_PARAMS), f"paper-preset architectures without a reference: {archs - set(PAPER_PARAMS)}"
    assert "vgg_bn" not in archs and "vgg" not in archs and "resnet18" not in archs   # the small VGG, ImageNet ResNet
    for arch in archs:
        if PAPER_PARAMS[arch] is not None:
            assert _params(models.build(arch, in_shape=(3, 32, 32), num_classes=10)) == PAPER_PARAMS[arch], arch


@pytest.mark.parametrize("arch", ["vgg16", "vgg16_bn", "resnet18_cifar"])
def test_paper_architectures_map_small_images_to_logits(arch):
    # 8x8 inputs too (smoke sizes): VGG-16 skips the max-pools a 1-pixel map cannot take
    for shape in [(3, 32, 32), (1, 8, 8)]:
        model = models.build(arch, in_shape=shape, num_classes=7).eval()
        assert model(torch.rand(2, *shape)).shape == (2, 7)


def test_the_architectures_claims_md_names_are_in_the_paper_tables():
    """CLAIMS.md names for the paper preset: VGG16 (C1, C2: Garipov's VGG16 / Zhao's VGG), ResNet-18 on 3x32x32
    (A6, B1-B3), the untrained CNN (A6), VGG and ResNet (C8). Not covered: GoogLeNet on ImageNet (A1's examples) and
    ResNet-50 (B), which need ImageNet."""
    archs = _paper_archs()
    assert {"vgg16_bn", "vgg16"} & archs                      # VGG-16 (with and without BatchNorm)
    assert "resnet18_cifar" in archs and "cnn" in archs
    assert any(a.startswith("resnet") for a in archs) and any(a.startswith("vgg") for a in archs)   # C8: VGG/ResNet
