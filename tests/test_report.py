"""Run reports on real (tiny) runs: the files every finished train writes, `evaluate` reproducing the run's own
accuracy exactly, the multi-run comparison, and one-line errors for bad input."""

import csv
import json
import os
import shutil

import pytest
import torch
from PIL import Image

from tinymnist import report, rundir
from tinymnist.cli import main
from tinymnist.config import TrainConfig
from tinymnist.errors import TinyMnistError
from tinymnist.evaluate import evaluate_run
from tinymnist.models import build_model
from tinymnist.train import train

# 800 real training images, 300 test images: a run takes a couple of seconds and still makes mistakes to show.
QUICK = dict(train_subset=800, test_subset=300, batch_size=100, threads=1, epochs=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_dir):
    """Two finished runs that differ in dropout only."""
    root = tmp_path_factory.mktemp("runs")
    a = train(TrainConfig(**QUICK, runs_root=str(root), name="drop0", dropout=0.0))
    b = train(TrainConfig(**QUICK, runs_root=str(root), name="drop2", dropout=0.2))
    return a, b


def copy_run(run, tmp_path, name="copy"):
    return shutil.copytree(run.run_dir, tmp_path / name)


def test_finished_train_writes_report_files(runs):
    run = runs[0]
    for name, min_width in (("curves.png", 1000), ("confusion.png", 500), ("misclassified.png", 500)):
        with Image.open(run.run_dir / name) as im:
            assert im.format == "PNG" and im.width >= min_width and im.height >= 300, name
    md = (run.run_dir / "report.md").read_text()
    for name in ("curves.png", "confusion.png", "misclassified.png"):
        assert f"]({name})" in md  # embedded, relative to the run directory
    summary = rundir.read_summary(run.run_dir)
    assert f"{100 * summary['final_test_acc']:.2f}%" in md
    assert "| dropout | `0.0` |" in md and "| train_subset | `800` |" in md  # the config table
    with (run.run_dir / "misclassified.csv").open() as f:
        rows = list(csv.DictReader(f))
    wrong = round((1 - summary["final_test_acc"]) * 300)
    assert len(rows) == wrong > 0
    confidences = [float(r["confidence"]) for r in rows]
    assert confidences == sorted(confidences, reverse=True)  # most confident first


def test_evaluate_reproduces_final_accuracy_exactly(runs):
    for run in runs:
        ev = evaluate_run(run.run_dir)  # from disk: saved weights, test file read again
        summary = rundir.read_summary(run.run_dir)
        assert ev.total == 300
        assert ev.accuracy == summary["final_test_acc"] == run.final_test_acc
        assert ev.loss == pytest.approx(summary["final_test_loss"], rel=1e-5)
        assert ev.confusion.sum() == 300 and ev.confusion.trace() == ev.correct
        assert len(ev.mistakes) == ev.total - ev.correct
        assert sum(c.support for c in ev.per_class) == 300
        assert not ev.warnings


def test_report_from_memory_equals_report_from_disk(runs):
    run = runs[1]
    disk = evaluate_run(run.run_dir)
    from tinymnist.train import prepare_data

    prepared = prepare_data(run.config)
    memory = evaluate_run(run.run_dir, test=(prepared.test_x, prepared.test_y))
    assert torch.equal(memory.confusion, disk.confusion)
    assert torch.equal(memory.images, disk.images)  # pixels recovered exactly from the normalised tensor
    assert [m.index for m in memory.mistakes] == [m.index for m in disk.mistakes]


def test_cli_evaluate(runs, capsys):
    run = runs[0]
    assert main(["evaluate", str(run.run_dir)]) == 0
    out = capsys.readouterr().out
    summary = rundir.read_summary(run.run_dir)
    correct = round(summary["final_test_acc"] * 300)
    assert f"{100 * summary['final_test_acc']:.2f}%  ({correct} / 300 correct)" in out
    assert "(summary.json: identical)" in out
    assert "precision" in out and "recall" in out and "confusion matrix" in out
    assert f"misclassified      {300 - correct} of 300 test images" in out

    assert main(["evaluate", str(run.run_dir), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["correct"] == correct and len(payload["confusion"]) == 10
    assert payload["accuracy"] == payload["run_final_test_acc"]
    assert len(payload["misclassified"]) == 300 - correct


def test_cli_evaluate_write_report(runs, tmp_path, capsys):
    d = copy_run(runs[0], tmp_path)
    for name in ("curves.png", "report.md", "misclassified.csv"):
        (d / name).unlink()
    assert main(["evaluate", str(d), "--write-report"]) == 0
    assert (d / "curves.png").is_file() and (d / "report.md").is_file() and (d / "misclassified.csv").is_file()


def test_evaluate_on_other_data_keeps_the_runs_report(runs, tmp_path, mnist_dir, capsys):
    """The third fresh-user trial: evaluate --write-report on other test files rewrote the run's report.md with
    their figures. A copy of MNIST whose first test label is changed stands in for other data."""
    import gzip

    d = copy_run(runs[0], tmp_path)
    other = tmp_path / "other"
    shutil.copytree(mnist_dir, other)
    labels = bytearray(gzip.decompress((other / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[8] = (labels[8] + 1) % 10
    (other / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    report_before = (d / "report.md").read_text()
    capsys.readouterr()
    assert main(["evaluate", str(d), "--data-dir", str(other), "--write-report"]) == 1
    err = capsys.readouterr().err
    assert "--write-report: not rewriting" in err and "differ from the ones it was trained with" in err
    assert (d / "report.md").read_text() == report_before
    # The same changed labels, uncompressed: the check is on the content, so it is caught too (the fourth
    # trial's case); and the unchanged data uncompressed is the same data: no warning.
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in other.glob("*.gz"):
        (raw / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    assert main(["evaluate", str(d), "--data-dir", str(raw), "--write-report"]) == 1
    assert "differ from the ones it was trained with" in capsys.readouterr().err
    official = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(official))
    assert main(["evaluate", str(d), "--data-dir", str(raw)]) == 0
    assert "warning" not in capsys.readouterr().out


def test_write_report_refuses_weights_that_are_not_the_runs(runs, tmp_path, capsys):
    d = copy_run(runs[0], tmp_path)
    (d / "model.pt").write_bytes((runs[1].run_dir / "model.pt").read_bytes())  # same model, other run
    report_before = (d / "report.md").read_text()
    capsys.readouterr()
    assert main(["evaluate", str(d), "--write-report"]) == 1
    captured = capsys.readouterr()
    assert "not the run's recorded" in captured.err and captured.err.count("\n") == 1 and not captured.out
    assert (d / "report.md").read_text() == report_before


def test_write_report_refuses_weights_nudged_so_little_the_accuracy_is_the_same(runs, tmp_path, capsys):
    d = copy_run(runs[0], tmp_path)
    saved = torch.load(d / "model.pt", weights_only=False)
    head = next(k for k in saved["state_dict"] if k.endswith("head.weight"))
    saved["state_dict"][head] = saved["state_dict"][head] * 1.0001  # the fifth trial's change: same accuracy
    torch.save(saved, d / "model.pt")
    report_before = (d / "report.md").read_text()
    capsys.readouterr()
    assert main(["evaluate", str(d), "--write-report"]) == 1
    assert "not the run's recorded" in capsys.readouterr().err
    assert (d / "report.md").read_text() == report_before
    assert main(["evaluate", str(runs[0].run_dir)]) == 0  # the run's own weights still match to the last bit
    assert "summary.json: identical" in capsys.readouterr().out


def test_evaluate_refuses_the_other_datasets_files(runs, tmp_path, capsys):
    fashion = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(fashion):
        pytest.skip("dataset-fashion-mnist not installed")
    assert main(["evaluate", str(runs[0].run_dir), "--data-dir", fashion]) == 1
    assert "this is fashion-mnist's file, not mnist's (point --data-dir at the files this run was trained on)" \
        in capsys.readouterr().err


def test_report_compares_runs(runs, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert main(["report", str(runs[0].run_dir), str(runs[1].run_dir), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["run", "dropout"]  # the one option that differs gets a column
    assert "train_subset" not in lines[0]  # options that are the same do not
    row0 = next(line for line in lines if line.startswith("drop0"))
    row2 = next(line for line in lines if line.startswith("drop2"))
    assert f"{100 * runs[0].final_test_acc:.2f}%" in row0 and f"{100 * runs[1].final_test_acc:.2f}%" in row2
    assert " 0 " in row0 and " 0.2 " in row2
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width >= 1200


def test_report_default_figure_location_and_unfinished_run(runs, tmp_path):
    cfg = TrainConfig(**{**QUICK, "epochs": 3}, runs_root=str(tmp_path), name="half")
    part = train(cfg, stop_after=1)
    assert not part.finished and not (part.run_dir / "report.md").exists()  # reports only for finished runs
    table, figure = report.compare_runs([runs[0].run_dir, part.run_dir])
    assert figure == runs[0].run_dir.parent / "comparison.png" and figure.is_file()
    assert "1/3 (unfinished)" in table


def test_tensorboard_scalars(tmp_path, mnist_dir):
    if not _has_tensorboard():
        if os.environ.get("CI"):
            pytest.fail("tensorboard is in the dev extras but not installed")
        pytest.skip("tensorboard not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(TrainConfig(**{**QUICK, "epochs": 2, "train_subset": 300, "test_subset": 100},
                               runs_root=str(tmp_path), name="tb", tensorboard=True))
    acc = EventAccumulator(str(result.run_dir / "tensorboard"))
    acc.Reload()
    test_acc = acc.Scalars("test_acc")
    assert [e.step for e in test_acc] == [1, 2]
    assert test_acc[-1].value == pytest.approx(result.final_test_acc)
    assert {"lr", "train_loss", "test_loss"} <= set(acc.Tags()["scalars"])


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------------- bad input
def one_line_error(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tinymnist: error: "), err
    return err[0]


def test_evaluate_without_weights(runs, tmp_path, capsys):
    d = copy_run(runs[0], tmp_path)
    (d / "model.pt").unlink()
    assert "model.pt: missing" in one_line_error(capsys, ["evaluate", str(d)])


def test_evaluate_not_a_run_directory(tmp_path, capsys):
    assert "config.json: missing" in one_line_error(capsys, ["evaluate", str(tmp_path)])
    assert "run directory not found" in one_line_error(capsys, ["evaluate", str(tmp_path / "nope")])


def test_report_without_metrics(runs, tmp_path, capsys):
    d = copy_run(runs[0], tmp_path)
    (d / "metrics.csv").unlink()
    msg = one_line_error(capsys, ["report", str(runs[1].run_dir), str(d)])
    assert "metrics.csv: missing" in msg and str(d) in msg


def test_weights_for_another_model_in_config(runs, tmp_path, capsys):
    d = copy_run(runs[0], tmp_path)
    payload = json.loads((d / "config.json").read_text())
    payload["config"]["model"] = "tiny8k"
    (d / "config.json").write_text(json.dumps(payload))
    msg = one_line_error(capsys, ["evaluate", str(d)])
    assert "weights are for model 'tiny20k' but config.json says 'tiny8k'" in msg


def test_weights_with_wrong_shapes(runs, tmp_path, capsys):
    d = copy_run(runs[0], tmp_path)
    torch.save({"model": "tiny20k", "dropout": 0.0, "dataset": "mnist",
                "state_dict": build_model("tiny8k").state_dict()}, d / "model.pt")
    assert "weights do not match model 'tiny20k'" in one_line_error(capsys, ["evaluate", str(d)])


def test_report_needs_a_run_and_says_so(capsys):
    # The usage line tells the truth: at least one RUN_DIR.
    with pytest.raises(SystemExit) as e:
        main(["report", "--help"])
    assert e.value.code == 0 and "report [-h] [--out PNG] RUN_DIR [RUN_DIR ...]" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["report"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert err.strip() == ("tinymnist report: error: the following arguments are required: RUN_DIR "
                           "(see: tinymnist report --help)")
    with pytest.raises(TinyMnistError, match="no run directories"):  # the library says it in one line too
        report.compare_runs([])


def test_report_out_must_be_png(runs, tmp_path, capsys):
    msg = one_line_error(capsys, ["report", str(runs[0].run_dir), "--out", str(tmp_path / "x.jpg")])
    assert "--out" in msg and ".png" in msg


@pytest.mark.parametrize("schedule", ["onecycle", "step", "none"])
def test_lr_by_step_replays_the_schedule(schedule):
    config = TrainConfig(epochs=3, batch_size=100, lr=0.05, schedule=schedule,
                         step_size=1 if schedule == "step" else 0).to_dict()
    xs, ys = report.lr_by_step(config, n_train=1000)  # 10 steps an epoch
    assert xs[0] == 0 and xs[-1] == 3 and xs == sorted(xs)
    if schedule == "onecycle":
        assert max(ys) == pytest.approx(0.05) and ys[0] == pytest.approx(0.05 / 20) and ys[-1] < 1e-3
        assert 0.4 < xs[ys.index(max(ys))] < 0.8  # the peak at 20% of the 30 steps
    elif schedule == "step":
        assert ys[xs.index(0.5)] == pytest.approx(0.05) and ys[xs.index(1.5)] == pytest.approx(0.005)
    else:
        assert set(ys) == {0.05}


def test_report_never_overwrites_a_runs_files(runs, tmp_path, capsys):
    a = copy_run(runs[0], tmp_path, "a")
    b = str(runs[1].run_dir)
    (a / "notes.png").write_bytes((a / "curves.png").read_bytes())  # the user's own picture, kept in the run
    before = {p.name: p.read_bytes() for p in a.iterdir()}
    for name in ("curves.png", "confusion.png", "misclassified.png", "notes.png"):
        msg = one_line_error(capsys, ["report", str(a), b, "--out", str(a / name)])
        assert f"a file of run directory {a}, not a comparison figure" in msg
    assert {p.name: p.read_bytes() for p in a.iterdir()} == before
    # A new name is fine, and so is replacing that comparison figure with the next one.
    out = a / "cmp.png"
    assert main(["report", str(a), b, "--out", str(out)]) == 0
    assert report.is_comparison_figure(out) and not report.is_comparison_figure(a / "curves.png")
    assert main(["report", str(a), b, "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in a.iterdir() if p.name != "cmp.png"} == before


def test_report_never_overwrites_a_users_picture_but_replaces_its_own_figure(runs, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes((runs[0].run_dir / "curves.png").read_bytes())  # a PNG that is not a comparison figure
    before = photo.read_bytes()
    msg = one_line_error(capsys, ["report", str(runs[0].run_dir), "--out", str(photo)])
    assert "is not an earlier comparison figure" in msg and photo.read_bytes() == before
    out = tmp_path / "cmp.png"
    assert main(["report", str(runs[0].run_dir), "--out", str(out)]) == 0
    assert main(["report", str(runs[0].run_dir), str(runs[1].run_dir), "--out", str(out)]) == 0  # replaced
