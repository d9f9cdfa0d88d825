"""CUDA code paths (issue 34, point 5): run where a GPU is present, skipped elsewhere.

Device choice, chunk sizing from ``torch.cuda.mem_get_info``, the ``cudnn.benchmark`` toggle of the inference
engine, its channels-last copy, bf16 autocast, and evaluation of a trained model on its training device.
The chunk-size formula is also checked on any machine with ``mem_get_info`` stubbed.
"""
import pytest
import torch

from mclib import config, infer, models, train

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_chunk_size_follows_free_memory(monkeypatch):
    """A quarter of the free memory at 64 fp32 activations per input scalar, clipped to [64, 8192]."""
    for free, per, want in [(80 * 2**30, 3 * 32 * 32, 8192), (8 * 2**30, 3 * 32 * 32, 2730), (2**20, 3 * 32 * 32, 64)]:
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None, free=free: (free, 80 * 2**30))
        assert infer.chunk_size(per, "cuda") == max(64, min(8192, free // 4 // (per * 4 * 64))) == want


def test_asking_for_cuda_without_it_raises_naming_the_fix():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        config.get_device("cuda")


@cuda
def test_get_device_cuda():
    assert config.get_device("cuda").type == "cuda"
    assert config.get_device("cuda:0") == torch.device("cuda:0")
    assert config.get_device("auto").type == "cuda"


@cuda
def test_chunk_size_on_the_gpu_reads_its_free_memory():
    free, _ = torch.cuda.mem_get_info(torch.device("cuda"))
    per = 3 * 32 * 32
    n = infer.chunk_size(per, "cuda")
    assert 64 <= n <= 8192
    assert n == int(min(8192, max(64, free // 4 // (per * 4 * 64))))   # memory may move a little between calls


def _model():
    torch.manual_seed(0)
    return models.build("vgg_bn", in_shape=(3, 32, 32), num_classes=10).eval()


@cuda
def test_engine_turns_cudnn_benchmark_on_while_it_runs_and_restores_it(monkeypatch):
    model = _model().cuda()
    seen = []
    real = infer.prepare

    def spy(*a, **k):
        seen.append(torch.backends.cudnn.benchmark)
        return real(*a, **k)

    monkeypatch.setattr(infer, "prepare", spy)
    for before in (False, True):
        torch.backends.cudnn.benchmark = before
        infer.logits(model, torch.rand(16, 3, 32, 32))
        assert torch.backends.cudnn.benchmark is before
    assert seen and all(seen)


@cuda
def test_channels_last_copy_on_cuda_matches_eager_fp32():
    model = _model().cuda()
    X = torch.rand(64, 3, 32, 32)
    prep = infer.prepare(model, X[:8])
    assert prep.device.type == "cuda" and prep.kind == "channels_last"
    got = infer.logits(model, X)
    with torch.no_grad():
        ref = model(X.cuda()).float().cpu()
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)


@cuda
def test_bf16_autocast_on_cuda_is_close_to_fp32():
    model = _model().cuda()
    X = torch.rand(64, 3, 32, 32)
    fp32 = infer.logits(model, X)
    bf16 = infer.logits(model, X, precision="bf16")
    assert bf16.dtype == torch.float32 and bf16.device.type == "cpu"
    assert not torch.equal(bf16, fp32)                         # it did run in reduced precision
    assert (bf16 - fp32).abs().max() <= 0.05 * fp32.abs().max() + 0.05


@cuda
def test_a_model_trained_on_cuda_is_evaluated_on_cuda(monkeypatch):
    seen = []
    real = train.evaluate

    def spy(model, X, y, batch_size=None):
        seen.append(next(model.parameters()).device.type)
        return real(model, X, y, batch_size)

    monkeypatch.setattr(train, "evaluate", spy)
    recipe = train.Recipe(arch="cnn", dataset="digits", epochs=2, batch_size=64, n_train=256)
    run = train.train(recipe, device="cuda", progress=False)
    assert seen == ["cuda", "cuda"]
    assert next(run.model.parameters()).device.type == "cuda"
    monkeypatch.undo()
    cpu = real(run.model.cpu(), *__import__("mclib").data.load("digits", "test"))
    assert abs(cpu["acc"] - run.metrics["test_acc"]) < 0.01
