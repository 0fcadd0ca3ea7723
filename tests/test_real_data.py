"""Real-data checks of the whole recipe: one full epoch of the default model and of the fast config on all 60,000
images, and a short sanity run of each smaller zoo model."""

from pathlib import Path

import pytest

from tinymnist.config import TrainConfig, config_from_dict, load_toml
from tinymnist.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"


@pytest.mark.slow
def test_one_epoch_of_default_model_reaches_98_percent(tmp_path, mnist_dir):
    result = train(TrainConfig(epochs=1, runs_root=str(tmp_path), name="one-epoch"))
    assert result.params < 20_000
    assert result.final_test_acc >= 0.98, f"one epoch reached only {result.final_test_acc:.4f}"


@pytest.mark.slow
def test_fast_config_reaches_99_percent_in_one_epoch(tmp_path, mnist_dir):
    # The time-to-99.0% config (benchmarks/configs/fast20k_990.toml): seed 0 reached 99.0% in its one epoch in
    # RESULTS.md; a small margin below that allows for another thread count or CPU summing in another order.
    config = config_from_dict(load_toml(CONFIGS / "fast20k_990.toml"), TrainConfig(runs_root=str(tmp_path)))
    result = train(config.replace(name="fast"))
    assert result.params < 20_000 and len(result.history) == 1
    assert result.final_test_acc >= 0.988, f"one epoch reached only {result.final_test_acc:.4f}"


@pytest.mark.parametrize("model,epochs,floor", [("tiny8k", 3, 0.95), ("tiny1k", 2, 0.75)])
def test_small_zoo_models_learn_real_digits(tmp_path, mnist_dir, model, epochs, floor):
    # 10,000 real training images, 2,000 real test images: a few seconds, far from the models' full accuracy,
    # but well above what a broken model or loop would reach (10% is chance).
    cfg = TrainConfig(model=model, epochs=epochs, train_subset=10_000, test_subset=2_000, threads=1,
                      runs_root=str(tmp_path), name=model)
    assert train(cfg).final_test_acc >= floor
