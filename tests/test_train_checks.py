"""A model that fits its batches in training mode but is at chance in evaluation mode stops training with a
message naming the recipe and the likely cause (issue 34, point 6); it is never cached."""
import math

import pytest

from mclib import checkpoints, train

FIT = train.Recipe(arch="mlp", dataset="digits", epochs=20, batch_size=32, n_train=256, arch_kwargs={"hidden": (32,)})


def _metrics(acc):
    return {"train_loss": 2.3, "train_acc": acc, "test_loss": 2.3, "test_acc": acc, "seconds": 1.0}


def test_check_learned_stops_a_model_at_chance_in_eval_mode_that_fits_in_train_mode():
    with pytest.raises(RuntimeError) as err:
        train.check_learned(FIT, _metrics(0.1), [2.3] * 90 + [0.05] * 10)
    msg = str(err.value)
    for part in ("mlp/digits seed 0", "epochs=20", "batch_size=32", FIT.key, "BatchNorm running statistics",
                 "too few steps", "10.0% on training images"):
        assert part in msg, part


@pytest.mark.parametrize("acc, losses", [
    (0.1, [2.3] * 100),              # at chance in both modes: left to the judges (inconclusive evidence)
    (0.9, [0.05] * 100),             # learned in both modes
    (0.16, [0.05] * 100),            # above 1.5 x chance in eval mode
    (0.1, []),                       # no step taken
])
def test_check_learned_lets_consistent_models_through(acc, losses):
    train.check_learned(FIT, _metrics(acc), losses)


def test_the_threshold_is_half_the_cross_entropy_of_guessing():
    ln10 = math.log(10)
    train.check_learned(FIT, _metrics(0.1), [0.5 * ln10 + 1e-6] * 10)
    with pytest.raises(RuntimeError):
        train.check_learned(FIT, _metrics(0.1), [0.5 * ln10 - 1e-6] * 10)


def test_train_refuses_and_does_not_cache_a_model_at_chance_in_eval_mode(monkeypatch):
    """The MLP fits its 256 digits in training mode; evaluation is made to report chance, as a ResNet whose
    BatchNorm statistics had not settled did (100% in train mode, 10% in eval mode)."""
    monkeypatch.setattr(train, "evaluate", lambda model, X, y, batch_size=None: {"loss": 2.3, "acc": 0.1})
    with pytest.raises(RuntimeError, match="at chance in evaluation mode"):
        train.train(FIT, progress=False)
    assert not checkpoints.checkpoint_path(FIT).exists()
    monkeypatch.undo()
    ok = train.train(FIT, progress=False)          # the same recipe trains and caches once evaluation is sound
    assert ok.metrics["test_acc"] > 0.5 and checkpoints.checkpoint_path(FIT).exists()
