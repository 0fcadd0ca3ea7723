"""The CLI as a user meets it: help texts, one-line errors with a non-zero exit, the summary table."""

import subprocess
import sys
from pathlib import Path

import pytest

from tinymnist.cli import main

ZOO_GRID = str(Path(__file__).parents[1] / "benchmarks" / "configs" / "zoo.toml")


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinymnist", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_help_explains_every_train_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--epochs", "--lr", "--schedule", "--dropout", "--rotate", "--translate",
                   "--val-split", "--resume", "--config", "--param-budget", "--seed", "--optimizer"):
        assert option in out


def test_top_level_help():
    r = run_cli("--help")
    assert r.returncode == 0 and "train" in r.stdout and "summary" in r.stdout


def test_summary_of_seed(capsys):
    assert main(["summary", "seed"]) == 0
    out = capsys.readouterr().out
    assert "total trainable parameters: 19,349" in out and "RF" in out


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--epochs", "0"], "--epochs: must be a positive integer"),
        (["--model", "resnet"], "--model: unknown model 'resnet'"),
        (["--schedule", "wavy"], "--schedule: unknown schedule 'wavy'"),
        (["--lr", "-1"], "--lr: must be a positive number"),
        (["--lr", "inf"], "--lr: must be a positive number"),
        (["--name", " "], "--name: must be a plain folder name"),
        (["--seed", "99999999999999999999"], "--seed: must be between 0 and 2**63 - 1"),
        (["--runs-root", ""], "--runs-root: must not be empty"),
        (["--config", "/nonexistent.toml"], "/nonexistent.toml: config file not found"),
        (["--data-dir", "/nonexistent-tinymnist"], "--data-dir /nonexistent-tinymnist: no such folder"),
        (["--data-dir", "/"], "--data-dir /: no mnist IDX files there"),
        (["--runs-root", "/proc/forbidden"], "cannot write the run directory"),
        (["--model", "seed", "--param-budget", "1000"], "over the budget of 1,000"),
        (["--momentum", "1.5"], "--momentum: must be below 1"),
        (["--rotate", "400"], "--rotate: is a maximum angle in degrees and must be at most 180"),
        (["--epochs", "x"], "tinymnist train: error: argument --epochs: invalid int value: 'x'"),
        (["--momentum", "nan"], "--momentum: must be a finite number, got nan"),
        (["--weight-decay", "inf"], "--weight-decay: must be a finite number, got inf"),
        (["--rotate", "nan"], "--rotate: must be a finite number"),
        (["--translate", "nan"], "--translate: must be a finite number"),
        (["--data-dir", "/etc/passwd"], "--data-dir /etc/passwd: is a file, not a folder"),
        (["--train-subset", "70000"], "--train-subset: there are only 60,000 training images, got 70,000"),
        (["--val-split", "5000", "--train-subset", "58000"],
         "--train-subset: there are only 55,000 training images once 5,000 are held out for validation, got 58,000"),
        (["--test-subset", "20000"], "--test-subset: there are only 10,000 test images, got 20,000"),
        (["--val-split", "60000"], "--val-split: must be below the 60,000 training images, got 60,000"),
        (["--data-dir", ""], "--data-dir: must not be empty"),
        (["--threads", "100000"], "--threads: this machine has"),
        (["--config", ZOO_GRID], "zoo.toml: unknown option(s) config (a grid file of configurations: run it "
                                 "with `tinymnist experiment FILE`)"),
        (["--step-size", "5"], "--step-size: only applies to the step schedule (the schedule is 'onecycle')"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, args, expected):
    r = run_cli("train", "--runs-root", str(tmp_path), "--train-subset", "200", "--test-subset", "100", *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    if "--runs-root" not in args and "--config" not in args:
        assert not any(tmp_path.iterdir()), "a refused run must not leave a folder behind"


def test_experiment_refuses_a_wrong_data_dir_before_creating_anything(tmp_path):
    root = tmp_path / "runs"
    r = run_cli("experiment", "dropout", "--seeds", "1", "--runs-root", str(root), "--data-dir", str(tmp_path))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--data-dir {tmp_path}: no mnist IDX files there" in lines[0], r.stderr
    assert not root.exists() and r.stdout == ""


def test_malformed_config_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    r = run_cli("train", "--config", str(bad))
    assert r.returncode == 1 and "not valid TOML" in r.stderr and "Traceback" not in r.stderr
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('epochs = "many"\n')
    r = run_cli("train", "--config", str(wrong))
    assert r.returncode == 1 and "option 'epochs' has the wrong type" in r.stderr


def test_a_bad_value_from_the_config_file_names_the_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("lr = -1.0\n")
    r = run_cli("train", "--config", str(cfg), "--runs-root", str(tmp_path))
    assert r.returncode == 1 and f"{cfg}: option 'lr': must be a positive number" in r.stderr, r.stderr
    # the same bad value given as a flag is named as the flag, even with a config file
    r = run_cli("train", "--config", str(cfg), "--lr", "-2", "--runs-root", str(tmp_path))
    assert r.returncode == 1 and r.stderr.startswith("tinymnist: error: --lr: must be a positive number"), r.stderr


def test_config_file_with_options_both_at_top_level_and_under_train_is_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("epochs = 1\n[train]\nepochs = 2\n")
    r = run_cli("train", "--config", str(cfg), "--runs-root", str(tmp_path))
    assert r.returncode == 1 and "either at the top level or under [train], not both" in r.stderr, r.stderr


def test_resume_refuses_options_that_would_change_the_run(tmp_path):
    r = run_cli("train", "--runs-root", str(tmp_path), "--name", "r", "--epochs", "1", "--train-subset", "300",
                "--test-subset", "200")
    assert r.returncode == 0, r.stderr
    before = (tmp_path / "r" / "metrics.csv").read_bytes()
    r = run_cli("train", "--resume", str(tmp_path / "r"), "--epochs", "3", "--lr", "0.5")
    assert r.returncode == 1 and "--epochs, --lr cannot change it" in r.stderr, r.stderr
    assert (tmp_path / "r" / "metrics.csv").read_bytes() == before


def test_resume_of_a_file_says_it_is_not_a_run_directory(tmp_path):
    f = tmp_path / "notes.md"
    f.write_text("mine")
    r = run_cli("train", "--resume", str(f))
    assert r.returncode == 1 and "is a file, not a run directory" in r.stderr and f.read_text() == "mine"


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("tinymnist ")


def test_config_file_and_flags_flags_win(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\nepochs = 1\nmodel = "tiny1k"\ntrain_subset = 300\ntest_subset = 200\n')
    r = run_cli("train", "--config", str(cfg), "--model", "tiny8k", "--runs-root", str(tmp_path), "--name", "x")
    assert r.returncode == 0, r.stderr
    assert "tiny8k" in r.stdout and "final test acc" in r.stdout and "best epoch" in r.stdout
    assert (tmp_path / "x" / "model.pt").exists()


def test_resume_of_missing_run(tmp_path):
    r = run_cli("train", "--resume", str(tmp_path / "nope"))
    assert r.returncode == 1 and "run directory not found" in r.stderr


def test_resume_without_a_checkpoint_says_what_it_will_do(tmp_path, mnist_dir, capsys):
    """The fourth trial: a run whose checkpoint.pt was deleted after epochs were recorded was told "no epoch had
    been saved" and retrained silently; a finished run without one printed that and then an error."""
    args = ["train", "--model", "tiny1k", "--epochs", "2", "--train-subset", "300", "--test-subset", "100",
            "--batch-size", "50", "--threads", "1", "--runs-root", str(tmp_path)]
    assert main([*args, "--name", "done"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "done")]) == 0  # a finished run: says what it does
    assert "it had finished; its final weights, summary and report are written again" in capsys.readouterr().out
    (tmp_path / "done" / "checkpoint.pt").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "done")]) == 1
    captured = capsys.readouterr()
    assert "no checkpoint to resume from" in captured.err and "trains again" not in captured.out
    (tmp_path / "done" / "summary.json").unlink()  # as if stopped after its last epoch, before the summary
    assert main(["train", "--resume", str(tmp_path / "done")]) == 0
    assert "its checkpoint.pt is missing, so its 2 recorded epoch(s) are trained again from epoch 1" \
        in capsys.readouterr().out


def test_data_check_reports_official_status():
    r = run_cli("data", "check")
    assert r.returncode == 0, r.stderr
    assert "t10k-images-idx3-ubyte.gz" in r.stdout and "matches the official release" in r.stdout
    assert "differs from the official release checksum" in r.stdout
    assert "expected for the offline MNIST copy's training images" in r.stdout


def test_mnist_files_are_refused_as_fashion_mnist(mnist_dir):
    r = run_cli("data", "check", "--dataset", "fashion-mnist", "--data-dir", str(mnist_dir))
    assert r.returncode == 1 and "this is mnist's file, not fashion-mnist's" in r.stderr, r.stderr


def test_data_check_on_corrupt_dir(tmp_path):
    from conftest import make_dataset_dir

    d = make_dataset_dir(tmp_path / "d")
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    r = run_cli("data", "check", "--data-dir", str(d))
    assert r.returncode == 1 and "t10k-labels-idx1-ubyte.gz" in r.stderr and "Traceback" not in r.stderr


def test_a_config_file_may_name_an_augmentation_preset(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('augment = "strong"\nepochs = 1\ntrain_subset = 300\ntest_subset = 200\n')
    r = run_cli("train", "--config", str(cfg), "--runs-root", str(tmp_path), "--name", "a", "--threads", "1")
    assert r.returncode == 0 and "rotate ±20°, shift ±0.15" in r.stdout, r.stderr
    # a new run inside that run's folder is refused: its files would mix with the run's
    r = run_cli("train", "--runs-root", str(tmp_path / "a"), "--name", "n", "--train-subset", "300")
    assert r.returncode == 1 and "is a run directory; choose a folder outside it" in r.stderr, r.stderr
    assert not (tmp_path / "a" / "n").exists()
    cfg.write_text('augment = "huge"\n')
    r = run_cli("train", "--config", str(cfg), "--runs-root", str(tmp_path))
    assert r.returncode == 1 and "option 'augment' must be one of" in r.stderr


def test_interrupt_before_the_run_directory_is_written_says_to_start_again(tmp_path, mnist_dir, capsys, monkeypatch):
    """The fifth trial: Ctrl-C during start-up suggested --resume of a folder that held nothing to resume."""
    import importlib

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # the module, not the package's re-exported train() function of the same name
    monkeypatch.setattr(importlib.import_module("tinymnist.train"), "train", interrupted)
    assert main(["train", "--epochs", "1", "--train-subset", "200", "--test-subset", "100",
                 "--runs-root", str(tmp_path), "--name", "r"]) == 130
    err = capsys.readouterr().err
    assert "interrupted before training started; run the same command again" in err and "--resume" not in err


def test_a_second_resume_of_a_run_being_trained_is_refused(tmp_path, mnist_dir):
    """The sixth trial: two `--resume` of one run at once both trained it, each appending every epoch to its
    metrics.csv. Here the first is stood in for by a lock held the way a running --resume holds it."""
    import fcntl

    assert main(["train", "--model", "tiny1k", "--epochs", "1", "--train-subset", "300", "--test-subset", "100",
                 "--batch-size", "50", "--threads", "1", "--runs-root", str(tmp_path), "--name", "r"]) == 0
    metrics = (tmp_path / "r" / "metrics.csv").read_text()
    with open(tmp_path / "r" / ".resume.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = run_cli("train", "--resume", str(tmp_path / "r"))
    assert r.returncode == 1 and "another --resume of this run is training it right now" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and (tmp_path / "r" / "metrics.csv").read_text() == metrics
    assert run_cli("train", "--resume", str(tmp_path / "r")).returncode == 0  # the lock went with its holder
