"""Train one config over several seeds, resumably, and print per-seed final-epoch test accuracy + mean ± std.

A plain loop (the experiment runner, `tinymnist experiment`, does the same with parallel jobs and tables):
finished seeds (summary.json present) are reused, interrupted ones resume from their checkpoint.

    python benchmarks/seeds.py --config benchmarks/configs/tiny20k.toml --seeds 0 1 2 3 4 --out runs/zoo
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from tinymnist.cli import OneLineParser
from tinymnist.config import TrainConfig, comparable, config_from_dict, differences, load_toml
from tinymnist.errors import TinyMnistError
from tinymnist.rundir import CHECKPOINT, CONFIG, SUMMARY, cpu_name, read_config
from tinymnist.train import train


def main() -> None:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="TOML file with the training options")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default="runs/zoo", help="parent folder of the run directories")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0 = torch's default)")
    args = p.parse_args()
    if args.threads < 0:
        sys.exit(f"error: --threads must not be negative, got {args.threads}")
    if len(set(args.seeds)) < len(args.seeds):
        sys.exit(f"error: --seeds repeats a seed ({' '.join(map(str, args.seeds))}); each counts once in the mean")
    try:
        base = config_from_dict(load_toml(args.config), TrainConfig(threads=args.threads), source=args.config)
        base.validate(lambda option: f"{args.config}: option '{option}'")
        for seed in args.seeds:  # every seed, and any earlier run it would reuse, is checked before one trains
            wanted = base.replace(seed=seed)
            wanted.validate(lambda option: "--seeds")
            existing = Path(args.out) / f"{Path(args.config).stem}-s{seed}"
            if (existing / CONFIG).exists():
                saved, _ = read_config(existing)
                if comparable(saved) != comparable(wanted):
                    raise TinyMnistError(f"{existing} exists with other options ({differences(saved, wanted)}); "
                                         "use another --out or remove it")
        run(args, base)
    except TinyMnistError as e:
        sys.exit(f"error: {e}")


def run(args, base: TrainConfig) -> None:
    if base.threads:  # from --threads or the config file: what every run will use
        torch.set_num_threads(base.threads)
    stem = Path(args.config).stem
    print(f"{stem}: {base.model}, {base.epochs} epochs; CPU {cpu_name()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}", flush=True)
    rows = []
    for seed in args.seeds:
        cfg = base.replace(seed=seed, runs_root=args.out, name=f"{stem}-s{seed}")
        run_dir = Path(args.out) / cfg.name
        if not (run_dir / SUMMARY).exists():
            t = time.perf_counter()
            train(cfg, resume=(run_dir / CHECKPOINT).exists(),
                  on_epoch=lambda m, s=seed: print(f"  seed {s} epoch {m['epoch']:>2} test {100 * m['test_acc']:.2f}%"
                                                   f" {m['seconds']:.1f}s", flush=True))
            print(f"  seed {seed} done in {time.perf_counter() - t:.0f}s (with data loading and report)", flush=True)
        summary = json.loads((run_dir / SUMMARY).read_text())
        rows.append(summary)
        print(f"seed {seed}: final test {100 * summary['final_test_acc']:.2f}%  ({summary['wall_seconds']:.0f} s "
              "training + evaluation)",
              flush=True)
    accs = [100 * r["final_test_acc"] for r in rows]
    spread = f" ± {statistics.stdev(accs):.2f}% (sample std)" if len(accs) > 1 else "% (one seed: no spread)"
    print(f"{stem}: {rows[0]['params']:,} params, {base.epochs} epochs, seeds {args.seeds}: "
          f"final test acc {statistics.mean(accs):.2f}{spread}, min {min(accs):.2f}%, "
          f"per seed {', '.join(f'{a:.2f}' for a in accs)}; mean wall "
          f"{statistics.mean(r['wall_seconds'] for r in rows):.0f} s")


if __name__ == "__main__":
    main()
