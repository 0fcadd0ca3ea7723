"""Where a training step's CPU time goes, by kind of operation: convolutions, BatchNorm, ReLU, pooling, the rest.

Runs training steps (augmentation, forward, backward, SGD update) of one model on real MNIST batches under the
PyTorch profiler and sums the self CPU time of the operators, grouped into a few families. This is the evidence for
fast20k's design (see models.py): in tiny20k, the memory-bound steps around the first pool cost more than the
convolutions.

    python benchmarks/profile_step.py --model tiny20k
"""

from __future__ import annotations

import sys
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from tinymnist.augment import random_affine
from tinymnist.cli import OneLineParser
from tinymnist.config import TrainConfig
from tinymnist.data import NORMALIZATION
from tinymnist.errors import TinyMnistError
from tinymnist.models import MODELS, build_model
from tinymnist.rundir import cpu_name
from tinymnist.train import prepare_data

# Operator name fragments -> family (first match wins). Max-pool's backward writes its gradient into a zeroed
# full-size tensor: that zero-fill shows up as aten::fill_.
FAMILIES = [("convolution", "convolution"), ("batch_norm", "BatchNorm"), ("threshold_backward", "ReLU"),
            ("clamp_min", "ReLU"), ("relu", "ReLU"), ("max_pool", "max-pool"), ("fill_", "max-pool"),
            ("grid_sampler", "augmentation"), ("affine_grid", "augmentation"), ("bmm", "augmentation")]


def family(op: str) -> str:
    return next((name for key, name in FAMILIES if key in op), "other")


def main() -> None:
    p = OneLineParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--model", default="tiny20k", choices=list(MODELS), help="model to profile (default tiny20k)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    p.add_argument("--steps", type=int, default=30, help="profiled steps, after 5 warm-up steps (default 30)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    args = p.parse_args()
    for flag, value, low in (("--batch-size", args.batch_size, 2), ("--steps", args.steps, 1),
                             ("--threads", args.threads, 0)):
        if value < low:
            sys.exit(f"error: {flag} must be at least {low}, got {value}")
    try:
        data = prepare_data(TrainConfig())
    except TinyMnistError as e:
        sys.exit(f"error: {e}")
    if args.batch_size * (args.steps + 5) > len(data.train_y):
        sys.exit("error: --batch-size x (--steps + 5) is more than the 60,000 training images")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.model).to(memory_format=torch.channels_last)  # as the training loop runs it
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    fill = -NORMALIZATION["mnist"][0] / NORMALIZATION["mnist"][1]

    def step(k: int) -> None:
        i = k * args.batch_size
        x = random_affine(data.train_x[i:i + args.batch_size], 10.0, 0.1, fill=fill)
        loss = F.cross_entropy(model(x), data.train_y[i:i + args.batch_size])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for k in range(5):
        step(k)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for k in range(5, 5 + args.steps):
            step(k)
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            totals[family(event.key)] += event.self_cpu_time_total
    whole = sum(totals.values())
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); {args.model}, "
          f"batch {args.batch_size}, {args.steps} profiled steps; self CPU time of aten operators by family")
    for name, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<14}{100 * t / whole:6.1f}%   {t / 1e3 / args.steps:7.2f} ms per step")


if __name__ == "__main__":
    main()
