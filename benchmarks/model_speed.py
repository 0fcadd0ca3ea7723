"""Training throughput per model, side by side in one run: images per second of a full training step
(augmentation, forward, backward, SGD update) on real MNIST batches, the models taking turns so that machine
noise hits them alike; the median of the rounds is reported, with each model's speed relative to the first.

    python benchmarks/model_speed.py --models tiny20k fast20k seed --batch-size 128
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F

from tinymnist.augment import random_affine
from tinymnist.cli import OneLineParser
from tinymnist.config import TrainConfig
from tinymnist.data import NORMALIZATION
from tinymnist.errors import TinyMnistError
from tinymnist.models import MODELS, build_model, count_parameters
from tinymnist.rundir import cpu_name
from tinymnist.train import prepare_data


def training_batches(data_dir: str | None, batch_size: int, steps: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The first batch_size x steps real MNIST training images (normalised), their labels, and the background
    value augmentation fills in; a one-line exit if the data is missing or too short."""
    try:
        data = prepare_data(TrainConfig(data_dir=data_dir))
    except TinyMnistError as e:
        sys.exit(f"error: {e}")
    n = batch_size * steps
    if n > len(data.train_y):
        sys.exit(f"error: --batch-size x --steps = {n:,} images per round, more than the {len(data.train_y):,} "
                 "training images")
    return data.train_x[:n], data.train_y[:n], -NORMALIZATION["mnist"][0] / NORMALIZATION["mnist"][1]


def images_per_second(model: torch.nn.Module, optim: torch.optim.Optimizer, x_all: torch.Tensor,
                      y_all: torch.Tensor, batch_size: int, fill: float, bf16: bool = False) -> float:
    """Train on x_all in batches (augment, forward, backward, update) and return the images per second;
    bf16: the forward pass under bfloat16 autocast, as `--bf16` trains."""
    t0 = time.perf_counter()
    for k in range(0, len(y_all), batch_size):
        x, y = x_all[k:k + batch_size], y_all[k:k + batch_size]
        x = random_affine(x, 10.0, 0.1, fill=fill)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    return len(y_all) / (time.perf_counter() - t0)


def main() -> None:
    p = OneLineParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--models", nargs="+", default=["tiny20k", "fast20k", "seed"], choices=list(MODELS),
                   metavar="MODEL", help=f"models to compare, the first is the baseline ({', '.join(MODELS)}; "
                                         "default: tiny20k fast20k seed)")
    p.add_argument("--batch-size", type=int, default=128, help="images per training step (default 128)")
    p.add_argument("--steps", type=int, default=40, help="training steps per model per round (default 40)")
    p.add_argument("--rounds", type=int, default=7, help="rounds; the first is a warm-up and not counted (default 7)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    p.add_argument("--data-dir", help="folder with the MNIST files (default: the usual search, see README)")
    args = p.parse_args()
    for flag, value, low in (("--batch-size", args.batch_size, 2), ("--steps", args.steps, 1),
                             ("--rounds", args.rounds, 2), ("--threads", args.threads, 0)):
        if value < low:
            sys.exit(f"error: {flag} must be at least {low}, got {value}")
    x_all, y_all, fill = training_batches(args.data_dir, args.batch_size, args.steps)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # channels_last, as the training loop runs them
    models = {m: build_model(m).to(memory_format=torch.channels_last) for m in args.models}
    optims = {m: torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) for m, model in models.items()}
    speed: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            speed[name].append(images_per_second(model, optims[name], x_all, y_all, args.batch_size, fill))
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); batch "
          f"{args.batch_size}, {args.steps} steps x {args.rounds - 1} rounds (+1 warm-up) per model")
    print(f"{'model':<10}{'params':>8}{'images/s':>10}{'60k-image epoch':>17}{'vs ' + args.models[0]:>14}")
    first = statistics.median(speed[args.models[0]][1:])
    for name, model in models.items():
        s = statistics.median(speed[name][1:])
        print(f"{name:<10}{count_parameters(model):>8,}{s:>10,.0f}{60000 / s:>15.1f} s{s / first:>13.2f}x")


if __name__ == "__main__":
    main()
