"""The one real-data check of the whole recipe: one full epoch of the default model on all 60,000 images."""

import pytest

from tinymnist.config import TrainConfig
from tinymnist.train import train


@pytest.mark.slow
def test_one_epoch_of_default_model_reaches_98_percent(tmp_path, mnist_dir):
    result = train(TrainConfig(epochs=1, runs_root=str(tmp_path), name="one-epoch"))
    assert result.params < 20_000
    assert result.final_test_acc >= 0.98, f"one epoch reached only {result.final_test_acc:.4f}"
