"""Hyper-parameter search with Optuna, selected on a validation split and never on the test set.

Each trial is one `train()` on the training set minus a fixed held-out validation split; the objective is the
final-epoch validation accuracy, reported after every epoch so that a MedianPruner can stop hopeless trials
early. Test accuracy is computed by train() as always (it is in each trial's run directory) but the search
never reads it. When the search is done, the best configuration is trained once more, with a fresh seed and
the same validation split, and that run's final-epoch test accuracy is the reported figure.

The study lives in an Optuna storage: by default a SQLite file in the runs folder (embedded, no server);
with `--storage postgresql://...` any number of `tinymnist tune` processes, on any number of machines, add
trials to one shared study.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import NOT_COMPARED, TrainConfig, config_from_dict
from .errors import TinyMnistError, first_line
from .train import train

TUNE_EPOCHS = 10  # epochs of each trial unless --epochs says otherwise
TUNE_VAL_SPLIT = 5000  # held-out training images unless --val-split says otherwise
DEFAULT_TRIALS = 20
TUNE_DIR = "tune"
# Options that do not change what a trial computes; all workers of one study must agree on everything else.
SEARCHED = ("lr", "weight_decay", "dropout", "label_smoothing", "rotate", "translate")


def suggest(trial: Any, base: TrainConfig) -> dict[str, Any]:
    """The search space. Learning-rate and weight-decay ranges depend on the optimiser family."""
    if base.optimizer == "sgd":
        lr = trial.suggest_float("lr", 0.01, 0.5, log=True)
        wd = trial.suggest_float("weight_decay", 1e-5, 3e-3, log=True)
    else:
        lr = trial.suggest_float("lr", 3e-4, 1e-2, log=True)
        wd = trial.suggest_float("weight_decay", 1e-5, 3e-3 if base.optimizer == "adam" else 0.2, log=True)
    return {
        "lr": lr, "weight_decay": wd,
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.15),
        "rotate": trial.suggest_float("rotate", 0.0, 20.0),
        "translate": trial.suggest_float("translate", 0.0, 0.15),
    }


def _safe_url(url: str) -> str:
    """The storage URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is reported as-is
        return url


def default_storage(runs_root: str | Path) -> str:
    return f"sqlite:///{Path(runs_root) / 'tune.db'}"


def open_storage(url: str):
    """An Optuna RDB storage, or a one-line TinyMnistError naming the URL (password hidden) and the cause."""
    import optuna

    shown = _safe_url(url)
    if "://" not in url:
        raise TinyMnistError(f"--storage {shown}: not a database URL (e.g. sqlite:///runs/tune.db or "
                             "postgresql://user:password@host/db)")
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TinyMnistError(f"--storage {shown}: cannot create {path.parent} ({e.strerror})") from None
    if url.startswith(("postgresql://", "postgres://")):
        # SQLAlchemy >= 2.1 maps a bare postgresql:// to the psycopg 3 driver; we depend on psycopg2.
        url = "postgresql+psycopg2://" + url.split("://", 1)[1]
    # Two workers starting together on a fresh database may race to create Optuna's tables; the loser sees
    # an integrity error and simply tries again. An unreachable server fails every attempt.
    last: Exception | None = None
    for attempt in range(3):
        try:
            engine_kwargs = {"pool_pre_ping": True}
            if url.startswith("postgresql"):
                engine_kwargs["connect_args"] = {"connect_timeout": 10}
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except ImportError:
            raise TinyMnistError(f"--storage {shown}: the database driver for this URL is not installed (for "
                                 "PostgreSQL: pip install psycopg2-binary)") from None
        except Exception as e:  # noqa: BLE001 - any failure to open the storage is the user's URL or server
            last = e
            if "could not connect" in str(e) or "Connection refused" in str(e):
                break
            time.sleep(0.5 * (attempt + 1))
    raise TinyMnistError(f"--storage {shown}: cannot open the study storage ({first_line(last)})") from None


def _comparable(config: TrainConfig) -> dict:
    d = config.to_dict()
    for k in NOT_COMPARED + SEARCHED:
        d.pop(k, None)
    return d


def default_base() -> TrainConfig:
    return TrainConfig(epochs=TUNE_EPOCHS, val_split=TUNE_VAL_SPLIT)


def check_study_name(name: str) -> None:
    """The study name is also a folder, RUNS_ROOT/tune/STUDY, so it follows the rule for run names (--name):
    one plain folder name, never a path that leads out of RUNS_ROOT/tune. The rule lives in TrainConfig.validate;
    a default config is valid in everything else, so any refusal is about the name."""
    TrainConfig(name=name).validate(lambda option: "--study")


def open_study(storage_url: str, study_name: str, flags: dict[str, Any], create: bool = True
               ) -> tuple[Any, TrainConfig]:
    """Create or join a study; returns it and the base config of its trials.

    The first worker records its base options in the study. A worker that joins later starts from those, so
    `--storage URL --study NAME` is enough to add trials from another machine; an option it gives explicitly
    must agree with the study's (otherwise its trials would not be comparable) and is refused if not.
    """
    import optuna

    check_study_name(study_name)
    searched = sorted(set(flags) & set(SEARCHED))
    if searched:
        raise TinyMnistError(", ".join("--" + k.replace("_", "-") for k in searched)
                             + ": tune searches this itself; leave it out")
    if "name" in flags:
        raise TinyMnistError("--name: tune names its runs itself (trial-NNNN, best-trial-NNNN-sS)")
    # Flags that cannot run are refused before the study is opened or created: a refused command leaves no
    # empty study behind (the stored options, checked again below, may still change the base).
    early = config_from_dict(flags, default_base(), source="command line")
    early.validate()
    if early.val_split <= 0:
        raise TinyMnistError("--val-split: tuning needs a validation split (> 0 held-out training images)")
    storage = open_storage(storage_url)
    if not create:
        # --trials 0 only looks at a study: a typo in --study must not create an empty one that then binds later
        # workers to whatever options this call happened to have.
        try:
            names = optuna.study.get_all_study_names(storage=storage)
        except Exception as e:  # noqa: BLE001
            where = _safe_url(storage_url)
            raise TinyMnistError(f"--storage {where}: cannot list studies ({first_line(e)})") from None
        if study_name not in names:
            known = f" (studies there: {', '.join(sorted(names))})" if names else " (it holds no study yet)"
            raise TinyMnistError(f"--study {study_name}: no such study in {_safe_url(storage_url)}{known}; "
                                 "run some trials first")
    try:
        study = optuna.create_study(
            study_name=study_name, storage=storage, direction="maximize", load_if_exists=True,
        )
    except Exception as e:  # noqa: BLE001
        raise TinyMnistError(f"--storage {_safe_url(storage_url)}: cannot open study '{study_name}' "
                             f"({first_line(e)})") from None
    saved = study.user_attrs.get("base_config")
    start = default_base() if saved is None else config_from_dict(saved, default_base(),
                                                                   source=f"study '{study_name}'")
    base = config_from_dict(flags, start, source="command line")
    # Refuse a bad base before recording it in the study: a stored base binds every later worker.
    base.validate()
    if base.val_split <= 0:
        raise TinyMnistError("--val-split: tuning needs a validation split (> 0 held-out training images)")
    check_budget(base)
    if saved is None:
        # The data must fit the options too (e.g. a --val-split larger than the training set) before they are
        # stored: a stored base that cannot run would make the study name unusable.
        from .train import prepare_data

        prepare_data(base)
    # Early epochs say little (one-cycle is still warming up), so no pruning in the first half of a trial; the
    # pruner is per process, not stored, so it can follow the base options.
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=base.epochs // 2 + 1)
    mine = _comparable(base)
    if saved is None:
        study.set_user_attr("base_config", mine)
    elif saved != mine:
        diff = ", ".join(f"{k}: {saved.get(k)!r} in the study, {mine.get(k)!r} here"
                         for k in sorted(set(mine) | set(saved)) if mine.get(k) != saved.get(k))
        raise TinyMnistError(f"--study {study_name}: was started with other options ({diff}); leave them out "
                             "or use another --study")
    return study, base


@dataclass
class TuneResult:
    study_name: str
    n_trials: int  # all trials of the study, by every worker
    best_number: int
    best_val_acc: float
    best_params: dict[str, Any]
    final_run: Path | None = None
    final_val_acc: float | None = None
    final_test_acc: float | None = None
    final_seed: int | None = None


def _run_dir_name(root: Path, stem: str) -> str:
    """`stem`, or `stem-2`, `stem-3`... if a run of that name exists (a study recreated over old runs)."""
    name, i = stem, 1
    while (root / name).exists():
        i += 1
        name = f"{stem}-{i}"
    return name


TrialCallback = Callable[[int, str, dict], None]


def make_objective(base: TrainConfig, runs_dir: Path, data=None, on_trial: TrialCallback | None = None):
    """The objective: train with the trial's options, report validation accuracy per epoch for pruning,
    return the final-epoch validation accuracy. It reads val_acc only; test numbers never reach Optuna."""
    import optuna

    if base.val_split <= 0:
        raise TinyMnistError("--val-split: tuning needs a validation split (> 0 held-out training images)")

    def objective(trial) -> float:
        params = suggest(trial, base)
        config = base.replace(**params, runs_root=str(runs_dir),
                              name=_run_dir_name(runs_dir, f"trial-{trial.number:04d}"))
        start = time.perf_counter()

        def report(m: dict) -> None:
            trial.report(m["val_acc"], m["epoch"])
            # After the last epoch there is nothing left to save: the trial completes.
            if m["epoch"] < config.epochs and trial.should_prune():
                if on_trial:
                    on_trial(trial.number, "pruned", {"epoch": m["epoch"], "val_acc": m["val_acc"], **params,
                                                      "seconds": time.perf_counter() - start})
                raise optuna.TrialPruned()

        result = train(config, on_epoch=report, data=data)
        val_acc = result.history[-1]["val_acc"]
        if on_trial:
            on_trial(trial.number, "complete", {"val_acc": val_acc, **params, "seconds": time.perf_counter() - start})
        return val_acc

    return objective


def run_trials(study, base: TrainConfig, n_trials: int, runs_dir: Path, on_trial: TrialCallback | None = None
               ) -> None:
    """Add n_trials trials to the study (other workers may be adding theirs at the same time).

    on_trial(number, state, info) for each trial: "complete" and "pruned" (from the objective), "failed" (info:
    error) and "interrupted" (Ctrl-C; the KeyboardInterrupt is then re-raised).

    Optuna's ask-and-tell loop rather than study.optimize(): optimize() logs every failed trial, a Ctrl-C
    included, as a warning with a full traceback, where the CLI wants one line of its own.
    """
    import optuna

    from .train import prepare_data

    data = prepare_data(base)  # one load shared by every trial of this worker
    objective = make_objective(base, runs_dir, data, on_trial)
    state = optuna.trial.TrialState
    for _ in range(n_trials):
        trial = study.ask()
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=state.PRUNED)
        except TinyMnistError as e:  # e.g. a diverged run: this trial fails, the search goes on
            trial.set_user_attr("error", str(e))
            study.tell(trial, state=state.FAIL)
            if on_trial:
                on_trial(trial.number, "failed", {"error": str(e)})
        except BaseException as e:
            # Optuna can neither delete a trial nor mark it "stopped by the user", and one left RUNNING would look
            # in progress forever. FAIL is its state for "ended without a value" (the sampler and the pruner skip
            # it); the "interrupted" attribute says it was no failure of the options (count_states shows it so).
            # Anything else here is a bug: the trial is closed as failed too, and the error goes on up.
            interrupted = isinstance(e, KeyboardInterrupt)
            if interrupted:
                trial.set_user_attr("interrupted", True)
            study.tell(trial, state=state.FAIL)
            if interrupted and on_trial:
                on_trial(trial.number, "interrupted", {})
            raise
        else:
            study.tell(trial, value)


def best_trial(study):
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise TinyMnistError(f"--study {study.study_name}: no completed trial yet (run some with --trials N)")
    return max(complete, key=lambda t: t.value)


def retrain_best(study, base: TrainConfig, runs_dir: Path, on_epoch=None) -> TuneResult:
    """Train the best trial's configuration once more, with a fresh seed (base seed + 1) and the same
    validation split, and evaluate it on the test set: the one time the test set is used."""
    from . import rundir

    best = best_trial(study)
    params = {k: v for k, v in best.params.items() if k in SEARCHED}
    run_dir = retrain_directory(study, base, runs_dir)
    config = retrain_config(study, base, runs_dir)
    state = retrain_state(run_dir, config)
    if state == "done":
        summary = rundir.read_summary(run_dir)  # already retrained (e.g. by another worker): reuse it
        val, test = summary["final_val_acc"], summary["final_test_acc"]
    else:
        resume = state == "partial"
        if not resume and run_dir.exists():
            for f in (rundir.METRICS, rundir.CONFIG):
                (run_dir / f).unlink(missing_ok=True)
        result = train(config, resume=resume, on_epoch=on_epoch)
        val, test = result.final_val_acc, result.final_test_acc
    return TuneResult(study.study_name, len(study.trials), best.number, best.value, params, run_dir, val, test,
                      config.seed)


def retrain_directory(study, base: TrainConfig, runs_dir: Path) -> Path:
    """Where retrain_best trains the best trial's options."""
    return runs_dir / f"best-trial-{best_trial(study).number:04d}-s{base.seed + 1}"


def retrain_config(study, base: TrainConfig, runs_dir: Path) -> TrainConfig:
    """The configuration retrain_best trains: the best trial's options on top of `base`, seed base.seed + 1."""
    best = best_trial(study)
    params = {k: v for k, v in best.params.items() if k in SEARCHED}
    name = retrain_directory(study, base, runs_dir).name
    return base.replace(**params, seed=base.seed + 1, runs_root=str(runs_dir), name=name)


def retrain_state(run_dir: Path, config: TrainConfig) -> str:
    """done (retrained and reported: retrain_best only reads it back), partial (has a checkpoint: retrain_best
    resumes it, which also writes a report missing because the run was stopped while drawing it) or new.
    A done or partial run trained with other options than `config` is refused: the folder name only says which
    trial number it retrained, and another search (a deleted or different --storage) numbers its trials alike."""
    from . import rundir
    from .config import differences
    from .report import REPORT

    # train() writes report.md last: a summary without it is a run stopped while drawing its figures.
    if (run_dir / rundir.SUMMARY).is_file() and (run_dir / REPORT).is_file():
        state = "done"
    else:
        state = "partial" if (run_dir / rundir.CHECKPOINT).is_file() else "new"
    if state != "new":
        saved, _ = rundir.read_config(run_dir)
        diff = differences(saved, config)
        if diff:
            raise TinyMnistError(f"{run_dir}: holds a retraining with other options than this study's best trial "
                                 f"({diff}); it is another search's: move it away or use another --runs-root")
    return state


def summary_of(study) -> TuneResult:
    best = best_trial(study)
    return TuneResult(study.study_name, len(study.trials), best.number, best.value, dict(best.params))


def count_states(study) -> dict[str, int]:
    """Trials by state; a trial stopped by Ctrl-C (stored as FAIL, see run_trials) counts as interrupted."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        state = "interrupted" if t.user_attrs.get("interrupted") else t.state.name.lower()
        counts[state] = counts.get(state, 0) + 1
    return counts


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def check_budget(base: TrainConfig) -> int:
    """Refuse before the first trial if the model is over the budget (dropout, the only searched option that
    touches the model, does not change its size)."""
    from . import models

    return models.check_budget(models.build_model(base.model), base.model, base.param_budget)


def runs_directory(base: TrainConfig, study_name: str) -> Path:
    return Path(base.runs_root) / TUNE_DIR / study_name
