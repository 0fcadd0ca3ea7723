import json
import os

import pytest
import torch

from tinymnist import rundir
from tinymnist.config import TrainConfig
from tinymnist.errors import TinyMnistError
from tinymnist.train import train

# Small but real: 1,000 real training images and 500 test images, so each run takes a second or two.
QUICK = dict(train_subset=1000, test_subset=500, batch_size=100, threads=1)


def quick(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{**QUICK, "runs_root": str(tmp_path), **kw})


def test_run_directory_contents(tmp_path, mnist_dir):
    result = train(quick(tmp_path, epochs=1, name="r"))
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"config.json", "metrics.csv", "checkpoint.pt", "model.pt", "summary.json"} <= files
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["config"]["model"] == "tiny20k" and saved["environment"]["torch"] == torch.__version__
    assert saved["data"]["sha256"]["t10k-images-idx3-ubyte.gz"].startswith("8d422c7b")
    summary = rundir.read_summary(result.run_dir)
    assert summary["final_test_acc"] == result.final_test_acc
    model, _ = rundir.load_model(result.run_dir)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_same_seed_same_numbers(tmp_path, mnist_dir):
    a = train(quick(tmp_path, epochs=2, seed=7, name="a"))
    b = train(quick(tmp_path, epochs=2, seed=7, name="b"))
    c = train(quick(tmp_path, epochs=2, seed=8, name="c"))
    strip = [{k: v for k, v in m.items() if k not in ("seconds", "elapsed")} for m in a.history]
    assert strip == [{k: v for k, v in m.items() if k not in ("seconds", "elapsed")} for m in b.history]
    assert a.history[-1]["train_loss"] != c.history[-1]["train_loss"]


@pytest.mark.parametrize("schedule", ["onecycle", "step"])
def test_resume_equals_uninterrupted(tmp_path, mnist_dir, schedule):
    full = train(quick(tmp_path, epochs=3, schedule=schedule, name="full"))
    part = train(quick(tmp_path, epochs=3, schedule=schedule, name="part"), stop_after=1)
    assert not part.finished and not (part.run_dir / "model.pt").exists()
    resumed = train(quick(tmp_path, epochs=3, schedule=schedule, name="part"), resume=True)
    assert resumed.finished
    for m1, m2 in zip(full.history, resumed.history, strict=True):
        assert m1["test_acc"] == m2["test_acc"] and m1["train_loss"] == m2["train_loss"]
    assert len(rundir.read_metrics(resumed.run_dir)) == 3


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path, mnist_dir):
    cfg = quick(tmp_path, epochs=3, name="nan", schedule="none", lr=1e4, momentum=0.0)
    with pytest.raises(TinyMnistError, match="training diverged: loss is (nan|inf)"):
        train(cfg)
    # whatever epochs completed before the blow-up are still on disk (nothing half-written)
    assert not list((tmp_path / "nan").glob("*.tmp"))


def test_existing_run_is_never_overwritten(tmp_path, mnist_dir):
    train(quick(tmp_path, epochs=1, name="keep"))
    before = (tmp_path / "keep" / "metrics.csv").read_text()
    with pytest.raises(TinyMnistError, match="already exists"):
        train(quick(tmp_path, epochs=1, name="keep"))
    assert (tmp_path / "keep" / "metrics.csv").read_text() == before


def test_over_budget_model_refused_before_training(tmp_path, mnist_dir):
    with pytest.raises(TinyMnistError, match="over the budget"):
        train(quick(tmp_path, epochs=1, model="seed", param_budget=5000, name="b"))
    assert not (tmp_path / "b" / "metrics.csv").exists()


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizers_learn(tmp_path, mnist_dir, optimizer):
    lr = 0.1 if optimizer == "sgd" else 0.003
    cfg = quick(tmp_path, epochs=2, optimizer=optimizer, lr=lr, name=optimizer, label_smoothing=0.1, train_subset=2000,
                schedule="none", batch_size=32)
    assert train(cfg).final_test_acc > 0.7  # 10% is chance


def test_validation_split_is_reported(tmp_path, mnist_dir):
    result = train(quick(tmp_path, epochs=1, val_split=500, name="v"))
    assert result.history[-1]["val_acc"] is not None


def test_fashion_mnist_trains(tmp_path):
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        if os.environ.get("CI"):
            pytest.fail("dataset-fashion-mnist missing under CI")
        pytest.skip("dataset-fashion-mnist not installed")
    result = train(quick(tmp_path, epochs=2, dataset="fashion-mnist", name="f", schedule="none", batch_size=32))
    assert result.final_test_acc > 0.5
