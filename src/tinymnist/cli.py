"""Command line: parse flags (and an optional TOML file) into one TrainConfig and call the library.

Every user mistake surfaces as a TinyMnistError, caught once in `main` and printed as one line.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import TinyMnistError

# Each handler takes the parsed args and returns an exit code.
Handler = Callable[[argparse.Namespace], int]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that points at --help, and exit code 2 (argparse's own
    message starts with a usage block that is longer than the mistake)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}%"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m {s:02d}s" if m else f"{seconds:.1f}s"


class Progress:
    """Per-epoch lines on stdout; within an epoch, a bar on stderr when it is a terminal."""

    def __init__(self, epochs: int, stream=None) -> None:
        self.epochs = epochs
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()

    def batch(self, epoch: int, i: int, n: int) -> None:
        if self.live and (i % 20 == 0 or i == n):
            done = int(30 * i / n)
            self.stream.write(f"\r  epoch {epoch}/{self.epochs} [{'#' * done}{'.' * (30 - done)}] {i}/{n}")
            self.stream.flush()

    def epoch(self, m: dict) -> None:
        if self.live:
            self.stream.write("\r" + " " * 70 + "\r")
        val = f"  val acc {_pct(m['val_acc'])}" if m["val_acc"] is not None else ""
        print(
            f"epoch {m['epoch']:>3}/{self.epochs}  lr {m['lr']:.4f}  "
            f"train loss {m['train_loss']:.4f} acc {_pct(m['train_acc'])}  "
            f"test loss {m['test_loss']:.4f} acc {_pct(m['test_acc'])}{val}  {m['seconds']:5.1f}s",
            flush=True,
        )


# ------------------------------------------------------------------------------------------------------- train
def add_train_options(p: argparse.ArgumentParser) -> None:
    """Training options; defaults are SUPPRESSed so we can tell a flag the user gave from a default
    (flags win over the config file, the config file over built-in defaults)."""
    from .augment import PRESETS
    from .config import OPTIMIZERS, SCHEDULES, TrainConfig
    from .data import DATASETS
    from .models import MODELS

    d = TrainConfig()
    S = argparse.SUPPRESS
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=S, help=f"model to train: {', '.join(MODELS)} (default: {d.model})")
    g.add_argument("--dataset", default=S, help=f"{' or '.join(DATASETS)} (default: {d.dataset})")
    g.add_argument("--data-dir", default=S, help="folder with the four IDX files (default: search, see README)")
    g.add_argument("--param-budget", type=int, default=S,
                   help=f"refuse models with more trainable parameters than this (default: {d.param_budget})")
    g.add_argument("--dropout", type=float, default=S, help="dropout rate (default: the model's own)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=S, help=f"passes over the training set (default: {d.epochs})")
    g.add_argument("--batch-size", type=int, default=S, help=f"images per step (default: {d.batch_size})")
    g.add_argument("--optimizer", default=S, help=f"{', '.join(OPTIMIZERS)} (default: {d.optimizer})")
    g.add_argument("--lr", type=float, default=S,
                   help=f"learning rate; the peak rate for onecycle (default: {d.lr})")
    g.add_argument("--momentum", type=float, default=S,
                   help=f"SGD momentum, or beta1 for adam/adamw; onecycle moves it within ±0.05 of this "
                        f"(default: {d.momentum})")
    g.add_argument("--weight-decay", type=float, default=S,
                   help=f"L2 penalty on conv/linear weights, not on BatchNorm or biases (default: {d.weight_decay})")
    g.add_argument("--label-smoothing", type=float, default=S,
                   help=f"spread this much target probability over the other classes (default: {d.label_smoothing})")
    g.add_argument("--ema", type=float, default=S,
                   help="evaluate and save a moving average of the weights with this decay per step, e.g. 0.999; "
                        f"0 = off (default: {d.ema})")
    g.add_argument("--schedule", default=S,
                   help=f"learning-rate schedule: {', '.join(SCHEDULES)} (default: {d.schedule})")
    g.add_argument("--step-size", type=int, default=S,
                   help="for --schedule step: epochs between x0.1 decays (default: epochs / 3)")
    g.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=S,
                   help="train the forward pass in bfloat16 (autocast): faster on CPUs with bfloat16 units (AMX, "
                        "AVX-512 BF16); no gain expected on others (default: off, float32; --no-bf16 turns it off "
                        "again, e.g. over a config file)")
    g = p.add_argument_group("augmentation (training images only)")
    g.add_argument("--augment", choices=list(PRESETS), default=S,
                   help="preset strength: " + ", ".join(f"{k}=±{v[0]:g}°/±{v[1]:g}" for k, v in PRESETS.items()))
    g.add_argument("--rotate", type=float, default=S, help=f"max rotation in degrees, 0 = off (default: {d.rotate})")
    g.add_argument("--translate", type=float, default=S,
                   help=f"max shift as a fraction of the image side, 0 = off (default: {d.translate})")
    g = p.add_argument_group("data subsets")
    g.add_argument("--val-split", type=int, default=S,
                   help="hold out this many training images as a fixed validation set (default: 0)")
    g.add_argument("--train-subset", type=int, default=S,
                   help="train on the first N training images only (0 = all; default: 0): for quick checks")
    g.add_argument("--test-subset", type=int, default=S,
                   help="evaluate on the first N test images only (0 = all; default: 0)")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=S,
                   help=f"random seed; same seed and --threads, same numbers (default: {d.seed})")
    g.add_argument("--threads", type=int, default=S,
                   help="torch CPU threads, at most the number of cores (default: torch's choice)")
    g.add_argument("--runs-root", default=S, help=f"where run directories go (default: {d.runs_root})")
    g.add_argument("--name", default=S, help="run directory name (default: <model>-<date>-<time>)")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=S,
                   help="also log scalars for TensorBoard (default: off)")


def config_from_args(args: argparse.Namespace):
    """Built-in defaults <- TOML file (--config) <- flags."""
    from .augment import PRESETS
    from .config import FIELD_NAMES, TrainConfig, config_from_dict, load_toml

    config = TrainConfig()
    if getattr(args, "config", None):
        values = dict(load_toml(args.config))
        if "augment" in values:  # the --augment preset, as in grid files: it stands for rotate and translate
            preset = values.pop("augment")
            if preset not in PRESETS:
                raise TinyMnistError(f"{args.config}: option 'augment' must be one of {', '.join(PRESETS)}, "
                                     f"got {preset!r}")
            values.setdefault("rotate", PRESETS[preset][0])
            values.setdefault("translate", PRESETS[preset][1])
        config = config_from_dict(values, config, source=args.config)
    flags = {k: v for k, v in vars(args).items() if k in FIELD_NAMES}
    check_threads(flags.get("threads"))
    if hasattr(args, "augment"):
        rotate, translate = PRESETS[args.augment]
        flags.setdefault("rotate", rotate)
        flags.setdefault("translate", translate)
    config = config_from_dict(flags, config, source="command line")

    def origin(option: str) -> str:  # name the file when a bad value came from it, the flag otherwise
        from_file = getattr(args, "config", None) and option not in flags
        return f"{args.config}: option '{option}'" if from_file else f"--{option.replace('_', '-')}"

    config.validate(origin)
    return config


# The only options that may go with --resume: they say where and how fast, not what is trained.
RESUME_OPTIONS = ("data_dir", "threads")


def _lock_for_resume(run: Path):
    """An exclusive lock on the run for as long as this --resume trains it: two at once would each append every
    epoch to metrics.csv. The lock goes with the process (flock), so a killed run never leaves it stuck."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        return None
    if not run.is_dir():
        return None  # refused later with its reason
    try:
        handle = open(run / ".resume.lock", "a")  # noqa: SIM115 - held open until training ends
    except OSError:
        return None  # an unwritable run is refused later with its reason
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise TinyMnistError(f"{run}: another --resume of this run is training it right now; wait for it to "
                             "end") from None
    return handle


def _restart_note(run: Path) -> str:
    """What --resume will do with a run that has no checkpoint to continue from (rundir.target decides)."""
    from .report import REPORT
    from .rundir import CHECKPOINT, METRICS, SUMMARY

    if (run / CHECKPOINT).is_file() and (run / SUMMARY).is_file() and (run / REPORT).is_file():
        return ": it had finished; its final weights, summary and report are written again from its checkpoint"
    if not run.is_dir() or (run / CHECKPOINT).exists() or (run / SUMMARY).exists():
        return ""  # resumed from its checkpoint, or refused with a reason
    try:
        rows = max(0, len((run / METRICS).read_text().splitlines()) - 1)
    except OSError:
        rows = 0
    if rows:
        return (f": its checkpoint.pt is missing, so its {rows} recorded epoch(s) are trained again from epoch 1 "
                "(the same seed gives the same numbers)")
    return ": no epoch had been saved, so it trains again from epoch 1"


def cmd_train(args: argparse.Namespace) -> int:
    from .rundir import read_config
    from .train import train

    if args.resume:
        from .config import FIELD_NAMES

        # A resumed run continues exactly as configured (that is what makes it equal to an uninterrupted one):
        # an option that would change it is refused rather than silently ignored. Where the data lives and how
        # many threads to use do not change what is computed.
        changed = [f"--{k.replace('_', '-')}" for k in vars(args) if k in FIELD_NAMES and k not in RESUME_OPTIONS]
        if getattr(args, "config", None):
            changed.insert(0, "--config")
        if changed:
            raise TinyMnistError(f"--resume continues a run with its saved options; {', '.join(changed)} cannot "
                                 "change it (start a new run with --name instead)")
        config, _ = read_config(args.resume)
        run = Path(args.resume)
        config.runs_root, config.name = str(run.parent), run.name
        for k in RESUME_OPTIONS:
            if k in vars(args):
                setattr(config, k, getattr(args, k))
        check_threads(getattr(args, "threads", None))
        print(f"resuming {run}{_restart_note(run)}")
    else:
        config = config_from_args(args)
        from .rundir import target

        target(config, resume=False)  # a run directory that would be refused is reported before anything else
    from .data import locate

    _, source = locate(config.dataset, config.data_dir)
    print(f"data: {config.dataset} from {source}")
    if not args.resume:
        from .models import build_model, check_budget

        aug = f"rotate ±{config.rotate:g}°, shift ±{config.translate:g}" if config.rotate or config.translate \
            else "no augmentation"
        extras = "".join(f", {name} {value}" for name, value in
                         (("label smoothing", config.label_smoothing), ("EMA", config.ema)) if value)
        if config.momentum != 0.9:
            extras += f", {'momentum' if config.optimizer == 'sgd' else 'beta1'} {config.momentum:g}"
        extras += ", bfloat16 forward pass" if config.bf16 else ""
        params = check_budget(build_model(config.model, config.dropout), config.model, config.param_budget)
        print(f"training {config.model} ({params:,} params) "
              f"for {_plural(config.epochs, 'epoch')}: {config.optimizer} lr {config.lr:g}, "
              f"{config.schedule} schedule, batch {config.batch_size}, {aug}{extras}, seed {config.seed}")
    progress = Progress(config.epochs)
    lock = _lock_for_resume(Path(args.resume)) if args.resume else None
    try:
        result = train(config, resume=bool(args.resume), on_epoch=progress.epoch, on_batch=progress.batch)
    except KeyboardInterrupt:
        run = Path(config.runs_root) / str(config.name)
        if (run / "config.json").is_file():
            print(f"\ninterrupted; continue with: tinymnist train --resume {run}", file=sys.stderr)
        else:  # stopped before the run directory was written: there is nothing to resume
            print("\ninterrupted before training started; run the same command again", file=sys.stderr)
        return 130
    finally:
        if lock is not None:
            lock.close()  # releases the lock
    best = result.best_epoch
    last = result.history[-1]
    print()
    print(f"model              {config.model} ({result.params:,} trainable parameters)")
    print(f"final test acc     {100 * last['test_acc']:.2f}%  (epoch {last['epoch']}, the reported figure)")
    if last["val_acc"] is not None:
        print(f"final val acc      {100 * last['val_acc']:.2f}%  ({config.val_split:,} held-out training images)")
    print(f"best epoch         {100 * best['test_acc']:.2f}% at epoch {best['epoch']}  "
          "(picked on the test set: for reference only)")
    print(f"wall time          {_duration(result.wall_seconds)}")
    print(f"run saved to       {result.run_dir}")
    return 0


# -------------------------------------------------------------------------------------------------- data, summary
def cmd_data_check(args: argparse.Namespace) -> int:
    from .data import SYSTEM_DIRS, check

    rows = check(args.dataset, args.data_dir)
    print(f"{args.dataset}: all files valid, from {rows[0]['source']}")
    for r in rows:
        status = {True: "matches the official release",
                  False: "differs from the official release checksum",
                  None: "uncompressed: official checksums exist for .gz only"}[r["official"]]
        print(f"  {Path(r['file']).name:<28} {r['bytes']:>10,} bytes  sha256 {r['sha256'][:16]}…  {status}")
    differ = [Path(r["file"]).name for r in rows if r["official"] is False]
    if args.dataset == "mnist" and differ == ["train-images-idx3-ubyte.gz"]:
        print("  (expected for the offline MNIST copy's training images: they were rebuilt from a PNG export and\n"
              "   differ from the official pixels by at most 1 grey level; see its README)")
    elif args.dataset == "fashion-mnist" and differ and SYSTEM_DIRS["fashion-mnist"][0] in rows[0]["source"]:
        print("  (expected for Debian's dataset-fashion-mnist package: it recompresses the files, so the .gz bytes\n"
              "   differ from the release's; the images were read and validated, but no official checksum of the\n"
              "   uncompressed content exists to compare them with)")
    elif differ:
        print(f"  ({len(differ)} file(s) differ from the official release: recompressed, or altered; check where "
              "they came from)")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from .models import MODELS, build_model, format_summary

    names = list(MODELS) if args.model == "all" else [args.model]
    for i, name in enumerate(names):
        if i:
            print()
        print(format_summary(name, build_model(name)))
    return 0


# --------------------------------------------------------------------------------------------- evaluate, report
def format_evaluation(ev, summary: dict | None, mistakes: int = 10) -> str:
    """The human-readable output of `tinymnist evaluate`."""
    names = ev.class_names
    out = [f"run                {ev.run_dir}  ({ev.model} on {ev.dataset}, {ev.total:,} test images)",
           f"test accuracy      {100 * ev.accuracy:.2f}%  ({ev.correct:,} / {ev.total:,} correct)",
           f"test loss          {ev.loss:.4f}"]
    if summary is not None:
        same = _matches_summary(ev, summary)
        out.append(f"run's own figure   {100 * summary['final_test_acc']:.2f}%  (summary.json: "
                   + ("identical)" if same else "DIFFERENT: other data or weights?)"))
    for w in ev.warnings:
        out.append(f"warning: {w}")
    width = max(5, *(len(n) for n in names))
    out += ["", "per class", f"  {'class':<{width}}  {'precision':>9}  {'recall':>7}  {'images':>6}  {'predicted':>9}"]
    for c in ev.per_class:
        prec = "-" if c.precision is None else f"{100 * c.precision:.2f}%"
        rec = "-" if c.recall is None else f"{100 * c.recall:.2f}%"
        out.append(f"  {c.name:<{width}}  {prec:>9}  {rec:>7}  {c.support:>6,}  {c.predicted:>9,}")
    out += ["", "confusion matrix (rows: true class, columns: predicted class; '.' = none)"]
    cm = ev.confusion.tolist()
    cell = max(4, len(f"{max(max(r) for r in cm):,}") + 1)
    # Columns are numbered; rows carry the number and, for Fashion-MNIST, the name too.
    labels = [str(k) if names[k] == str(k) else f"{k} {names[k]}" for k in range(len(names))]
    lw = max(len(x) for x in labels)
    out.append("  " + " " * lw + "".join(f"{k:>{cell}}" for k in range(len(names))))
    for label, row in zip(labels, cm, strict=True):
        out.append(f"  {label:<{lw}}" + "".join(f"{v:>{cell},}" if v else f"{'.':>{cell}}" for v in row))
    out += ["", f"misclassified      {len(ev.mistakes):,} of {ev.total:,} test images"]
    if ev.mistakes and mistakes > 0:
        out.append("most confident mistakes (test index: true -> predicted, confidence):")
        for m in ev.mistakes[:mistakes]:
            out.append(f"  #{m.index:<6} {names[m.true]} -> {names[m.predicted]}  {100 * m.confidence:.1f}%")
    return "\n".join(out)


def _matches_summary(ev, summary: dict) -> bool:
    """Whether an evaluation reproduces the run's recorded final test figures: it does to the last bit with the
    run's weights and data (same model, same kernels), so any difference means other weights or data."""
    import math

    loss = summary.get("final_test_loss")
    return ev.accuracy == summary["final_test_acc"] and (loss is None or math.isclose(ev.loss, loss, rel_tol=1e-9))


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate_run
    from .rundir import SUMMARY, read_summary

    if args.mistakes < 0:  # refused before the model and test set are loaded
        raise TinyMnistError(f"--mistakes: must not be negative, got {args.mistakes}")
    ev = evaluate_run(args.run_dir, data_dir=args.data_dir)
    summary = read_summary(args.run_dir) if (Path(args.run_dir) / SUMMARY).is_file() else None
    if args.write_report:
        # The report would present other data, or other weights, as this run's result: keep the run's own.
        why = ("these test files differ from the ones it was trained with (sha256)" if ev.data_differs else
               f"the weights give {100 * ev.accuracy:.2f}% and loss {ev.loss:.6f}, not the run's recorded "
               f"{100 * summary['final_test_acc']:.2f}% and {summary.get('final_test_loss', float('nan')):.6f} "
               "(model.pt replaced, or another CPU's arithmetic)"
               if summary and not _matches_summary(ev, summary) else None)
        if why:
            raise TinyMnistError(f"--write-report: not rewriting {args.run_dir}'s report: {why}; evaluate without "
                                 "--write-report shows the figures")
    if args.json:
        payload = ev.to_dict()
        payload["run_final_test_acc"] = summary["final_test_acc"] if summary else None
        print(json.dumps(payload, indent=1))
    else:
        print(format_evaluation(ev, summary, args.mistakes))
    if args.write_report:
        from .report import write_run_report

        paths = write_run_report(args.run_dir, evaluation=ev)
        print(f"\nwrote {', '.join(p.name for p in paths.values())} in {args.run_dir}",
              file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import compare_runs

    table, figure = compare_runs(args.run_dirs, args.out)
    print(table)
    print(f"\ncurves of all runs: {figure}")
    return 0


# ----------------------------------------------------------------------------------------- experiment, tune
def check_threads(threads: int | None) -> None:
    """More torch threads than cores only makes them wait for each other (999 on 2 cores: 200x slower)."""
    cores = os.cpu_count() or 1
    if threads is not None and threads > cores:
        raise TinyMnistError(f"--threads: this machine has {cores} cores; more threads than cores only slows "
                             f"training down, got {threads}")


def train_flags(args: argparse.Namespace) -> dict:
    """Only the TrainConfig options the user gave on the command line (with --augment expanded)."""
    from .augment import PRESETS
    from .config import FIELD_NAMES

    flags = {k: v for k, v in vars(args).items() if k in FIELD_NAMES}
    check_threads(flags.get("threads"))
    if hasattr(args, "augment"):
        rotate, translate = PRESETS[args.augment]
        flags.setdefault("rotate", rotate)
        flags.setdefault("translate", translate)
    return flags


def cmd_experiment(args: argparse.Namespace) -> int:
    from . import experiment as ex

    suite = ex.load_suite(args.suite)
    flags = train_flags(args)
    first_seed = flags.pop("seed", 0)
    threads = flags.pop("threads", None)
    plan = ex.plan_suite(suite, flags, args.seeds, first_seed)
    pending = plan.pending
    jobs, threads = ex.default_parallelism(args.jobs, threads, len(pending))
    if not args.dry_run:
        ex.prepare_directory(plan)  # a --runs-root we cannot write to is refused before anything is printed or run
    print(ex.describe_plan(plan))
    if args.dry_run:
        if pending:
            print(f"would run {len(pending)} run(s), {jobs} at a time with {threads} torch thread(s) each")
        return 0
    if pending:
        print(f"running {len(pending)} run(s), {jobs} at a time with {threads} torch thread(s) each; "
              f"{len(plan.runs) - len(pending)} finished run(s) reused", flush=True)
    else:
        print("all runs finished already: rebuilding the table from their run directories")
    done = [0]
    # Epoch lines are indented under the "[  n/N]" counter of the done lines, so each run's name lines up.
    indent = " " * len(f"[{0:>3}/{len(pending)}]")
    nw = max([24, *(len(run.config.name) for run in pending)])  # long labels widen the name column

    def on_epoch(run, progress) -> None:
        val = f"  val {ex.fmt_acc(progress['val_acc'])}" if progress["val_acc"] is not None else ""
        print(f"{indent} {run.config.name:<{nw}} epoch {progress['epoch']:>3}/{run.config.epochs}  "
              f"test {ex.fmt_acc(progress['test_acc'])}{val}", flush=True)

    def on_done(run, report) -> None:
        done[0] += 1
        if report["ok"]:
            val = f"  val {ex.fmt_acc(report['final_val_acc'])}" if report["final_val_acc"] is not None else ""
            what = f"final test acc {ex.fmt_acc(report['final_test_acc'])}{val}  {_duration(report['wall_seconds'])}"
        else:
            what = f"FAILED: {report['error']}"
        print(f"[{done[0]:>3}/{len(pending)}] {run.config.name:<{nw}} {what}", flush=True)

    try:
        reports = ex.run_plan(plan, jobs, threads, on_done, on_epoch)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished runs are kept and stopped ones resume from their last epoch; "
              f"run the same command again to continue ({plan.directory})", file=sys.stderr)
        return 130
    out = ex.write_outputs(plan, jobs if pending else None)
    print()
    print(out.markdown)
    print("saved: " + ", ".join(str(f) for f in out.files))
    failed = [r for r in reports if not r["ok"]]
    if failed:
        print(f"tinymnist: error: {len(failed)} run(s) failed (first: {failed[0]['name']}: {failed[0]['error']}); "
              "the table has the finished runs only", file=sys.stderr)
        return 1
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from . import tune

    if args.trials < 0:
        raise TinyMnistError(f"--trials: must not be negative, got {args.trials}")
    flags = train_flags(args)
    model = flags.get("model", tune.default_base().model)
    # An empty --study is refused by open_study (like an empty --name), not replaced by the default.
    study_name = args.study if args.study is not None else f"tinymnist-{model}"
    runs_root = flags.get("runs_root", tune.default_base().runs_root)
    storage = args.storage or tune.default_storage(runs_root)
    tune.quiet_optuna()
    study, base = tune.open_study(storage, study_name, flags, create=args.trials > 0)
    runs_dir = tune.runs_directory(base, study_name)
    before = len(study.trials)
    print(f"study '{study_name}' in {tune._safe_url(storage)}: {before} trial(s) so far")
    print(f"objective: final-epoch validation accuracy on {base.val_split:,} held-out training images "
          f"({base.model}, {_plural(base.epochs, 'epoch')} per trial, pruned by median validation accuracy); "
          "test accuracy plays no part in the search")
    if args.trials:
        print(f"running {args.trials} trial(s); runs in {runs_dir}", flush=True)

        def on_trial(number: int, state: str, info: dict) -> None:
            if state == "failed":
                print(f"trial {number:>4}  failed: {info['error']}", flush=True)
                return
            if state == "interrupted":
                print(f"trial {number:>4}  interrupted (kept in the study as failed, marked interrupted; the search "
                      "ignores it)", flush=True)
                return
            shown = "  ".join(f"{k}={info[k]:.3g}" for k in tune.SEARCHED)
            where = f" at epoch {info['epoch']}" if state == "pruned" else ""
            print(f"trial {number:>4}  {state}{where}  val acc {100 * info['val_acc']:.2f}%  {shown}  "
                  f"({_duration(info['seconds'])})", flush=True)

        try:
            tune.run_trials(study, base, args.trials, runs_dir, on_trial)
        except KeyboardInterrupt:
            print("\ninterrupted: the finished trials are saved in the study; run the command again to add more",
                  file=sys.stderr)
            return 130
    counts = tune.count_states(study)
    print(f"study now has {len(study.trials)} trial(s): "
          + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    summary = tune.summary_of(study)
    print(f"best trial         #{summary.best_number}: val acc {100 * summary.best_val_acc:.2f}% "
          "(final epoch; the selection criterion)")
    print("best options       " + "  ".join(f"{k}={summary.best_params[k]:.4g}" for k in tune.SEARCHED))
    if args.no_retrain:
        # the hint must find the same study: repeat where it lives, if that was not the default
        where = (f" --storage {tune._safe_url(storage)}" if args.storage else
                 f" --runs-root {shlex.quote(str(runs_root))}" if "runs_root" in flags else "")
        print("not retrained (--no-retrain); evaluate the winner with: tinymnist tune --trials 0 "
              f"--study {shlex.quote(study_name)}{where}")
        return 0
    retrain_dir = tune.retrain_directory(study, base, runs_dir)
    state = tune.retrain_state(retrain_dir, tune.retrain_config(study, base, runs_dir))  # refuses another search's
    if state == "done":
        print("the best options were retrained already: reporting that run", flush=True)
    else:
        what = "resuming the stopped retraining of the best options" if state == "partial" else \
            "retraining the best options once more"
        print(f"{what} (seed {base.seed + 1}, same validation split)...", flush=True)
    final = tune.retrain_best(study, base, runs_dir, Progress(base.epochs).epoch)
    print(f"retrained run      final val acc {100 * final.final_val_acc:.2f}%, "
          f"final test acc {100 * final.final_test_acc:.2f}%  (the reported figure: test set used once, "
          "after the search)")
    print(f"run saved to       {final.final_run}")
    return 0


# ------------------------------------------------------------------------------------------- predict, export
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import describe, format_json, format_text, load_predictor, predict_files

    predictor = load_predictor(args.model)
    predictions = predict_files(predictor, args.images, top=args.top, normalize=not args.no_normalize)
    failed = sum(p.error is not None for p in predictions)
    if args.json:
        print(format_json(predictor, predictions))
    else:
        print(describe(predictor), flush=True)
        for is_error, line in format_text(predictions):
            # Errors go to stderr, one line each, in input order; the other files are still predicted.
            print(f"tinymnist: error: {line}" if is_error else line, file=sys.stderr if is_error else sys.stdout,
                  flush=True)
        if failed:
            print(f"{failed} of {len(predictions)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import PARITY_TOLERANCE, export

    result = export(args.run_dir, args.format, args.out)
    backend = "onnxruntime" if result.format == "onnx" else "TorchScript (reloaded)"
    print(f"wrote {result.path} ({result.format}, {result.bytes / 1024:.1f} KiB, {result.seconds:.1f}s)")
    print(f"checked with {backend} on {result.check_data}: max |logit difference| vs PyTorch "
          f"{result.max_abs_diff:.2e} (limit {PARITY_TOLERANCE:.0e}), same prediction for "
          f"{100 * result.same_predictions:.2f}%")
    return 0


# ----------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .models import DEFAULT_MODEL

    parser = OneLineParser(
        prog="tinymnist",
        description="Train tiny (< 20k parameter) CNNs on MNIST / Fashion-MNIST on a CPU, and inspect them.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"tinymnist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)

    p = sub.add_parser("train", help="train a model and save a run directory",
                       description="Train one model. Options come from built-in defaults, then --config FILE "
                                   "(TOML), then flags; flags win.")
    p.add_argument("--config", help="TOML file with options (top level or a [train] table)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    add_train_options(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("data", help="inspect the dataset files")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=OneLineParser, required=True)
    c = dsub.add_parser("check", help="validate the IDX files; print sizes, sha256 and official-checksum status")
    c.add_argument("--dataset", default="mnist", choices=list(DATASETS), help="which dataset (default: mnist)")
    c.add_argument("--data-dir", help="folder with the four IDX files (default: search, see README)")
    c.set_defaults(handler=cmd_data_check)

    p = sub.add_parser("summary", help="per-layer table of a model: output shape, parameters, receptive field")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"model name or 'all' (default: {DEFAULT_MODEL})")
    p.set_defaults(handler=cmd_summary)

    # --- evaluate / report commands ---
    p = sub.add_parser("evaluate", help="evaluate a finished run on its test set: accuracy, per-class, confusion",
                       description="Load a finished run's final weights and evaluate them on the run's own test "
                                   "set (its dataset and --test-subset, eval mode): accuracy, loss, per-class "
                                   "precision/recall, the confusion matrix and the misclassified images.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'tinymnist train'")
    p.add_argument("--data-dir", help="folder with the dataset's IDX files (default: the run's, else search)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    p.add_argument("--mistakes", type=int, default=10, metavar="N",
                   help="list the N most confident mistakes (0 = none; default: 10)")
    p.add_argument("--write-report", action="store_true",
                   help="also (re)write the run's figures, misclassified.csv and report.md from this evaluation")
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("report", help="compare runs: overlaid curves in one figure and a table",
                       description="Overlay several runs' loss/accuracy/learning-rate curves in one PNG and print "
                                   "a table of their final numbers, with a column for each option that differs.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to compare (at least one)")
    p.add_argument("--out", metavar="PNG", help="where to save the figure (default: comparison.png next to the "
                                                "first run directory); never a run's own file, but a previous "
                                                "comparison figure is replaced")
    p.set_defaults(handler=cmd_report)

    # --- experiment / tune commands ---
    from .experiment import DEFAULT_SEEDS, SUITE_EPOCHS, SUITES
    from .tune import DEFAULT_TRIALS, SEARCHED, TUNE_EPOCHS, TUNE_VAL_SPLIT

    p = sub.add_parser(
        "experiment", help="run a suite of configurations x seeds in parallel: table (md, csv) + plot",
        description="Run every configuration of a suite over several seeds, in parallel processes, each its own "
                    "run directory under RUNS_ROOT/experiments/SUITE/; finished runs are reused, interrupted ones "
                    "resume. Training options given here apply to every configuration (the suite's own options "
                    f"cannot be given). Suite runs default to {SUITE_EPOCHS} epochs.",
        epilog="built-in suites: " + "; ".join(f"{n} ({d})" for n, (d, _) in SUITES.items())
               + ". A grid file: see README (Experiments and tuning).")
    p.add_argument("suite", help=f"{', '.join(SUITES)}, or a grid file (.toml)")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                   help=f"seeds per configuration: --seed, --seed+1, ... (default: {DEFAULT_SEEDS})")
    p.add_argument("--jobs", type=int, help="runs in parallel (default: as many as the cores allow at --threads "
                                            "torch threads per run, which defaults to cores / jobs)")
    p.add_argument("--dry-run", action="store_true", help="show the plan and the state of each run; train nothing")
    add_train_options(p)
    p.set_defaults(handler=cmd_experiment)
    # Two training options mean something else here: runs are named by the runner (LABEL-sSEED), and --seed is
    # the first of the --seeds seeds. (argparse has no public way to edit an added option, hence _actions.)
    for action in p._actions:
        if action.dest == "name":
            action.help = argparse.SUPPRESS
        elif action.dest == "seed":
            action.help = "first seed; the runs use --seed .. --seed+N-1 for --seeds N (default: 0)"
        elif action.dest == "threads":
            action.help = "torch threads per run; --jobs x --threads must not exceed the cores (default: cores / jobs)"

    p = sub.add_parser(
        "tune", help="search hyper-parameters with Optuna on a validation split; retrain the best and test it",
        description="Search learning rate, weight decay, dropout, label smoothing and augmentation with Optuna. "
                    "Each trial trains on the training set minus a held-out validation split and is scored by "
                    "its final-epoch validation accuracy (hopeless trials are pruned); test accuracy plays no part in "
                    "the search. The reported test figure comes from retraining the best options once at the end. "
                    "Several `tinymnist tune` processes (any machines) "
                    "can share one study through --storage postgresql://...",
    )
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                   help=f"trials this process adds to the study (default: {DEFAULT_TRIALS}; 0: only retrain the "
                        "best so far, or report it if that was done)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///RUNS_ROOT/tune.db); e.g. "
                                     "postgresql://user:password@host:5432/db to share a study between machines")
    p.add_argument("--study", help="study name, also the folder of its runs in RUNS_ROOT/tune; a plain folder name "
                                   "(default: tinymnist-MODEL)")
    p.add_argument("--no-retrain", action="store_true",
                   help="stop after the trials (for extra workers; one process retrains the best at the end)")
    add_train_options(p)
    p.set_defaults(handler=cmd_tune)
    # The training options are train's; make their help true for tune. The searched options (and --augment,
    # which sets two of them, and --name) are left out of the help; given anyway, open_study refuses them in one
    # line that says why, which beats argparse's bare "unrecognized arguments". argparse has no public way to
    # edit an added option, hence _actions.
    searched = {*SEARCHED, "augment", "name"}
    for action in p._actions:
        if action.dest in searched:
            action.help = argparse.SUPPRESS
        elif action.dest == "epochs":
            action.help = f"passes over the training set in each trial and the final retraining " \
                          f"(default: {TUNE_EPOCHS})"
        elif action.dest == "val_split":
            action.help = f"training images held out to score the trials on (default: {TUNE_VAL_SPLIT}; must be > 0)"
    p.epilog = "searched by tune, so not options here: " + ", ".join("--" + k.replace("_", "-") for k in SEARCHED) \
        + " (and --augment); runs are named by tune (no --name)"

    # --- predict / export commands ---
    p = sub.add_parser(
        "predict", help="read digits from image files (photos, drawings, scans) with a trained model",
        description="Predict the digit (or Fashion-MNIST class) in each image. By default every image is first "
                    "made to look like MNIST: grey, white ink on black, cropped to the ink, longer side 20 px, "
                    "centred by centre of mass in 28x28 (see README). Folders are read recursively.")
    p.add_argument("model", metavar="RUN_DIR_OR_MODEL_FILE",
                   help="a run directory (or its model.pt), or an exported model.onnx / TorchScript file")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files and/or folders")
    p.add_argument("--top", type=_positive_int, default=3, metavar="K",
                   help="show the K most likely classes (default: 3)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.add_argument("--no-normalize", action="store_true",
                   help="skip the MNIST-style preprocessing: for images that already are white-on-black, centred "
                        "digits (they are only turned grey and resized to 28x28)")
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser(
        "export", help="write a run's model as ONNX or TorchScript, checked against PyTorch",
        description="Export the model of a run directory. The exported file is run on test images and must give "
                    "PyTorch's logits to within 1e-4, or it is not written. It carries the dataset, normalisation "
                    "and class names, so `tinymnist predict` can use it directly.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"], help="file format (default: onnx)")
    p.add_argument("--out", metavar="PATH",
                   help="output file (.onnx for onnx; .pt, .pth, .ts or .torchscript for torchscript), or an "
                        "existing folder or one ending in '/' for the default name in it (default: "
                        "RUN_DIR/model.onnx or RUN_DIR/model.torchscript.pt). An existing file is replaced only if "
                        "it is an earlier tinymnist export of the same format.")
    p.set_defaults(handler=cmd_export)

    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        # Building the parser reads the model registry: a Ctrl-C there is an interruption too, not a traceback.
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        return args.handler(args)
    except TinyMnistError as e:
        print(f"tinymnist: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tinymnist: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`tinymnist summary | head`): not an error of ours. Point stdout at devnull so
        # Python's exit-time flush does not complain a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
