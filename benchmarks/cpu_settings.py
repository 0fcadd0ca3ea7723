"""CPU settings of the training loop, measured side by side in one run: the memory layout of the model
(channels_last, which train.py uses, against PyTorch's default contiguous NCHW), the number of torch threads, and
with --bf16 also bfloat16 autocast (`tinymnist train --bf16`; channels_last).

Every combination trains its own copy of the same model on the same real MNIST batches (augmentation, forward,
backward, SGD update); they take turns within each round so that machine noise hits them alike, and the median
images per second over the rounds is reported, relative to the training loop's own setting (channels_last with
the most threads asked for).

    python benchmarks/cpu_settings.py --model fast20k --threads 1 2 --bf16
"""

from __future__ import annotations

import copy
import statistics
import sys

import torch
from model_speed import images_per_second, training_batches  # benchmarks/ is on sys.path when run

from tinymnist.cli import OneLineParser
from tinymnist.models import MODELS, build_model
from tinymnist.rundir import cpu_name

LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
# (layout, threads, precision); the precision is float32 unless --bf16 adds bfloat16 rows
Setting = tuple[str, int, str]


def main() -> None:
    p = OneLineParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--model", default="fast20k", choices=list(MODELS), metavar="MODEL",
                   help=f"model to train ({', '.join(MODELS)}; default: fast20k)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], metavar="N",
                   help="torch thread counts to compare (default: 1 2)")
    p.add_argument("--bf16", action="store_true", help="also time bfloat16 autocast (channels_last)")
    p.add_argument("--batch-size", type=int, default=128, help="images per training step (default 128)")
    p.add_argument("--steps", type=int, default=40, help="training steps per setting per round (default 40)")
    p.add_argument("--rounds", type=int, default=7, help="rounds; the first is a warm-up and not counted (default 7)")
    p.add_argument("--data-dir", help="folder with the MNIST files (default: the usual search, see README)")
    args = p.parse_args()
    for flag, value, low in (("--batch-size", args.batch_size, 2), ("--steps", args.steps, 1),
                             ("--rounds", args.rounds, 2), ("--threads", min(args.threads), 1)):
        if value < low:
            sys.exit(f"error: {flag} must be at least {low}, got {value}")
    x_all, y_all, fill = training_batches(args.data_dir, args.batch_size, args.steps)
    torch.manual_seed(0)
    base = build_model(args.model)
    threads = sorted(set(args.threads), reverse=True)
    settings: list[Setting] = []  # the training loop's own setting first
    for t in threads:
        settings += [(layout, t, "float32") for layout in LAYOUTS]
        settings += [("channels_last", t, "bfloat16")] if args.bf16 else []
    models = {s: copy.deepcopy(base).to(memory_format=LAYOUTS[s[0]]) for s in settings}
    optims = {s: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for s, m in models.items()}
    speed: dict[Setting, list[float]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for s in settings:
            torch.set_num_threads(s[1])
            speed[s].append(images_per_second(models[s], optims[s], x_all, y_all, args.batch_size, fill,
                                              bf16=s[2] == "bfloat16"))
    print(f"CPU: {cpu_name()}, {torch.get_num_interop_threads()} interop thread(s), torch {torch.__version__}; "
          f"{args.model}, batch {args.batch_size}, {args.steps} steps x {args.rounds - 1} rounds (+1 warm-up)")
    print(f"{'layout':<15}{'threads':>8}{'precision':>10}{'images/s':>10}{'60k-image epoch':>17}{'vs first':>10}")
    first = statistics.median(speed[settings[0]][1:])
    for setting in settings:
        s = statistics.median(speed[setting][1:])
        layout, t, precision = setting
        print(f"{layout:<15}{t:>8}{precision:>10}{s:>10,.0f}{60000 / s:>15.1f} s{s / first:>9.2f}x")


if __name__ == "__main__":
    main()
