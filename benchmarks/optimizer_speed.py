"""Time of one optimizer step (SGD with Nesterov momentum and weight decay, in the two parameter groups the
training loop uses) for each of PyTorch's implementations, side by side in one run: the per-parameter loop
(PyTorch's default on a CPU and what `make_optimizer` uses), `foreach` (one call per group for each tensor op) and
`fused` (one kernel per group). The implementations take turns; the median of the rounds is reported. Run it on
an idle machine and again beside another busy process to see why `fused` is not used (RESULTS.md).

    python benchmarks/optimizer_speed.py --model fast20k
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from tinymnist.cli import OneLineParser
from tinymnist.config import TrainConfig
from tinymnist.models import MODELS, build_model
from tinymnist.rundir import cpu_name
from tinymnist.train import make_optimizer

KINDS = {"per-parameter": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main() -> None:
    p = OneLineParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--model", default="fast20k", choices=list(MODELS), help="model whose parameters to update")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per round (default 300)")
    p.add_argument("--rounds", type=int, default=7, help="rounds; the first is a warm-up, not counted (default 7)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args()
    for flag, value in (("--steps", args.steps), ("--rounds", args.rounds), ("--threads", args.threads)):
        if value < 1 or (flag == "--rounds" and value < 2):
            sys.exit(f"error: {flag} must be at least {2 if flag == '--rounds' else 1}, got {value}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.model)
    for q in model.parameters():
        q.grad = torch.randn_like(q) * 1e-3
    # The loop's own parameter groups (weight decay on weights only), rebuilt with each implementation.
    groups = make_optimizer(model, TrainConfig(model=args.model)).param_groups
    settings = {k: v for k, v in groups[0].items() if k in ("lr", "momentum", "nesterov")}
    optims = {kind: torch.optim.SGD([{"params": g["params"], "weight_decay": g["weight_decay"]} for g in groups],
                                    **settings, **flags) for kind, flags in KINDS.items()}
    times: dict[str, list[float]] = {k: [] for k in optims}
    for _ in range(args.rounds):
        for kind, opt in optims.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                opt.step()
            times[kind].append((time.perf_counter() - t0) / args.steps * 1e6)
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {args.threads} torch thread(s); {args.model} "
          f"({sum(q.numel() for q in model.parameters()):,} parameters in {len(list(model.parameters()))} tensors), "
          f"{args.steps} steps x {args.rounds - 1} rounds (+1 warm-up)")
    base = statistics.median(times["per-parameter"][1:])
    for kind, t in times.items():
        m = statistics.median(t[1:])
        print(f"{kind:<14}{m:8.0f} µs/step  {base / m:5.2f}x")


if __name__ == "__main__":
    main()
