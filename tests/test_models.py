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
