"""Epoch time with and without augmentation, side by side in one run.

For each model, train one epoch on the full training set (plus the per-epoch test evaluation) with augmentation
off and on, alternating, and report the ratio. Run: `python benchmarks/epoch_time.py [--models seed tiny20k]`.
Target (foundation issue): augmentation costs <= 30% over the no-augmentation epoch.
"""

from __future__ import annotations

import statistics
import sys
import tempfile

import torch

from tinymnist.cli import OneLineParser
from tinymnist.config import TrainConfig
from tinymnist.errors import TinyMnistError
from tinymnist.models import MODELS
from tinymnist.rundir import cpu_name
from tinymnist.train import prepare_data, train


def one_epoch(model: str, augment: bool, data, root: str, tag: str) -> float:
    """Seconds of one epoch (training + test evaluation) as the loop timed it: the figures a finished run
    draws afterwards are left out, they would add the same few seconds to both settings and hide the ratio."""
    cfg = TrainConfig(model=model, epochs=1, runs_root=root, name=f"{model}-{tag}",
                      rotate=10.0 if augment else 0.0, translate=0.1 if augment else 0.0)
    return train(cfg, data=data).history[0]["seconds"]


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny20k", "seed"], choices=list(MODELS), metavar="MODEL",
                        help=f"models to time ({', '.join(MODELS)}; default: tiny20k seed)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per setting; the median is reported")
    args = parser.parse_args()
    if args.repeats < 1:
        sys.exit(f"error: --repeats must be at least 1, got {args.repeats}")
    try:
        data = prepare_data(TrainConfig())
    except TinyMnistError as e:
        sys.exit(f"error: {e}")
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{data.info['train_images']} training images, {data.info['test_images']} test images per epoch")
    print(f"{'model':<10}{'no aug (s)':>12}{'aug (s)':>10}{'aug cost':>10}")
    with tempfile.TemporaryDirectory() as root:
        for model in args.models:
            plain, aug = [], []
            for r in range(args.repeats):  # alternate so that machine noise hits both settings alike
                plain.append(one_epoch(model, False, data, root, f"plain{r}"))
                aug.append(one_epoch(model, True, data, root, f"aug{r}"))
            p, a = statistics.median(plain), statistics.median(aug)
            print(f"{model:<10}{p:>12.1f}{a:>10.1f}{100 * (a / p - 1):>9.0f}%", flush=True)


if __name__ == "__main__":
    main()
