"""Time to a target test accuracy on this CPU, for a config and for the seed model with reference settings,
side by side in one run.

Wall time includes data preparation and the per-epoch test evaluation, as a user would experience it. The test
set is only *watched* here (we stop at the first epoch that reaches the target); nothing is selected on it.

    python benchmarks/time_to_accuracy.py --config benchmarks/configs/fast20k_994.toml --target 0.994 --repeats 3

--repeats N times the candidate N times (same seed: machine noise is what varies) and reports each and the median;
the reference runs once, after the candidates.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import torch

from tinymnist.cli import OneLineParser
from tinymnist.config import TrainConfig, config_from_dict, load_toml
from tinymnist.errors import TinyMnistError
from tinymnist.models import build_model, check_budget
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
    epoch_end: dict = {}

    def watch(m: dict) -> bool:
        # Time at the end of each epoch: a run that never reaches the target is timed to its last epoch, without
        # the figures a finished run draws afterwards.
        epoch_end["seconds"] = time.perf_counter() - t0
        if m["test_acc"] >= target and not hit:
            hit.update(epoch=m["epoch"], seconds=time.perf_counter() - t0, acc=m["test_acc"])
            return True
        return False

    result = train(config.replace(runs_root=root), data=data, on_epoch=watch)
    last = result.history[-1]
    return {"reached": bool(hit), "epoch": hit.get("epoch", last["epoch"]),
            "seconds": hit.get("seconds", epoch_end["seconds"]), "acc": hit.get("acc", last["test_acc"]),
            "params": result.params}


def main() -> None:
    p = OneLineParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--config", help="TOML file for the config under test (default: the default TrainConfig)")
    p.add_argument("--target", type=float, default=0.994, help="test accuracy to reach, in (0, 1] (default 0.994)")
    p.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for every run (default: the config's, else torch's own)")
    p.add_argument("--skip-reference", action="store_true", help="do not time the seed model (quicker)")
    p.add_argument("--repeats", type=int, default=1, help="time the candidate this many times (default 1)")
    args = p.parse_args()
    if not 0 < args.target <= 1:
        sys.exit(f"error: --target is a test accuracy in (0, 1], got {args.target}")
    if args.repeats < 1:
        sys.exit(f"error: --repeats must be at least 1, got {args.repeats}")
    if args.threads < 0:
        sys.exit(f"error: --threads must not be negative, got {args.threads}")
    try:
        config = TrainConfig(seed=args.seed)
        config.validate()  # --seed
        if args.config:
            config = config_from_dict(load_toml(args.config), config, source=args.config)
            config.validate(lambda option: f"{args.config}: option '{option}'")
        config = config.replace(threads=args.threads or config.threads)
        # The reference trains on the same data as the candidate (dataset, subsets, folder) with the same threads.
        same = {k: getattr(config, k) for k in ("dataset", "data_dir", "train_subset", "test_subset", "threads")}
        reference = config_from_dict(REFERENCE, TrainConfig(seed=args.seed, name="reference", **same))
        # Refuse an over-budget model or missing data now, not after minutes of timing.
        for cfg in [config] + ([] if args.skip_reference else [reference]):
            check_budget(build_model(cfg.model, cfg.dropout), cfg.model, cfg.param_budget)
        prepare_data(config)
    except TinyMnistError as e:
        where = f"{args.config}: " if args.config and not str(e).startswith(args.config) else ""
        sys.exit(f"error: {where}{e}")
    if config.threads:
        torch.set_num_threads(config.threads)
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}; target "
          f"{100 * args.target:.2f}% test accuracy; seed {args.seed}")
    label = args.config or "default config"
    runs = [(label, config.replace(name=f"candidate-{i}")) for i in range(args.repeats)]
    if not args.skip_reference:
        runs.append(("seed model, reference settings", reference))
    candidate_seconds, reference_result = [], None
    with tempfile.TemporaryDirectory() as root:
        for label, cfg in runs:
            try:
                r = time_to(cfg, args.target, root)
            except TinyMnistError as e:
                sys.exit(f"error: {label}: {e}")
            status = (f"reached ({100 * r['acc']:.2f}%)" if r["reached"] else
                      f"NOT reached in {cfg.epochs} epoch{'s' if cfg.epochs > 1 else ''} "
                      f"(last {100 * r['acc']:.2f}%)")
            print(f"{label:<38} {cfg.model:<8} {r['params']:>6,} params  {r['seconds']:7.1f} s  "
                  f"epoch {r['epoch']:>2}  {status}", flush=True)
            if cfg.name == "reference":
                reference_result = r
            elif r["reached"]:
                candidate_seconds.append(r["seconds"])
    if args.repeats > 1 and not candidate_seconds:
        print(f"candidate did not reach the target in any of its {args.repeats} runs")
    elif args.repeats > 1:
        times = ", ".join(f"{t:.1f}" for t in candidate_seconds)
        print(f"candidate reached the target in {len(candidate_seconds)} of {args.repeats} runs; seconds: {times}"
              + (f"; median {statistics.median(candidate_seconds):.1f} s" if candidate_seconds else ""))
    all_reached = candidate_seconds and len(candidate_seconds) == args.repeats
    if all_reached and reference_result and reference_result["reached"]:
        median = statistics.median(candidate_seconds)
        ratio = reference_result["seconds"] / median
        print(f"reference / candidate wall time: {ratio:.1f}x" + (" (the candidate is faster)" if ratio > 1 else
                                                                   " (the candidate is NOT faster)"))


if __name__ == "__main__":
    main()
