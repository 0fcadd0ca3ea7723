"""Time to a target test accuracy on this CPU, for a config and for the seed model with reference settings,
side by side in one run.

Wall time includes data preparation and the per-epoch test evaluation, as a user would experience it. The test
set is only *watched* here (we stop at the first epoch that reaches the target); nothing is selected on it.

    python benchmarks/time_to_accuracy.py --config benchmarks/configs/fast20k_994.toml --target 0.994 --repeats 3

--repeats N times the candidate N times (same seed: machine noise is what varies) and reports each and the median;
the reference runs once, after the candidates.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch

from tinymnist.config import TrainConfig, config_from_dict, load_toml
from tinymnist.errors import TinyMnistError
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
    p.add_argument("--repeats", type=int, default=1, help="time the candidate this many times (default 1)")
    args = p.parse_args()
    if args.repeats < 1 or not 0 < args.target <= 1:
        p.error("--repeats must be >= 1 and --target in (0, 1]")
    config = TrainConfig(seed=args.seed)
    try:
        if args.config:
            config = config_from_dict(load_toml(args.config), config, source=args.config)
        config.validate(lambda option: f"{args.config}: option '{option}'")
    except TinyMnistError as e:
        sys.exit(f"error: {e}")
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; target "
          f"{100 * args.target:.2f}% test accuracy; seed {args.seed}")
    label = args.config or "default config"
    runs = [(label, config.replace(name=f"candidate-{i}")) for i in range(args.repeats)]
    if not args.skip_reference:
        runs.append(("seed model, reference settings",
                     config_from_dict(REFERENCE, TrainConfig(seed=args.seed, name="reference"))))
    candidate_seconds, reference = [], None
    with tempfile.TemporaryDirectory() as root:
        for label, cfg in runs:
            r = time_to(cfg, args.target, root)
            status = (f"reached ({100 * r['acc']:.2f}%)" if r["reached"]
                      else f"NOT reached in {cfg.epochs} epochs (last {100 * r['acc']:.2f}%)")
            print(f"{label:<38} {cfg.model:<8} {r['params']:>6,} params  {r['seconds']:7.1f} s  "
                  f"epoch {r['epoch']:>2}  {status}", flush=True)
            if cfg.name == "reference":
                reference = r
            elif r["reached"]:
                candidate_seconds.append(r["seconds"])
    if args.repeats > 1:
        times = ", ".join(f"{t:.1f}" for t in candidate_seconds)
        print(f"candidate reached the target in {len(candidate_seconds)} of {args.repeats} runs; seconds: {times}"
              + (f"; median {statistics.median(candidate_seconds):.1f} s" if candidate_seconds else ""))
    if candidate_seconds and len(candidate_seconds) == args.repeats and reference and reference["reached"]:
        median = statistics.median(candidate_seconds)
        print(f"speed-up: {reference['seconds'] / median:.1f}x less wall time than the reference")


if __name__ == "__main__":
    main()
