"""Does `torch.compile` pay on this CPU? Times the compilation (the first two training steps of a compiled model)
and then training steps of the eager and the compiled model, taking turns on the same real MNIST batches; the median
of the rounds is reported. The time-to-accuracy targets are 10 s and 45 s, so the compile time counts in full.

    python benchmarks/compile_speed.py --model fast20k --batch-size 64
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn as nn

from tinymnist.cli import OneLineParser
from tinymnist.config import TrainConfig
from tinymnist.errors import TinyMnistError
from tinymnist.models import MODELS, build_model
from tinymnist.rundir import cpu_name
from tinymnist.train import make_optimizer, prepare_data


def main() -> None:
    p = OneLineParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--model", default="fast20k", choices=list(MODELS), help="model to train (default fast20k)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--steps", type=int, default=50, help="training steps per model per round (default 50)")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args()
    for flag, value, low in (("--batch-size", args.batch_size, 2), ("--steps", args.steps, 1),
                             ("--rounds", args.rounds, 1), ("--threads", args.threads, 1)):
        if value < low:
            sys.exit(f"error: {flag} must be at least {low}, got {value}")
    try:
        data = prepare_data(TrainConfig())
    except TinyMnistError as e:
        sys.exit(f"error: {e}")
    n = args.batch_size * args.steps
    if n > len(data.train_y):
        sys.exit(f"error: --batch-size x --steps = {n:,} images, more than the {len(data.train_y):,} training images")
    torch.set_num_threads(args.threads)
    x_all, y_all = data.train_x[:n], data.train_y[:n]
    criterion = nn.CrossEntropyLoss()

    def stepper(model: nn.Module, forward: nn.Module):
        optimizer = make_optimizer(model, TrainConfig(model=args.model, lr=0.05))

        def run(k: int) -> None:
            x = x_all[k * args.batch_size:(k + 1) * args.batch_size]
            loss = criterion(forward(x), y_all[k * args.batch_size:(k + 1) * args.batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return run

    torch.manual_seed(0)
    eager = build_model(args.model).to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    plain = build_model(args.model).to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    compiled = stepper(plain, torch.compile(plain))
    compiled(0)
    compiled(1)
    compile_seconds = time.perf_counter() - t0
    steps = {"eager": stepper(eager, eager), "compiled": compiled}
    steps["eager"](0)  # warm-up: oneDNN builds its kernels on the first call
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.rounds):
        for name, run in steps.items():
            t0 = time.perf_counter()
            for k in range(args.steps):
                run(k)
            times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {args.threads} torch thread(s); {args.model}, batch "
          f"{args.batch_size}, {args.steps} steps x {args.rounds} rounds")
    print(f"compiling (first two steps of the compiled model): {compile_seconds:.1f} s")
    eager_ms = statistics.median(times["eager"])
    for name, t in times.items():
        m = statistics.median(t)
        print(f"{name:<9}{m:7.2f} ms/step  {eager_ms / m:5.2f}x  (rounds: {', '.join(f'{v:.2f}' for v in t)})")


if __name__ == "__main__":
    main()
