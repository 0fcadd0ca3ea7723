"""Experiments: a suite of configurations x N seeds -> one run directory each -> a table and a plot.

A suite is plain data: a name and a list of (label, overrides) pairs, each overrides dict a few TrainConfig
options on top of a shared base. Expanding it gives one TrainConfig per (configuration, seed), each with a
deterministic run directory

    <runs_root>/experiments/<suite>/<label>-s<seed>/

A run counts as finished iff its summary.json and its report.md exist. Re-running a suite therefore reuses
finished runs, resumes runs that stopped part-way (from their checkpoint), writes the missing report of a run
stopped after its last epoch, and only trains what is missing. Runs execute in parallel worker processes, each
with a fixed number of torch threads so the workers never oversubscribe the cores; they report every epoch to
the parent, which prints it. The results (results.md, results.csv, runs.csv, results.png) go into the suite
folder.

Honesty rules, enforced here rather than left to the reader: the reported figure is the test accuracy after
the final epoch (read from summary.json, never a best epoch); the table states seeds, epochs, data sizes,
hardware and torch version; the standard deviation is the sample one (ddof=1).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import NOT_COMPARED, TrainConfig, config_from_dict, differences, read_toml
from .errors import TinyMnistError

# Epochs of a suite run unless --epochs (or a grid file's [base]) says otherwise: the training default, because
# "does dropout 0.1 beat 0.2?" has different answers for a 3-epoch sketch (the model still underfits) and for
# the recipe people actually train. On a 2-core CPU a 20-epoch tiny20k run takes ~5 minutes of one core, so a
# 5-configuration x 3-seed suite is about 40 minutes on both cores; `--epochs 3` gives a quick sketch.
SUITE_EPOCHS = TrainConfig().epochs
DEFAULT_SEEDS = 5
EXPERIMENTS_DIR = "experiments"

# Options the runner sets itself: a suite or grid file may not set them.
RESERVED = ("name", "runs_root", "seed", "threads")

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _augmentation_suite() -> list[tuple[str, dict]]:
    from .augment import PRESETS

    return [(name, {"rotate": r, "translate": t}) for name, (r, t) in PRESETS.items()]


# name -> (what it asks, its configurations). Each configuration changes only what the question is about;
# everything else is the base config (built-in defaults <- flags).
SUITES: dict[str, tuple[str, list[tuple[str, dict]]]] = {
    "dropout": ("dropout rate before the classifier",
                [(f"dropout-{p:g}", {"dropout": p}) for p in (0.0, 0.05, 0.1, 0.2, 0.3)]),
    "schedule": ("learning-rate schedule",
                 [("none", {"schedule": "none"}), ("step", {"schedule": "step"}),
                  ("cosine", {"schedule": "cosine"}), ("one-cycle", {"schedule": "onecycle"})]),
    "augmentation": ("augmentation strength (augment.PRESETS)", _augmentation_suite()),
    # The seed's conv stack with three heads; parameter counts come from the model registry at run time.
    "architecture": ("FC head vs global-average-pool head vs 1x1 transitions",
                     [("fc-head", {"model": "seed"}), ("gap-head", {"model": "seed-gap"}),
                      ("1x1-transitions", {"model": "seed-1x1"})]),
    # SGD with momentum keeps TrainConfig's default learning rate. Adam-family optimisers want a much smaller
    # one; AdamW's decay is decoupled from the gradient, so it needs a much larger coefficient to regularise as
    # much as L2 does for SGD.
    "optimizer": ("optimiser",
                  [("sgd-momentum", {"optimizer": "sgd", "momentum": 0.9}),
                   ("adam", {"optimizer": "adam", "lr": 0.003}),
                   ("adamw", {"optimizer": "adamw", "lr": 0.003, "weight_decay": 0.05})]),
}


@dataclass
class Suite:
    name: str
    description: str
    configs: list[tuple[str, dict]]
    base: dict = field(default_factory=dict)  # options shared by every configuration (a grid file's [base])
    source: str = "built-in"

    @property
    def varied(self) -> set[str]:
        return {k for _, overrides in self.configs for k in overrides}


# --------------------------------------------------------------------------------------------- suites and grids
def load_suite(name: str) -> Suite:
    """A built-in suite by name, or a grid file (a path ending in .toml, or any existing file)."""
    if name in SUITES:
        description, configs = SUITES[name]
        return Suite(name, description, [(label, dict(o)) for label, o in configs])
    path = Path(name)
    if name.endswith(".toml") or path.is_file():
        return load_grid(path)
    raise TinyMnistError(f"unknown suite '{name}' (built-in: {', '.join(SUITES)}; or a grid file ending in .toml)")


def _expand_augment(values: dict, where: str) -> dict:
    """Grid files may say augment = "light" for a PRESETS strength instead of rotate/translate."""
    from .augment import PRESETS

    if "augment" not in values:
        return values
    values = dict(values)
    preset = values.pop("augment")
    if preset not in PRESETS:
        raise TinyMnistError(f"{where}: augment = {preset!r} is not one of {', '.join(PRESETS)}")
    if "rotate" in values or "translate" in values:
        raise TinyMnistError(f"{where}: give either augment or rotate/translate, not both")
    values["rotate"], values["translate"] = PRESETS[preset]
    return values


def _check_options(values: dict, where: str) -> dict:
    """Options of one table of a grid file: known TrainConfig fields of the right type, none reserved."""
    if not isinstance(values, dict):
        raise TinyMnistError(f"{where}: expected a table of options")
    values = _expand_augment(values, where)
    reserved = sorted(set(values) & set(RESERVED))
    if reserved:
        hints = {"seed": "seeds come from --seeds/--seed", "threads": "threads per run come from --threads/--jobs",
                 "name": "runs are named LABEL-sSEED", "runs_root": "the folder comes from --runs-root"}
        raise TinyMnistError(f"{where}: {', '.join(reserved)} cannot be set in a grid (the runner sets it; "
                             + "; ".join(hints[k] for k in reserved) + ")")
    config_from_dict(values, source=where)  # unknown keys and wrong types -> one-line error
    return values


def _auto_label(overrides: dict, fallback: str) -> str:
    """A label for an entry that gives none: its options and values, e.g. "dropout-0.1_lr-0.05". Characters a
    folder name should not hold (a data_dir's '/') become '_'; two entries that collide are refused later."""
    label = "_".join(f"{k}-{_value_text(v)}" for k, v in overrides.items())
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._-") or fallback


def _value_text(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        # short where that is exact (5.0 -> "5", 1e-4 -> "0.0001"); every digit where it is not, so that two values
        # never share a label
        return f"{v:g}" if float(f"{v:g}") == v else repr(v)
    return str(v)


def load_grid(path: Path) -> Suite:
    """Read a grid file. Format (documented in the README):

        name = "my-grid"            # optional; default: the file name without .toml
        [base]                      # optional: options every configuration shares
        model = "tiny8k"
        [[config]]                  # either explicit configurations ...
        label = "low"               #   (label optional: made from the options)
        dropout = 0.05
        [grid]                      # ... or a cartesian product of lists
        dropout = [0.0, 0.1]
        lr = [0.02, 0.05]
    """
    where = str(path)
    data = read_toml(path, "grid file")
    unknown = sorted(set(data) - {"name", "base", "config", "grid"})
    if unknown:
        raise TinyMnistError(f"{where}: unknown key(s) {', '.join(unknown)} (expected name, [base], [[config]] "
                             "or [grid])")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not _LABEL.match(name):
        raise TinyMnistError(f"{where}: name {name!r} must be letters, digits, '.', '_' or '-'")
    base = _check_options(data.get("base", {}), f"{where}: [base]")
    if ("config" in data) == ("grid" in data):
        raise TinyMnistError(f"{where}: needs exactly one of [[config]] entries or a [grid] table")

    configs: list[tuple[str, dict]] = []
    if "config" in data:
        entries = data["config"]
        if not isinstance(entries, list) or not entries:
            raise TinyMnistError(f"{where}: [[config]] must be a non-empty array of tables")
        for i, entry in enumerate(entries, 1):
            if not isinstance(entry, dict):
                raise TinyMnistError(f"{where}: [[config]] entry {i} is not a table")
            entry = dict(entry)
            label = entry.pop("label", None)
            overrides = _check_options(entry, f"{where}: [[config]] entry {i}")
            if label is None:
                label = _auto_label(overrides, f"config{i}")
            configs.append((label, overrides))
    else:
        grid = data["grid"]
        if not isinstance(grid, dict) or not grid:
            raise TinyMnistError(f"{where}: [grid] must be a non-empty table of lists")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise TinyMnistError(f"{where}: [grid] {key} must be a non-empty list of values")
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            overrides = dict(zip(keys, combo, strict=True))
            label = _auto_label(overrides, f"config{len(configs) + 1}")
            configs.append((label, _check_options(overrides, f"{where}: [grid] {label}")))

    seen: set[str] = set()
    for label, _ in configs:
        if not isinstance(label, str) or not _LABEL.match(label):
            raise TinyMnistError(f"{where}: label {label!r} must be letters, digits, '.', '_' or '-'")
        if label in seen:
            raise TinyMnistError(f"{where}: label '{label}' is used twice (give each entry its own label = \"...\")")
        seen.add(label)
    return Suite(name, f"grid from {path.name}", configs, base=base, source=where)


# ---------------------------------------------------------------------------------------------------- planning
@dataclass
class PlannedRun:
    label: str
    seed: int
    config: TrainConfig
    params: int
    # new | partial (has a checkpoint: resume) | stale (no checkpoint: restart) | unreported (trained, but stopped
    # before its report was written: write it) | finished
    state: str = "new"

    @property
    def run_dir(self) -> Path:
        return Path(self.config.runs_root) / str(self.config.name)


@dataclass
class Plan:
    suite: Suite
    base: TrainConfig
    seeds: list[int]
    configs: list[tuple[str, dict, TrainConfig]]  # label, overrides, config of the first seed
    runs: list[PlannedRun]
    directory: Path

    @property
    def pending(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.state != "finished"]


def suite_directory(runs_root: str | Path, suite: str) -> Path:
    return Path(runs_root) / EXPERIMENTS_DIR / suite


def _inspect_existing(run: PlannedRun) -> str | None:
    """Set run.state from what is on disk; returns why the run cannot be reused, if it cannot."""
    from . import rundir

    d = run.run_dir
    if not d.exists():
        return None
    has_config = (d / rundir.CONFIG).is_file()
    if has_config:
        try:
            saved, _ = rundir.read_config(d)
        except TinyMnistError as e:
            return str(e)
        diff = differences(saved, run.config)
        if diff:
            return f"{d}: exists with other options ({diff})"
    if (d / rundir.SUMMARY).is_file():
        if not has_config:
            return f"{d}: has summary.json but no config.json"
        from .report import REPORT

        # train() writes report.md last, after the weights and summary.json: a run stopped while drawing its
        # figures has its numbers but not its report, and would otherwise never get one.
        run.state = "finished" if (d / REPORT).is_file() else "unreported"
    elif (d / rundir.CHECKPOINT).is_file():
        run.state = "partial"
    elif has_config or (d / rundir.METRICS).exists():
        run.state = "stale"  # stopped before its first checkpoint: nothing worth keeping
    elif d.is_dir() and any(d.iterdir()):
        # someone else's files where this run would go: refuse now, not after the other runs have trained
        return f"{d}: folder exists, is not empty and holds no tinymnist run"
    elif not d.is_dir():
        return f"{d}: exists and is not a folder"
    return None


def plan_suite(suite: Suite, flags: dict[str, Any], seeds: int = DEFAULT_SEEDS, first_seed: int = 0) -> Plan:
    """Expand a suite into runs and check everything that can be checked before any run starts.

    flags: TrainConfig options the user gave on the command line (a flag that the suite itself varies is an
    error: it would be silently overridden). Refuses, listing every offender: invalid configurations,
    configurations over the parameter budget, existing runs made with other options.
    """
    from .models import build_model, count_parameters
    from .train import check_data_sizes

    if seeds <= 0:
        raise TinyMnistError(f"--seeds: must be a positive integer, got {seeds}")
    if first_seed < 0:
        raise TinyMnistError(f"--seed: must not be negative, got {first_seed}")
    if not suite.configs:
        raise TinyMnistError(f"suite '{suite.name}': has no configurations")
    clash = sorted(set(flags) & suite.varied)
    if clash:
        opts = ", ".join("--" + k.replace("_", "-") for k in clash)
        raise TinyMnistError(f"{opts}: the '{suite.name}' suite varies this itself; leave it out")
    if "name" in flags:
        raise TinyMnistError("--name: experiments name their runs <label>-s<seed> (choose the folder with --runs-root)")
    if "seed" in flags:
        raise TinyMnistError("--seed: pass the seeds as plan_suite(seeds=N, first_seed=S)")

    def named(overrides: dict) -> Callable[[str], str]:
        # An error names where a bad value came from: a configuration's own options, the grid file's [base], or
        # else a command-line flag.
        def name(option: str) -> str:
            if option in overrides:
                return f"option '{option}'"
            if option in suite.base:
                return f"{suite.source}: [base]: option '{option}'"
            return f"--{option.replace('_', '-')}"

        return name

    base = config_from_dict(suite.base, TrainConfig(epochs=SUITE_EPOCHS), source=suite.source)
    base.validate(named({}))
    base = config_from_dict({k: v for k, v in flags.items() if k != "threads"}, base, source="command line")
    base.validate()  # a bad flag is reported once, not once per configuration
    where = "" if suite.source == "built-in" else f" ({suite.source})"
    sizes = _data_sizes(base, named({}), f"suite '{suite.name}'{where}: ")
    if sizes:  # so is a subset too large for the data, given by a flag or the grid file's [base]
        check_data_sizes(base, *sizes, named({}))
    directory = suite_directory(base.runs_root, suite.name)
    _check_directory(directory, base.runs_root)
    seed_list = list(range(first_seed, first_seed + seeds))

    configs, runs, over, invalid = [], [], [], []
    for label, overrides in suite.configs:
        try:
            config = config_from_dict(overrides, base, source=f"suite '{suite.name}' configuration '{label}'")
            config.validate(named(overrides))
        except TinyMnistError as e:
            invalid.append(f"{label}: {e}")
            continue
        # A wrong data folder is refused at once (it is the same for every configuration that uses it); a subset
        # larger than the data is one more invalid configuration.
        sizes = _data_sizes(config, named(overrides), f"suite '{suite.name}'{where}: {label}: ")
        try:
            if sizes:
                check_data_sizes(config, *sizes, named(overrides))
        except TinyMnistError as e:
            invalid.append(f"{label}: {e}")
            continue
        params = count_parameters(build_model(config.model, config.dropout))
        if params > config.param_budget:
            over.append(f"{label} ({config.model}: {params:,} > {config.param_budget:,})")
            continue
        configs.append((label, overrides, config))
        for seed in seed_list:
            c = config.replace(seed=seed, runs_root=str(directory), name=f"{label}-s{seed}")
            runs.append(PlannedRun(label, seed, c, params))
    if invalid:
        raise TinyMnistError(f"suite '{suite.name}'{where}: invalid configuration(s), nothing was run: "
                             + "; ".join(invalid))
    if over:
        raise TinyMnistError(f"suite '{suite.name}': over the parameter budget, nothing was run: " + ", ".join(over))

    problems = [p for p in (_inspect_existing(r) for r in runs) if p]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TinyMnistError(f"{problems[0]}{more}; delete those runs or use another --runs-root")
    return Plan(suite, base, seed_list, configs, runs, directory)


_DATA_SIZES: dict[tuple, tuple[int, int]] = {}


def _data_sizes(config: TrainConfig, origin: Callable[[str], str], context: str) -> tuple[int, int] | None:
    """(training images, test images) of the data a configuration will use, read once per process. Checked at
    planning time (also by --dry-run) so that a wrong data folder is one line before anything is created, not a
    failure of every run. None when the data is not on disk yet (the first run downloads it)."""
    from .data import locate, read_split

    key = (config.dataset, config.data_dir, os.environ.get("TINYMNIST_DATA"))
    if key not in _DATA_SIZES:
        option = origin("data_dir")
        # a data_dir from the grid file is named as the file's option, with its configuration for context
        named = None if config.data_dir is None or option.startswith("--") else (
            f"{context if option.startswith('option') else ''}{option} = {str(config.data_dir)!r}")
        try:
            directory, _ = locate(config.dataset, config.data_dir, allow_download=False, named=named)
        except TinyMnistError:
            if config.data_dir is None and not key[2]:
                return None  # nothing given and nothing found: the run will try to download it
            raise
        _DATA_SIZES[key] = (len(read_split(directory, "train")), len(read_split(directory, "test")))
    return _DATA_SIZES[key]


def _check_directory(directory: Path, runs_root: str) -> None:
    """Refuse a suite folder that cannot be made, without making it (planning and --dry-run write nothing): a
    file in the way, or a nearest existing folder we may not write to. What only mkdir can tell (a folder under
    /proc, a read-only mount when running as root) is refused by prepare_directory, still before any run."""
    from . import rundir

    existing = rundir.nearest_existing(directory)
    if not existing.is_dir():
        raise TinyMnistError(f"--runs-root {runs_root}: cannot hold the suite folder {directory} "
                             f"({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TinyMnistError(f"--runs-root {runs_root}: cannot hold the suite folder {directory} "
                             f"({existing} is not writable)")


def prepare_directory(plan: Plan) -> None:
    """Create the suite folder and prove it writable before the first run starts, so that a bad --runs-root is
    one line up front rather than a failure per run and an error at the end."""
    from . import rundir

    try:
        rundir.make_writable_dir(plan.directory)
    except OSError as e:
        raise TinyMnistError(f"--runs-root {plan.base.runs_root}: cannot write the suite folder {plan.directory} "
                             f"({e.strerror or e})") from None


# ----------------------------------------------------------------------------------------------------- running
def default_parallelism(jobs: int | None, threads: int | None, pending: int) -> tuple[int, int]:
    """(parallel jobs, torch threads per job) so that jobs * threads never exceeds the usable cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if jobs is not None and jobs <= 0:
        raise TinyMnistError(f"--jobs: must be a positive integer, got {jobs}")
    if threads is not None and threads < 0:
        raise TinyMnistError(f"--threads: must not be negative, got {threads}")
    if threads == 0:
        threads = None  # --threads 0 means "torch's default": let us choose instead
    # What was asked is checked, not what is left after capping to the pending runs, so that the same command is
    # accepted or refused whatever state the suite is in. More threads than cores only makes the runs wait for
    # each other (5-10x slower).
    if jobs is not None and jobs * (threads or 1) > cores:
        raise TinyMnistError(f"--jobs: {jobs} runs x {threads or 1} torch thread(s) each is more than this "
                             f"machine's {cores} cores; use at most --jobs {max(1, cores // (threads or 1))}"
                             f"{f' at --threads {threads}' if threads else ''}")
    if jobs is None:
        jobs = max(1, cores // (threads or 1))
    jobs = max(1, min(jobs, pending))
    if threads is None:
        threads = max(1, cores // jobs)
    return jobs, threads


_DATA_CACHE: dict[tuple, Any] = {}


def _data_key(config: TrainConfig) -> tuple:
    return (config.dataset, config.data_dir, config.val_split, config.train_subset, config.test_subset)


def _prepared(config: TrainConfig):
    """Each process loads a dataset view once and shares it across all the runs it executes."""
    from .train import prepare_data

    key = _data_key(config)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = prepare_data(config)
    return _DATA_CACHE[key]


def _clear_stale(run_dir: Path) -> None:
    from . import rundir

    for name in (rundir.METRICS, rundir.CONFIG):
        (run_dir / name).unlink(missing_ok=True)


EpochCallback = Callable[[PlannedRun, dict], None]


def _progress(m: dict) -> dict:
    """What the parent prints for one finished epoch (small: it crosses a process boundary)."""
    return {"epoch": m["epoch"], "test_acc": m["test_acc"], "val_acc": m["val_acc"]}


def execute_run(config_dict: dict, state: str, threads: int, on_epoch: Callable[[dict], None] | None = None
                ) -> dict:
    """Train (or resume) one planned run; runs in a worker process. Returns a small picklable report.

    on_epoch(progress): called after each epoch with _progress(metrics)."""
    import torch

    from . import rundir
    from .train import train

    torch.set_num_threads(threads)
    config = config_from_dict(config_dict, source="experiment")
    config.threads = threads
    run_dir = Path(config.runs_root) / str(config.name)

    def epoch_done(m: dict) -> None:  # returns None: a true value would ask train() to stop
        if on_epoch:
            on_epoch(_progress(m))

    try:
        if state == "unreported":
            # Trained to the end and stopped while drawing its figures: write them from the saved weights, the
            # last step train() would have done (and what `train --resume` ends with).
            from .report import write_run_report

            data = _prepared(config)
            write_run_report(run_dir, test=(data.test_x, data.test_y))
            summary = rundir.read_summary(run_dir)
            return {"name": config.name, "ok": True, "final_test_acc": summary["final_test_acc"],
                    "final_val_acc": summary.get("final_val_acc"), "wall_seconds": summary["wall_seconds"]}
        if state == "stale":
            _clear_stale(run_dir)
        result = train(config, resume=state == "partial", data=_prepared(config), on_epoch=epoch_done)
    except TinyMnistError as e:
        return {"name": config.name, "ok": False, "error": str(e)}
    return {"name": config.name, "ok": True, "final_test_acc": result.final_test_acc,
            "final_val_acc": result.final_val_acc, "wall_seconds": result.wall_seconds}


# In a worker process: where its runs send ("epoch", name, progress) and ("done", name, report) messages.
_MESSAGES: Any = None


def _worker_init(messages: Any) -> None:
    # Ctrl-C goes to the whole process group; the parent alone handles it (and terminates the workers), so the
    # terminal gets one message instead of a traceback per worker.
    import signal

    global _MESSAGES
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _MESSAGES = messages


def _execute_in_worker(task: tuple) -> None:
    # Epochs and the final report travel on one queue, in order, so a run's last epoch is never printed after
    # the line saying it is done.
    name = task[0]["name"]
    report = execute_run(*task, on_epoch=lambda p: _MESSAGES.put(("epoch", name, p)))
    _MESSAGES.put(("done", name, report))


def run_plan(plan: Plan, jobs: int, threads: int, on_done: Callable[[PlannedRun, dict], None] | None = None,
             on_epoch: EpochCallback | None = None) -> list[dict]:
    """Execute the plan's unfinished runs, `jobs` at a time. Returns the reports of all executed runs.

    on_done(run, report) after each run; on_epoch(run, progress) after each epoch of each run, in this process
    (progress: epoch, test_acc, val_acc). Data problems (missing files, a validation split larger than the
    training set, ...) are found by loading each distinct data view once here, before any run starts.
    """
    pending = plan.pending
    if not pending:
        return []
    prepare_directory(plan)
    for r in pending:
        _prepared(r.config)
    by_name = {r.config.name: r for r in pending}
    reports = []
    tasks = [(r.config.to_dict(), r.state, threads) for r in pending]
    if jobs == 1:
        for task in tasks:
            run = by_name[task[0]["name"]]
            report = execute_run(*task, on_epoch=(lambda p, run=run: on_epoch(run, p)) if on_epoch else None)
            reports.append(report)
            if on_done:
                on_done(run, report)
        return reports

    import multiprocessing as mp
    import queue

    _DATA_CACHE.clear()  # the workers load their own copy; do not hold one more in the parent
    # 'spawn': a fresh interpreter per worker, no forked torch thread pools or locks.
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    pool = ctx.Pool(jobs, initializer=_worker_init, initargs=(messages,))
    try:
        results = [pool.apply_async(_execute_in_worker, (task,)) for task in tasks]
        while len(reports) < len(tasks):
            try:
                kind, name, payload = messages.get(timeout=1.0)
            except queue.Empty:
                for r in results:
                    if r.ready() and not r.successful():
                        r.get()  # a worker's unexpected exception (a bug, not a TinyMnistError): raise it here
                continue
            if kind == "epoch":
                if on_epoch:
                    on_epoch(by_name[name], payload)
                continue
            reports.append(payload)
            if on_done:
                on_done(by_name[name], payload)
        pool.close()
    except BaseException:
        pool.terminate()  # checkpoints are written atomically, so killing mid-epoch loses only that epoch
        raise
    finally:
        pool.join()
    return reports


# ------------------------------------------------------------------------------------------------- aggregation
@dataclass
class Stats:
    n: int
    mean: float
    std: float | None  # sample standard deviation (ddof=1); None for a single value
    min: float
    max: float


def aggregate(values: list[float]) -> Stats:
    """Mean, sample standard deviation (ddof=1) and range of per-seed numbers."""
    if not values:
        raise ValueError("aggregate() needs at least one value")
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stats(len(values), statistics.fmean(values), std, min(values), max(values))


@dataclass
class RunRecord:
    label: str
    seed: int
    run_dir: Path
    summary: dict
    metrics: list[dict]
    payload: dict  # config.json: config, params, data, environment


def collect(plan: Plan) -> list[RunRecord]:
    """Read every finished run of the plan back from its run directory."""
    from . import rundir

    records = []
    for r in plan.runs:
        if not (r.run_dir / rundir.SUMMARY).is_file():
            continue
        _, payload = rundir.read_config(r.run_dir)
        records.append(RunRecord(r.label, r.seed, r.run_dir, rundir.read_summary(r.run_dir),
                                 rundir.read_metrics(r.run_dir), payload))
    return records


@dataclass
class ConfigRow:
    label: str
    options: str
    model: str
    params: int
    epochs: int
    seeds: list[int]
    test: Stats
    val: Stats | None
    wall: Stats
    per_seed_test: list[float]


def summarize_records(plan: Plan, records: list[RunRecord]) -> list[ConfigRow]:
    rows = []
    for label, overrides, config in plan.configs:
        recs = sorted((r for r in records if r.label == label), key=lambda r: r.seed)
        if not recs:
            continue
        # The reported number: test accuracy after the FINAL epoch, as train() wrote it to summary.json.
        test = [r.summary["final_test_acc"] for r in recs]
        vals = [r.summary["final_val_acc"] for r in recs if r.summary.get("final_val_acc") is not None]
        rows.append(ConfigRow(
            label=label, options=", ".join(f"{k}={_value_text(v)}" for k, v in overrides.items()),
            model=config.model, params=recs[0].summary["params"], epochs=recs[0].summary["epochs"],
            seeds=[r.seed for r in recs], test=aggregate(test), val=aggregate(vals) if vals else None,
            wall=aggregate([r.summary["wall_seconds"] for r in recs]), per_seed_test=test,
        ))
    return rows


def _pct(s: Stats | None) -> str:
    if s is None:
        return "–"
    return f"{100 * s.mean:.2f} ± {100 * s.std:.2f}" if s.std is not None else f"{100 * s.mean:.2f} (1 seed)"


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m {s:02d}s" if m else f"{seconds:.1f}s"


def _base_options(base: TrainConfig) -> str:
    default = TrainConfig(epochs=SUITE_EPOCHS).to_dict()
    skip = set(NOT_COMPARED) | {"seed", "epochs"}
    changed = [f"{k}={_value_text(v)}" for k, v in base.to_dict().items() if k not in skip and v != default[k]]
    return ", ".join(changed) or "built-in defaults"


def _data_line(data: dict, base: TrainConfig) -> str:
    if not data:
        return f"- Data: {base.dataset}."
    val = data.get("val_images") or 0
    held = f", {val:,} validation images (held out of the training set)" if val else ", no validation split"
    return (f"- Data: {data.get('dataset', base.dataset)}, {data.get('train_images', 0):,} training images{held}, "
            f"{data.get('test_images', 0):,} test images.")


def format_markdown(plan: Plan, rows: list[ConfigRow], records: list[RunRecord], jobs: int | None = None) -> str:
    """The results table plus the facts needed to read it honestly."""
    has_val = any(r.val is not None for r in rows)
    head = ["configuration", "options", "model", "params", "epochs", "seeds",
            "final-epoch test acc % (mean ± std)", "min %"]
    if has_val:
        head.append("final-epoch val acc % (mean ± std)")
    head.append("wall time / run")
    lines = [f"# Experiment: {plan.suite.name}", "", f"Question: {plan.suite.description}.", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if h in ("params", "epochs", "seeds", "min %", "wall time / run") else "---"
                            for h in head) + "|"]
    for r in rows:
        cells = [r.label, r.options or "–", r.model, f"{r.params:,}", str(r.epochs), str(r.test.n),
                 _pct(r.test), f"{100 * r.test.min:.2f}"]
        if has_val:
            cells.append(_pct(r.val))
        cells.append(_duration(r.wall.mean))
        lines.append("| " + " | ".join(cells) + " |")

    envs = [rec.payload.get("environment", {}) for rec in records]
    data = records[0].payload.get("data", {}) if records else {}
    cpus = sorted({e.get("cpu", "unknown") for e in envs}) or ["unknown"]
    threads = sorted({e.get("threads", "?") for e in envs}, key=str)
    torches = sorted({e.get("torch", "unknown") for e in envs}) or ["unknown"]
    epochs = sorted({r.epochs for r in rows})
    missing = len(plan.runs) - len(records)
    lines += [
        "",
        "- Accuracy is the test accuracy **after the final epoch** of each run (no best-epoch picking); "
        "nothing was selected on the test set.",
        "- ± is the sample standard deviation over seeds (ddof=1); min is the worst seed.",
        f"- Seeds: {', '.join(map(str, plan.seeds))}. Epochs: {', '.join(map(str, epochs))}"
        f"{' (the suite default)' if epochs == [SUITE_EPOCHS] else ''}.",
        _data_line(data, plan.base),
        f"- Shared options: {_base_options(plan.base)}.",
        f"- Hardware: {'; '.join(cpus)}; torch threads per run: {', '.join(map(str, threads))}"
        + (f"; {jobs} run(s) in parallel" if jobs else "") + f". torch {', '.join(torches)}.",
        "- Wall time is training + per-epoch evaluation of one run, while sharing the machine with the other "
        "parallel runs.",
    ]
    if missing:
        lines.append(f"- **{missing} of {len(plan.runs)} runs are not finished** and are not in this table.")
    return "\n".join(lines) + "\n"


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _opt(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"


def format_csvs(rows: list[ConfigRow], records: list[RunRecord]) -> tuple[str, str]:
    """(results.csv: one row per configuration, runs.csv: one row per seed). Accuracies are fractions."""
    results = _csv_text(
        ["configuration", "options", "model", "params", "epochs", "n_seeds", "seeds", "final_test_acc_mean",
         "final_test_acc_std_ddof1", "final_test_acc_min", "final_test_acc_max", "final_val_acc_mean",
         "final_val_acc_std_ddof1", "wall_seconds_mean", "final_test_acc_per_seed"],
        [[r.label, r.options, r.model, r.params, r.epochs, r.test.n, " ".join(map(str, r.seeds)),
          _opt(r.test.mean), _opt(r.test.std), _opt(r.test.min), _opt(r.test.max),
          _opt(r.val.mean if r.val else None), _opt(r.val.std if r.val else None), f"{r.wall.mean:.1f}",
          " ".join(f"{a:.6f}" for a in r.per_seed_test)] for r in rows])
    runs = _csv_text(
        ["configuration", "seed", "params", "epochs", "final_test_acc", "final_val_acc", "wall_seconds",
         "best_epoch", "best_epoch_test_acc_reference_only", "run_dir"],
        [[rec.label, rec.seed, rec.summary["params"], rec.summary["epochs"], _opt(rec.summary["final_test_acc"]),
          _opt(rec.summary.get("final_val_acc")), f"{rec.summary['wall_seconds']:.1f}", rec.summary["best_epoch"],
          _opt(rec.summary["best_epoch_test_acc"]), str(rec.run_dir)] for rec in records])
    return results, runs


def plot(plan: Plan, rows: list[ConfigRow], records: list[RunRecord], path: Path) -> None:
    """Left: final-epoch test accuracy per configuration, one point per seed, mean ± std bar.
    Right: test accuracy per epoch, one thin line per seed, in the configuration's colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import epoch_locator

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    colours = plt.get_cmap("tab10")
    for i, r in enumerate(rows):
        c = colours(i % 10)
        n = len(r.per_seed_test)
        xs = [i + (j - (n - 1) / 2) * 0.06 for j in range(n)]  # spread the seeds so points do not overlap
        ax1.scatter(xs, [100 * a for a in r.per_seed_test], color=c, s=18, alpha=0.8, zorder=3)
        ax1.errorbar([i + 0.25], [100 * r.test.mean], yerr=[100 * (r.test.std or 0.0)], fmt="_", color="black",
                     markersize=14, capsize=4, zorder=4)
        for rec in (x for x in records if x.label == r.label):
            # A line through one point draws nothing: 1-epoch runs are shown as dots.
            ax2.plot([m["epoch"] for m in rec.metrics], [100 * m["test_acc"] for m in rec.metrics],
                     color=c, alpha=0.6, linewidth=1, marker="o" if len(rec.metrics) == 1 else None,
                     markersize=4, label=r.label if rec.seed == r.seeds[0] else None)
    ax1.set_xticks(range(len(rows)), [r.label for r in rows], rotation=20, ha="right")
    ax1.set_ylabel("final-epoch test accuracy (%)")
    ax1.set_title(f"{plan.suite.name}: per seed (dots), mean ± std (bars)")
    ax1.grid(axis="y", alpha=0.3)
    ax2.xaxis.set_major_locator(epoch_locator())
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_title("test accuracy per epoch (one line per seed)")
    ax2.grid(alpha=0.3)
    if rows:
        ax2.legend(fontsize=8)
        # Zoom on the interesting range: the first epochs of a badly started run would squash everything else.
        lo = min(min(r.per_seed_test) for r in rows)
        ax2.set_ylim(max(0.0, 100 * lo - 3 * max(0.5, 100 * (1 - lo))), 100)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class Outputs:
    markdown: str
    rows: list[ConfigRow]
    records: list[RunRecord]
    files: list[Path]


def write_outputs(plan: Plan, jobs: int | None = None) -> Outputs:
    """Aggregate whatever runs of the plan are finished and write results.md/.csv, runs.csv and results.png
    into the suite folder (each written to a temporary file and renamed: an interruption never leaves a
    half-written table behind)."""
    records = collect(plan)
    rows = summarize_records(plan, records)
    markdown = format_markdown(plan, rows, records, jobs)
    results_csv, runs_csv = format_csvs(rows, records)
    files = [plan.directory / n for n in ("results.md", "results.csv", "runs.csv", "results.png")]
    meta = {"suite": plan.suite.name, "source": plan.suite.source, "seeds": plan.seeds,
            "configurations": [{"label": label, "options": o} for label, o, _ in plan.configs],
            "runs_finished": len(records), "runs_planned": len(plan.runs)}
    try:
        plan.directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(files[0], markdown)
        _atomic_write(files[1], results_csv)
        _atomic_write(files[2], runs_csv)
        if rows:
            plot(plan, rows, records, files[3])
        else:
            files.pop()
        _atomic_write(plan.directory / "suite.json", json.dumps(meta, indent=2) + "\n")
    except OSError as e:
        # The runs themselves are safe in their own folders; only the table could not be saved.
        raise TinyMnistError(f"{plan.directory}: cannot write the results ({e.strerror or e}); the finished runs "
                             "are kept") from None
    return Outputs(markdown, rows, records, files)


def describe_plan(plan: Plan) -> str:
    """The plan before running: each configuration with its options, parameter count and run states."""
    # A grid may give configurations their own epochs: state them all, not just the base's.
    epochs = sorted({config.epochs for _, _, config in plan.configs})
    lines = [f"suite {plan.suite.name} ({plan.suite.source}): {plan.suite.description}",
             f"  {len(plan.configs)} configuration(s) x {len(plan.seeds)} seed(s) "
             f"({', '.join(map(str, plan.seeds))}) = {len(plan.runs)} runs of {'/'.join(map(str, epochs))} "
             f"{'epoch' if epochs == [1] else 'epochs'}"
             f"{f' (suite default {SUITE_EPOCHS})' if epochs == [SUITE_EPOCHS] else ''} in {plan.directory}",
             f"  shared options: {_base_options(plan.base)}"]
    options = [", ".join(f"{k}={_value_text(v)}" for k, v in overrides.items()) or "base"
               for _, overrides, _ in plan.configs]
    # long labels and option lists widen their columns instead of pushing the rest of the line out
    lw = max([20, *(len(label) for label, _, _ in plan.configs)])
    width = max([40, *map(len, options)])
    mw = max([9, *(len(config.model) for _, _, config in plan.configs)])
    for (label, _, config), opts in zip(plan.configs, options, strict=True):
        runs = [r for r in plan.runs if r.label == label]
        states = {s: sum(r.state == s for r in runs) for s in ("finished", "unreported", "partial", "stale", "new")}
        state = ", ".join(f"{n} {s}" for s, n in states.items() if n)
        lines.append(f"  {label:<{lw}} {opts:<{width}} {config.model:<{mw}} {runs[0].params:>7,} params  [{state}]")
    return "\n".join(lines)


def fmt_acc(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"
