"""Time to a target test accuracy on this CPU, for a config and for the seed model with reference settings,
side by side in one run.

Wall time includes data preparation and the per-epoch test evaluation, as a user would experience it. The test
set is only *watched* here (we stop at the first epoch that reaches the target); nothing is selected on it.

    python benchmarks/time_to_accuracy.py --config benchmarks/configs/fast.toml --target 0.994
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from tinymnist.config import TrainConfig, config_from_dict, load_toml
from tinymnist.rundir import cpu_name
from tinymnist.train import prepare_data, train

# The original project's recipe as we reconstruct it: its 19,349-parameter Net, SGD with momentum 0.9 at lr 0.01,
# step decay, light rotation/translation, batch 128, 20 epochs.
REFERENCE = dict(model="seed", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=0.0, schedule="step",
                 step_size=8, rotate=7.0, translate=0.1, batch_size=128, epochs=20, dropout=0.3)


def time_to(config: TrainConfig, target: float, root: str) -> dict:
    """Train until test accuracy >= target (or the config's last epoch); wall seconds include data loading."""
    t0 = time.perf_counter()
    data = prepare_data(config)
    hit: dict = {}

    def watch(m: dict) -> bool:
        if m["test_acc"] >= target and not hit:
            hit.update(epoch=m["epoch"], seconds=time.perf_counter() - t0, acc=m["test_acc"])
            return True
        return False

    result = train(config.replace(runs_root=root), data=data, on_epoch=watch)
    last = result.history[-1]
    return {"reached": bool(hit), "epoch": hit.get("epoch", last["epoch"]),
            "seconds": hit.get("seconds", time.perf_counter() - t0), "acc": hit.get("acc", last["test_acc"]),
            "params": result.params}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="TOML file for the config under test (default: the default TrainConfig)")
    p.add_argument("--target", type=float, default=0.994, help="test accuracy to reach (default 0.994)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-reference", action="store_true", help="do not time the seed model (quicker)")
    args = p.parse_args()
    config = TrainConfig(seed=args.seed)
    if args.config:
        config = config_from_dict(load_toml(args.config), config, source=args.config)
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; target "
          f"{100 * args.target:.2f}% test accuracy; seed {args.seed}")
    rows = []
    with tempfile.TemporaryDirectory() as root:
        runs = [(args.config or "default config", config.replace(name="candidate"))]
        if not args.skip_reference:
            runs.append(("seed model, reference settings",
                         config_from_dict(REFERENCE, TrainConfig(seed=args.seed, name="reference"))))
        for label, cfg in runs:
            r = time_to(cfg, args.target, root)
            rows.append((label, cfg, r))
            status = "reached" if r["reached"] else f"NOT reached in {cfg.epochs} epochs (last {100 * r['acc']:.2f}%)"
            print(f"{label:<34} {cfg.model:<8} {r['params']:>6,} params  {r['seconds']:7.1f} s  "
                  f"epoch {r['epoch']:>2}  {status}", flush=True)
    if len(rows) == 2 and rows[0][2]["reached"] and rows[1][2]["reached"]:
        print(f"speed-up: {rows[1][2]['seconds'] / rows[0][2]['seconds']:.1f}x less wall time than the reference")


if __name__ == "__main__":
    main()
