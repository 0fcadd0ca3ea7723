"""Tuning: selection on validation only, pruning, SQLite studies, and several workers sharing a PostgreSQL study."""

import glob
import importlib
import json
import math
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from tinymnist import rundir, tune
from tinymnist.cli import main
from tinymnist.config import TrainConfig
from tinymnist.errors import TinyMnistError
from tinymnist.train import RunResult

QUICK = ["--epochs", "2", "--train-subset", "300", "--val-split", "200", "--test-subset", "200", "--threads", "1",
         "--model", "tiny1k", "--batch-size", "50"]


class FakeTrain:
    """Stands in for train(): validation accuracy peaks at lr = 0.05, test accuracy is its mirror image, so a
    search that looked at the test set would pick the opposite end of the range."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, resume=False, on_epoch=None, on_batch=None, stop_after=None, data=None):
        assert config.val_split > 0
        self.calls.append(config)
        quality = math.exp(-abs(math.log(config.lr / 0.05)))  # 1 at lr=0.05, smaller either side
        history = []
        for epoch in range(1, config.epochs + 1):
            m = {"epoch": epoch, "val_acc": quality * epoch / config.epochs,
                 "test_acc": 1 - quality * epoch / config.epochs}
            history.append(m)
            config.epochs_run = epoch
            if on_epoch:
                on_epoch(m)  # raises optuna.TrialPruned when the pruner gives up on this trial
        return RunResult(Path(config.runs_root) / config.name, config, 100, history, 1.0, True)


def test_search_selects_on_validation_and_prunes(tmp_path, monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr(tune, "train", fake)
    base = TrainConfig(epochs=6, val_split=100)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1))
    objective = tune.make_objective(base, tmp_path)
    study.optimize(objective, n_trials=16)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "hopeless trials should be pruned"
    assert all(c.epochs_run < 6 for c, t in zip(fake.calls, study.trials, strict=True)
               if t.state == optuna.trial.TrialState.PRUNED)  # stopped early, not just marked
    for t in complete:  # the objective is the final-epoch validation accuracy, never the test accuracy
        assert t.value == pytest.approx(math.exp(-abs(math.log(t.params["lr"] / 0.05))))
    best = tune.best_trial(study)
    assert best.value == max(t.value for t in complete)

    final = tune.retrain_best(study, base, tmp_path)
    retrained = fake.calls[-1]
    assert retrained.lr == best.params["lr"] and retrained.seed == base.seed + 1
    assert retrained.val_split == base.val_split
    assert final.best_val_acc == best.value and final.final_test_acc == pytest.approx(1 - final.final_val_acc)


def test_objective_refuses_to_run_without_a_validation_split(tmp_path):
    with pytest.raises(TinyMnistError, match="--val-split: tuning needs a validation split"):
        tune.make_objective(TrainConfig(val_split=0), tmp_path)


def test_sqlite_study_end_to_end(tmp_path, mnist_dir, capsys):
    """A few real (tiny) trials in the default SQLite storage, then the best retrained and tested once."""
    args = ["tune", "--trials", "3", "--runs-root", str(tmp_path), "--study", "s", *QUICK]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "objective: final-epoch validation accuracy on 200 held-out training images" in out
    assert "study now has 3 trial(s)" in out and "best trial         #" in out
    assert "final test acc" in out and "the reported figure" in out
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'tune.db'}")
    assert len(study.trials) == 3
    retrained = list((tmp_path / "tune" / "s").glob("best-trial-*-s1"))
    assert len(retrained) == 1 and (retrained[0] / "summary.json").is_file()

    # --trials 0: no new trial; the finished retrain is reused, not redone, and the output says so.
    stamp = (retrained[0] / "summary.json").stat().st_mtime_ns
    assert main(["tune", "--trials", "0", "--runs-root", str(tmp_path), "--study", "s"]) == 0
    out = capsys.readouterr().out
    assert "study now has 3 trial(s)" in out
    assert "retrained already: reporting that run" in out and "retraining" not in out
    assert (retrained[0] / "summary.json").stat().st_mtime_ns == stamp

    # joining the study with different options would make trials incomparable
    assert main(["tune", "--trials", "1", "--runs-root", str(tmp_path), "--study", "s", "--epochs", "5"]) == 1
    assert "was started with other options (epochs: 2 in the study, 5 here)" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--storage", "postgresql://me:secret@127.0.0.1:1/db"], "--storage postgresql://me:***@127.0.0.1:1/db: "
                                                              "cannot open the study storage"),
    (["--storage", "not a url"], "--storage not a url: not a database URL"),
    (["--lr", "0.1"], "--lr: tune searches this itself"),
    (["--val-split", "0"], "--val-split: tuning needs a validation split"),
    (["--model", "seed", "--param-budget", "1000"], "over the budget of 1,000"),
    (["--trials", "-1"], "--trials: must not be negative"),
    (["--study", "../x"], "--study: must be a plain folder name"),
    (["--study", "/tmp/abs"], "--study: must be a plain folder name"),
    (["--study", ""], "--study: must be a plain folder name"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert main(["tune", "--runs-root", str(tmp_path), *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert "secret" not in err[0]


def test_study_name_outside_runs_tune_creates_nothing(tmp_path, capsys):
    assert main(["tune", "--runs-root", str(tmp_path / "runs"), "--study", "../escape"]) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


def test_ctrl_c_is_one_line_and_the_trial_is_marked_interrupted(tmp_path, monkeypatch, capfd):
    """Ctrl-C in the second trial: no Optuna warning or traceback (capfd sees Optuna's own stderr handler too),
    exit 130, and the trial is closed in the study as interrupted, not counted as a failed set of options."""
    fake = FakeTrain()

    def train_then_interrupt(config, **kwargs):
        if len(fake.calls) == 1:
            raise KeyboardInterrupt
        return fake(config, **kwargs)

    monkeypatch.setattr(tune, "train", train_then_interrupt)
    # The fake needs no data. (The module, not the package's `train` function of the same name.)
    monkeypatch.setattr(importlib.import_module("tinymnist.train"), "prepare_data", lambda config: None)
    assert main(["tune", "--trials", "3", "--runs-root", str(tmp_path), "--study", "k", *QUICK]) == 130
    out, err = capfd.readouterr()
    assert "trial    0  complete" in out and "trial    1  interrupted" in out and "trial    2" not in out
    assert err.strip().splitlines() == ["interrupted: the finished trials are saved in the study; run the command "
                                        "again to add more"]
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{tmp_path / 'tune.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert study.trials[1].user_attrs == {"interrupted": True}
    assert tune.count_states(study) == {"complete": 1, "interrupted": 1}


def test_help_shows_tune_defaults_and_not_the_searched_options(capsys):
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert f"--epochs EPOCHS passes over the training set in each trial and the final retraining (default: " \
           f"{tune.TUNE_EPOCHS})" in out
    assert f"--val-split VAL_SPLIT training images held out to score the trials on (default: {tune.TUNE_VAL_SPLIT};" \
           in out
    for flag in ("--lr LR", "--dropout DROPOUT", "--weight-decay WEIGHT", "--augment {", "--rotate ROTATE",
                 "--name NAME"):
        assert flag not in out, flag


def test_retrain_state(tmp_path):
    run = tmp_path / "best-trial-0001-s1"
    config = TrainConfig(lr=0.05, seed=1, val_split=100)
    assert tune.retrain_state(run, config) == "new"
    run.mkdir()
    rundir.write_config(run, config, 994, {})
    (run / "checkpoint.pt").write_bytes(b"")
    (run / "summary.json").write_text("{}")
    assert tune.retrain_state(run, config) == "partial"  # stopped while writing its report: resumed, which writes it
    (run / "report.md").write_text("")
    assert tune.retrain_state(run, config) == "done"
    # Another search (a deleted tune.db, another --storage) numbers its trials alike: its retraining of trial 1
    # must not be reported as this search's, nor resumed with these options.
    with pytest.raises(TinyMnistError, match=r"other options than this study's best trial \(lr: 0.05 there, 0.1 now"):
        tune.retrain_state(run, config.replace(lr=0.1))
    (run / "report.md").unlink()
    with pytest.raises(TinyMnistError, match="another search's"):
        tune.retrain_state(run, config.replace(lr=0.1))


def test_tune_refuses_to_report_another_searchs_retraining(tmp_path, mnist_dir, capsys):
    """The fresh-user trial's case: a retraining folder left by another search (its database deleted, or another
    --storage) under the name this study's best trial would use. Simulated by changing the saved run's options."""
    assert main(["tune", "--trials", "1", "--runs-root", str(tmp_path), "--study", "s", *QUICK]) == 0
    retrained = next((tmp_path / "tune" / "s").glob("best-trial-0000-s1"))
    payload = json.loads((retrained / "config.json").read_text())
    payload["config"]["lr"] *= 2  # another search's trial 0 drew another learning rate
    (retrained / "config.json").write_text(json.dumps(payload))
    summary = (retrained / "summary.json").read_text()
    capsys.readouterr()
    assert main(["tune", "--trials", "0", "--runs-root", str(tmp_path), "--study", "s"]) == 1
    captured = capsys.readouterr()
    assert "another search's" in captured.err and captured.err.count("\n") == 1
    assert "final test acc" not in captured.out  # nothing reported as this search's result
    assert (retrained / "summary.json").read_text() == summary  # the old run is left alone


def test_refused_options_are_not_recorded_in_the_study(tmp_path, capsys):
    """A worker refused for a bad option must not bind the study to that option for the next worker."""
    assert main(["tune", "--runs-root", str(tmp_path), "--study", "x", "--val-split", "0"]) == 1
    assert main(["tune", "--runs-root", str(tmp_path), "--study", "x", "--model", "seed", "--param-budget",
                 "1000"]) == 1
    study = optuna.load_study(study_name="x", storage=f"sqlite:///{tmp_path / 'tune.db'}")
    assert "base_config" not in study.user_attrs and not study.trials


# ------------------------------------------------------------------------------------------------ PostgreSQL
def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} (.ci/run installs it with apt-get install postgresql)")
    pytest.skip(what)


def _server_bin() -> Path | None:
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("initdb")).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on a free localhost port, with an empty database; removed afterwards."""
    bindir = _server_bin()
    if bindir is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl) not found")
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the 'postgres' system user
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            _missing("running as root and there is no 'postgres' user to run the server as")
    home = Path(tempfile.mkdtemp(prefix="tinymnist-pg-"))
    if user:
        shutil.chown(home, user)
    port = _free_port()

    def pg(*args):
        return subprocess.run([str(bindir / args[0]), *args[1:]], user=user, cwd=home, capture_output=True,
                              text=True, timeout=120)

    r = pg("initdb", "-D", str(home / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
    assert r.returncode == 0, r.stderr
    r = pg("pg_ctl", "-D", str(home / "data"), "-l", str(home / "log"), "-w", "-t", "60", "-o",
           f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -F", "start")
    assert r.returncode == 0, r.stderr + (home / "log").read_text()
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE tinymnist_test")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/tinymnist_test"
    finally:
        pg("pg_ctl", "-D", str(home / "data"), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study(tmp_path, mnist_dir, postgres_url):
    """Two `tinymnist tune` processes (think: two machines, each its own runs folder) add trials to one study."""
    per_worker = 3
    workers = [subprocess.Popen(
        [sys.executable, "-m", "tinymnist", "tune", "--storage", postgres_url, "--study", "shared", "--no-retrain",
         "--trials", str(per_worker), "--runs-root", str(tmp_path / f"machine{i}"), *QUICK],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for w, (out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
        assert f"running {per_worker} trial(s)" in out
    storage = "postgresql+psycopg2://" + postgres_url.split("://", 1)[1]
    study = optuna.load_study(study_name="shared", storage=storage)
    states = {t.state for t in study.trials}
    assert len(study.trials) == 2 * per_worker
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert sorted(t.number for t in study.trials) == list(range(2 * per_worker))
    # each worker wrote its own trials' run directories on its own "machine"
    dirs = [sorted(p.name for p in (tmp_path / f"machine{i}" / "tune" / "shared").iterdir()) for i in range(2)]
    assert len(dirs[0]) == len(dirs[1]) == per_worker and not set(dirs[0]) & set(dirs[1])


def test_trials_0_on_an_unknown_study_creates_nothing(tmp_path, capsys):
    msg_args = ["tune", "--trials", "0", "--runs-root", str(tmp_path), "--study", "typo"]
    assert main(msg_args) == 1
    assert "--study typo: no such study" in capsys.readouterr().err
    assert "typo" not in optuna.get_all_study_names(storage=f"sqlite:///{tmp_path / 'tune.db'}")


def test_options_that_cannot_run_are_not_stored_in_a_new_study(tmp_path, mnist_dir, capsys):
    args = ["tune", "--trials", "1", "--runs-root", str(tmp_path), "--study", "vs", "--val-split", "70000"]
    assert main(args) == 1
    assert "--val-split: must be below the 60,000 training images, got 70,000" in capsys.readouterr().err
    study = optuna.load_study(study_name="vs", storage=f"sqlite:///{tmp_path / 'tune.db'}")
    assert "base_config" not in study.user_attrs  # the name stays usable with sensible options


def test_the_no_retrain_hint_finds_the_study_again(tmp_path, monkeypatch, capsys):
    """The printed follow-up command must work as printed, also with a --runs-root other than the default."""
    import shlex

    monkeypatch.setattr(tune, "train", FakeTrain())
    root = tmp_path / "my runs"
    assert main(["tune", *QUICK, "--trials", "2", "--no-retrain", "--runs-root", str(root)]) == 0
    hint = capsys.readouterr().out.split("evaluate the winner with: ")[1].strip()
    assert f"--runs-root '{root}'" in hint
    args = shlex.split(hint)
    assert args[0] == "tinymnist"
    assert main([*args[1:], "--no-retrain"]) == 0  # the same study, found where the hint says
    assert "study 'tinymnist-tiny1k' in sqlite:///" in (out := capsys.readouterr().out)
    assert "2 trial(s) so far" in out
