"""tinymnist: tiny, parameter-budgeted CNNs for MNIST that train fast on a CPU."""

from .config import TrainConfig
from .errors import TinyMnistError
from .train import RunResult, train

__all__ = ["TrainConfig", "TinyMnistError", "RunResult", "train"]
__version__ = "0.1.0"
