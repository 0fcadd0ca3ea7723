"""Experiments: suite expansion, grid files, refusals before any run, aggregation math, resumability, outputs."""

import csv
import json
import statistics

import pytest

from tinymnist import experiment as ex
from tinymnist import rundir
from tinymnist.augment import PRESETS
from tinymnist.cli import main
from tinymnist.config import TrainConfig
from tinymnist.errors import TinyMnistError
from tinymnist.models import build_model, count_parameters
from tinymnist.train import train

# Small but real: each run trains on 300 real images and tests on 200, one thread.
QUICK = {"model": "tiny1k", "train_subset": 300, "test_subset": 200, "batch_size": 50}


def write_grid(tmp_path, text, name="grid.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------- expansion
@pytest.mark.parametrize("name", ["dropout", "schedule", "augmentation", "optimizer"])
def test_builtin_suite_expands_to_configs_times_seeds(tmp_path, name):
    suite = ex.load_suite(name)
    plan = ex.plan_suite(suite, {"runs_root": str(tmp_path)}, seeds=3, first_seed=10)
    assert len(plan.runs) == 3 * len(suite.configs) and plan.seeds == [10, 11, 12]
    assert plan.directory == tmp_path / "experiments" / name
    for run in plan.runs:
        overrides = dict(suite.configs)[run.label]
        assert run.run_dir == tmp_path / "experiments" / name / f"{run.label}-s{run.seed}"
        assert run.config.seed == run.seed and run.config.epochs == ex.SUITE_EPOCHS
        for key, value in overrides.items():
            assert getattr(run.config, key) == value
        assert run.params == count_parameters(build_model(run.config.model, run.config.dropout))
        assert run.state == "new"
    assert not plan.directory.exists()  # planning writes nothing


def test_suite_contents_match_the_issue():
    assert [o["dropout"] for _, o in ex.SUITES["dropout"][1]] == [0.0, 0.05, 0.1, 0.2, 0.3]
    assert [o["schedule"] for _, o in ex.SUITES["schedule"][1]] == ["none", "step", "cosine", "onecycle"]
    aug = dict(ex.load_suite("augmentation").configs)
    assert list(aug) == list(PRESETS) and all((o["rotate"], o["translate"]) == PRESETS[k] for k, o in aug.items())
    assert [o["model"] for _, o in ex.SUITES["architecture"][1]] == ["seed", "seed-gap", "seed-1x1"]
    assert [o["optimizer"] for _, o in ex.SUITES["optimizer"][1]] == ["sgd", "adam", "adamw"]


def test_architecture_suite_uses_registry_counts(tmp_path):
    """Either every model fits the budget and the plan carries the registry's counts, or the suite is refused
    naming exactly the models that do not fit (the models are being resized, so no count is hard-coded)."""
    suite = ex.load_suite("architecture")
    counts = {label: count_parameters(build_model(o["model"])) for label, o in suite.configs}
    over = [label for label, n in counts.items() if n > 20_000]
    if over:
        with pytest.raises(TinyMnistError, match="over the parameter budget") as e:
            ex.plan_suite(suite, {"runs_root": str(tmp_path)}, seeds=1)
        assert all(f"{label} (" in str(e.value) for label in over)
        assert not any(f"{label} (" in str(e.value) for label in counts if label not in over)
    else:
        plan = ex.plan_suite(suite, {"runs_root": str(tmp_path)}, seeds=1)
        assert {r.label: r.params for r in plan.runs} == counts


def test_flags_apply_to_every_config_but_may_not_clash(tmp_path):
    plan = ex.plan_suite(ex.load_suite("dropout"), {"runs_root": str(tmp_path), "epochs": 3, "model": "tiny8k"})
    assert all(r.config.epochs == 3 and r.config.model == "tiny8k" for r in plan.runs)
    with pytest.raises(TinyMnistError, match="--dropout: the 'dropout' suite varies this itself"):
        ex.plan_suite(ex.load_suite("dropout"), {"dropout": 0.1})
    with pytest.raises(TinyMnistError, match="--name"):
        ex.plan_suite(ex.load_suite("dropout"), {"name": "x"})
    with pytest.raises(TinyMnistError, match="--seeds"):
        ex.plan_suite(ex.load_suite("dropout"), {}, seeds=0)


def test_unknown_suite():
    with pytest.raises(TinyMnistError, match="unknown suite 'bogus' .*dropout, schedule"):
        ex.load_suite("bogus")


# ---------------------------------------------------------------------------------------------- grid files
def test_grid_file_explicit_configs(tmp_path):
    path = write_grid(tmp_path, '[base]\nmodel = "tiny8k"\nepochs = 4\n'
                                '[[config]]\nlabel = "low"\ndropout = 0.05\n'
                                '[[config]]\naugment = "strong"\n')
    suite = ex.load_suite(str(path))
    assert suite.name == "grid" and suite.base == {"model": "tiny8k", "epochs": 4}
    assert suite.configs == [("low", {"dropout": 0.05}), ("rotate-20_translate-0.15", {"rotate": 20.0,
                                                                                       "translate": 0.15})]
    plan = ex.plan_suite(suite, {"runs_root": str(tmp_path), "epochs": 2}, seeds=1)
    assert all(r.config.model == "tiny8k" and r.config.epochs == 2 for r in plan.runs)  # flags beat [base]
    # the plan states what every configuration shares, not only what each one changes
    assert "\n  shared options: model=tiny8k\n" in ex.describe_plan(plan)


@pytest.mark.parametrize("text,expected", [
    ('[base]\nepochs = 0\n[[config]]\nlabel = "a"\n', "{path}: [base]: option 'epochs': must be a positive integer"),
    ('[[config]]\nlabel = "a"\nlr = -1\n',
     "suite 'grid' ({path}): invalid configuration(s), nothing was run: a: option 'lr': must be a positive number"),
    # checked against the data at planning time, so also by --dry-run
    ('[base]\ntrain_subset = 70000\n[[config]]\nlabel = "a"\n',
     "{path}: [base]: option 'train_subset': there are only 60,000 training images, got 70,000"),
    ('[base]\nval_split = 5000\n[[config]]\nlabel = "a"\ntrain_subset = 59000\n[[config]]\nlabel = "b"\n'
     'test_subset = 20000\n',
     "nothing was run: a: option 'train_subset': there are only 55,000 training images once 5,000 are held out "
     "for validation, got 59,000; b: option 'test_subset': there are only 10,000 test images, got 20,000"),
    ('[base]\ndata_dir = "/nonexistent-tinymnist"\n[[config]]\nlabel = "a"\n',
     "{path}: [base]: option 'data_dir' = '/nonexistent-tinymnist': no such folder"),
    ('[[config]]\nlabel = "a"\ndata_dir = "/nonexistent-tinymnist"\n',
     "suite 'grid' ({path}): a: option 'data_dir' = '/nonexistent-tinymnist': no such folder"),
])
def test_a_bad_value_in_a_grid_file_names_the_file_not_a_flag(tmp_path, text, expected):
    path = write_grid(tmp_path, text)
    with pytest.raises(TinyMnistError) as e:
        ex.plan_suite(ex.load_suite(str(path)), {"runs_root": str(tmp_path)}, seeds=1)
    assert expected.format(path=path) in str(e.value) and "--" not in str(e.value)


def test_a_foreign_folder_where_a_run_would_go_is_refused_when_planning(tmp_path):
    suite = ex.Suite("s", "test", [("a", {"dropout": 0.0})])
    run_dir = ex.suite_directory(str(tmp_path), "s") / "a-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(TinyMnistError, match="a-s0: folder exists, is not empty and holds no tinymnist run"):
        ex.plan_suite(suite, {"runs_root": str(tmp_path)}, seeds=1)
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_grid_labels_keep_every_digit_that_tells_values_apart(tmp_path):
    path = write_grid(tmp_path, "[grid]\ndropout = [0.1234567, 0.1234568, 0.1]\nrotate = [5.0]\n")
    labels = [label for label, _ in ex.load_suite(str(path)).configs]
    assert labels == ["dropout-0.1234567_rotate-5", "dropout-0.1234568_rotate-5", "dropout-0.1_rotate-5"]


def test_grid_labels_made_up_for_paths_are_folder_names(tmp_path):
    # No label given and a value a folder name cannot hold: the label is made safe, not refused as if the user
    # had written it (the fresh-user trial got "label 'data_dir-/nonexistent' must be letters, digits...").
    path = write_grid(tmp_path, '[[config]]\ndata_dir = "/some/where"\n[[config]]\nlr = 0.1\n')
    labels = [label for label, _ in ex.load_suite(str(path)).configs]
    assert labels == ["data_dir-_some_where", "lr-0.1"]


def test_plan_columns_stay_aligned_with_long_model_names(tmp_path):
    path = write_grid(tmp_path, '[[config]]\nmodel = "tiny1k"\n[[config]]\nmodel = "tiny1k-deep7"\n')
    plan = ex.plan_suite(ex.load_suite(str(path)), {"runs_root": str(tmp_path)}, seeds=1)
    rows = [line for line in ex.describe_plan(plan).splitlines() if line.endswith("[1 new]")]
    assert len(rows) == 2 and rows[0].index("params") == rows[1].index("params"), rows


def test_grid_file_cartesian_product(tmp_path):
    path = write_grid(tmp_path, 'name = "lr-wd"\n[grid]\nlr = [0.02, 0.05]\nweight_decay = [0.0, 1e-4, 5e-4]\n')
    suite = ex.load_suite(str(path))
    assert suite.name == "lr-wd" and len(suite.configs) == 6
    assert suite.configs[0] == ("lr-0.02_weight_decay-0", {"lr": 0.02, "weight_decay": 0.0})
    assert {tuple(o.values()) for _, o in suite.configs} == {(a, b) for a in (0.02, 0.05) for b in (0.0, 1e-4, 5e-4)}


@pytest.mark.parametrize("text,message", [
    ("[grid\n", "not valid TOML"),
    ("[grid]\nlr = [0.1]\n[[config]]\nlr = 0.1\n", "exactly one of"),
    ("[base]\nepochs = 1\n", "exactly one of"),
    ("[grid]\nlr = []\n", "lr must be a non-empty list"),
    ("[grid]\nlearning_rate = [0.1]\n", "unknown option\\(s\\) learning_rate"),
    ('[grid]\nepochs = ["many"]\n', "option 'epochs' has the wrong type"),
    ("[grid]\nseed = [1, 2]\n", "seed cannot be set in a grid .the runner sets it; seeds come from --seeds/--seed"),
    ("[grid]\nthreads = [3]\n", "threads cannot be set in a grid .the runner sets it; threads per run come from "
                                 "--threads/--jobs.$"),
    ('[[config]]\nlabel = "a"\nlr = 0.1\n[[config]]\nlabel = "a"\nlr = 0.2\n', "label 'a' is used twice"),
    ('[[config]]\nlabel = "a b"\nlr = 0.1\n', "label 'a b' must be"),
    ("[stuff]\nx = 1\n[grid]\nlr = [0.1]\n", "unknown key\\(s\\) stuff"),
    ('[[config]]\naugment = "huge"\n', "augment = 'huge' is not one of"),
])
def test_malformed_grid_files(tmp_path, text, message):
    path = write_grid(tmp_path, text)
    with pytest.raises(TinyMnistError, match=message) as e:
        ex.load_suite(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_grid_file(tmp_path):
    with pytest.raises(TinyMnistError, match="grid file not found"):
        ex.load_suite(str(tmp_path / "nope.toml"))


# -------------------------------------------------------------------------------------- refusals up front
def test_over_budget_configs_are_listed_and_nothing_runs(tmp_path):
    path = write_grid(tmp_path, '[base]\nparam_budget = 10000\n[[config]]\nmodel = "tiny8k"\n'
                                '[[config]]\nmodel = "seed"\n[[config]]\nmodel = "tiny20k"\n')
    n8k = count_parameters(build_model("tiny8k"))
    assert n8k <= 10_000  # the one that fits
    with pytest.raises(TinyMnistError) as e:
        ex.plan_suite(ex.load_suite(str(path)), {"runs_root": str(tmp_path)}, seeds=2)
    msg = str(e.value)
    assert "over the parameter budget, nothing was run" in msg
    assert "model-seed (seed: 19,349 > 10,000)" in msg and "model-tiny20k (tiny20k:" in msg
    assert "model-tiny8k" not in msg
    assert not (tmp_path / "experiments").exists()


def test_existing_runs_with_other_options_are_refused(tmp_path, mnist_dir):
    suite = ex.Suite("s", "test", [("a", {"dropout": 0.0})])
    flags = {**QUICK, "runs_root": str(tmp_path), "epochs": 1}
    plan = ex.plan_suite(suite, flags, seeds=1)
    ex.run_plan(plan, jobs=1, threads=1)
    with pytest.raises(TinyMnistError, match=r"a-s0: exists with other options \(epochs: 1 there, 2 now\)"):
        ex.plan_suite(suite, {**flags, "epochs": 2}, seeds=1)


def test_runs_root_that_is_a_file_is_refused_even_for_a_dry_run(tmp_path, capsys):
    root = tmp_path / "a-file"
    root.write_text("")
    with pytest.raises(TinyMnistError, match=f"--runs-root {root}: cannot hold the suite folder .* is not a folder"):
        ex.plan_suite(ex.load_suite("dropout"), {"runs_root": str(root)}, seeds=1)
    assert main(["experiment", "dropout", "--dry-run", "--runs-root", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--runs-root {root}: cannot hold the suite folder" in err[0]


def test_unwritable_runs_root_is_refused_before_any_run(tmp_path, capsys):
    """Under /proc no folder can be made (not even by root): one line, and no run is started."""
    grid = write_grid(tmp_path, '[base]\nmodel = "tiny1k"\n[grid]\ndropout = [0.0, 0.1]\n')
    assert main(["experiment", str(grid), "--epochs", "1", "--seeds", "1", "--jobs", "1", "--threads", "1",
                 "--runs-root", "/proc/tinymnist-test"]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "--runs-root /proc/tinymnist-test: " in err[0], err
    assert captured.out == ""  # refused before the plan is even shown


def test_write_outputs_error_is_one_line(tmp_path):
    suite = ex.Suite("fake", "q", [("a", {"dropout": 0.1})])
    d = tmp_path / "experiments" / "fake"
    fake_run(d, "a", 0, [0.9, 0.95])
    (d / "results.md").mkdir()  # a folder where the table goes: the rename fails
    plan = ex.plan_suite(suite, {"runs_root": str(tmp_path), "epochs": 2, "train_subset": 300,
                                 "test_subset": 200}, seeds=1)
    with pytest.raises(TinyMnistError, match=f"{d}: cannot write the results .*the finished runs are kept"):
        ex.write_outputs(plan)


# --------------------------------------------------------------------------------------------- aggregation
def test_aggregate_known_values():
    s = ex.aggregate([0.90, 0.92, 0.94])
    assert s.n == 3 and s.mean == pytest.approx(0.92) and s.min == 0.90 and s.max == 0.94
    assert s.std == pytest.approx(0.02)  # sample std: sqrt(((-.02)^2 + 0 + .02^2) / (3 - 1))
    s = ex.aggregate([0.1, 0.2, 0.3, 0.6])
    assert s.std == pytest.approx(statistics.stdev([0.1, 0.2, 0.3, 0.6]))
    assert s.std == pytest.approx((sum((x - 0.3) ** 2 for x in (0.1, 0.2, 0.3, 0.6)) / 3) ** 0.5)
    one = ex.aggregate([0.97])
    assert one.std is None and one.mean == one.min == 0.97


def fake_run(directory, label, seed, test_curve, val=None, cpu="Test CPU 9000", threads=1):
    """A finished run directory written by hand: summary.json, config.json, metrics.csv and report.md."""
    run_dir = directory / f"{label}-s{seed}"
    run_dir.mkdir(parents=True)
    config = TrainConfig(epochs=len(test_curve), seed=seed, runs_root=str(directory), name=run_dir.name,
                         dropout=0.1, train_subset=300, test_subset=200)
    (run_dir / "config.json").write_text(json.dumps({
        "config": config.to_dict(), "params": 1234,
        "data": {"dataset": "mnist", "train_images": 300, "val_images": 0, "test_images": 200},
        "environment": {"cpu": cpu, "threads": threads, "torch": "9.9.9"}}))
    rows = [{"epoch": i + 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": "", "val_acc": val or "",
             "test_loss": 1.0, "test_acc": a, "seconds": 1.0, "elapsed": i + 1.0} for i, a in enumerate(test_curve)]
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    best = max(range(len(test_curve)), key=lambda i: test_curve[i])
    (run_dir / "summary.json").write_text(json.dumps({
        "model": "tiny20k", "params": 1234, "epochs": len(test_curve), "seed": seed,
        "final_test_acc": test_curve[-1], "final_test_loss": 1.0, "final_val_acc": val,
        "best_epoch_test_acc": test_curve[best], "best_epoch": best + 1, "wall_seconds": 10.0 + seed,
        "finished": True}))
    (run_dir / "report.md").write_text("# report\n")


def test_table_reports_final_epoch_not_best_epoch(tmp_path):
    suite = ex.Suite("fake", "a made-up question", [("a", {"dropout": 0.1})])
    d = tmp_path / "experiments" / "fake"
    # Every run peaks at epoch 2 (0.99) and ends lower: the table must show the final-epoch numbers.
    for seed, final in enumerate([0.90, 0.92, 0.94]):
        fake_run(d, "a", seed, [0.5, 0.99, final])
    plan = ex.plan_suite(suite, {"runs_root": str(tmp_path), "epochs": 3, "train_subset": 300,
                                 "test_subset": 200}, seeds=3)
    assert [r.state for r in plan.runs] == ["finished"] * 3 and not plan.pending
    out = ex.write_outputs(plan)
    row = out.rows[0]
    assert row.per_seed_test == [0.90, 0.92, 0.94] and row.test.mean == pytest.approx(0.92)
    md = out.markdown
    assert "| a | dropout=0.1 | tiny20k | 1,234 | 3 | 3 | 92.00 ± 2.00 | 90.00 | 11.0s |" in md
    assert "99.00" not in md  # the best epoch is not in the table
    for fact in ("after the final epoch", "sample standard deviation over seeds (ddof=1)", "Seeds: 0, 1, 2",
                 "Epochs: 3", "Test CPU 9000", "torch threads per run: 1", "torch 9.9.9", "300 training images",
                 "200 test images"):
        assert fact in md, fact
    assert "Epochs: 3." in md and "suite default" not in md  # 3 epochs were asked for; 20 is not mentioned
    results = list(csv.DictReader((d / "results.csv").open()))
    assert float(results[0]["final_test_acc_std_ddof1"]) == pytest.approx(0.02)
    assert results[0]["final_test_acc_per_seed"] == "0.900000 0.920000 0.940000"
    runs = list(csv.DictReader((d / "runs.csv").open()))
    assert [float(r["final_test_acc"]) for r in runs] == [0.90, 0.92, 0.94]
    assert all(float(r["best_epoch_test_acc_reference_only"]) == 0.99 for r in runs)
    assert (d / "results.png").stat().st_size > 10_000 and (d / "results.md").read_text() == md


def test_validation_column_only_with_a_split(tmp_path):
    suite = ex.Suite("fake", "q", [("a", {"dropout": 0.1})])
    d = tmp_path / "experiments" / "fake"
    fake_run(d, "a", 0, [0.9, 0.95], val=0.96)
    fake_run(d, "a", 1, [0.9, 0.97], val=0.98)
    plan = ex.plan_suite(suite, {"runs_root": str(tmp_path), "epochs": 2, "train_subset": 300,
                                 "test_subset": 200}, seeds=2)
    md = ex.write_outputs(plan).markdown
    assert "final-epoch val acc % (mean ± std)" in md and "97.00 ± 1.41" in md


def test_parallelism_never_oversubscribes(monkeypatch):
    monkeypatch.setattr(ex.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert ex.default_parallelism(None, None, pending=10) == (4, 1)
    assert ex.default_parallelism(2, None, pending=10) == (2, 2)
    assert ex.default_parallelism(None, 2, pending=10) == (2, 2)
    assert ex.default_parallelism(None, None, pending=1) == (1, 4)
    with pytest.raises(TinyMnistError, match="--jobs"):
        ex.default_parallelism(0, None, pending=3)
    # Asked for more than the cores hold: refused, not run slowly (the fresh-user trial's --jobs 2 --threads 2 on
    # 2 cores); more jobs than runs left is fine, the extra ones would have nothing to do.
    with pytest.raises(TinyMnistError, match="2 runs x 4 torch thread.s. each is more than this machine's 4 cores"):
        ex.default_parallelism(2, 4, pending=10)
    with pytest.raises(TinyMnistError, match="use at most --jobs 4$"):
        ex.default_parallelism(5, None, pending=10)
    # what was asked is judged, not what is left to run: the same command is refused with 1 run pending too
    with pytest.raises(TinyMnistError, match="use at most --jobs 2 at --threads 2"):
        ex.default_parallelism(3, 2, pending=1)
    with pytest.raises(TinyMnistError, match="--threads: must not be negative, got -1"):
        ex.default_parallelism(None, -1, pending=3)
    assert ex.default_parallelism(None, 0, pending=10) == (4, 1)  # 0: torch's default, so the runner chooses


# ------------------------------------------------------------------------------------------ real, resumable
def test_resume_skips_finished_and_continues_partial(tmp_path, mnist_dir):
    suite = ex.Suite("quick", "two dropouts", [("d0", {"dropout": 0.0}), ("d2", {"dropout": 0.2})])
    flags = {**QUICK, "runs_root": str(tmp_path), "epochs": 2}
    plan = ex.plan_suite(suite, flags, seeds=2)
    reports = ex.run_plan(plan, jobs=1, threads=1)
    assert len(reports) == 4 and all(r["ok"] for r in reports)
    stamps = {r.config.name: (r.run_dir / "summary.json").stat().st_mtime_ns for r in plan.runs}

    # One more seed, and the new seed of 'd0' is interrupted after its first epoch.
    plan = ex.plan_suite(suite, flags, seeds=3)
    assert [r.state for r in plan.runs].count("finished") == 4
    stopped = next(r for r in plan.runs if r.label == "d0" and r.seed == 2)
    train(stopped.config.replace(threads=1), stop_after=1)
    plan = ex.plan_suite(suite, flags, seeds=3)
    assert {r.config.name: r.state for r in plan.pending} == {"d0-s2": "partial", "d2-s2": "new"}
    reports = ex.run_plan(plan, jobs=1, threads=1)
    assert sorted(r["name"] for r in reports) == ["d0-s2", "d2-s2"]  # the finished four were not redone
    assert all((r.run_dir / "summary.json").stat().st_mtime_ns == stamps[r.config.name]
               for r in plan.runs if r.config.name in stamps)
    assert len(rundir.read_metrics(stopped.run_dir)) == 2  # resumed: epoch 1 kept, epoch 2 added
    assert not ex.plan_suite(suite, flags, seeds=3).pending

    out = ex.write_outputs(plan)
    assert [r.test.n for r in out.rows] == [3, 3]
    assert {p.name for p in out.files} == {"results.md", "results.csv", "runs.csv", "results.png"}


def test_run_stopped_while_reporting_is_repaired(tmp_path, mnist_dir):
    """A run interrupted after its last epoch, while drawing its figures, has summary.json but no report: the
    next run of the suite writes the report instead of counting the run finished. Epochs are reported as they
    end (in-process with --jobs 1)."""
    suite = ex.Suite("s", "test", [("a", {"dropout": 0.0})])
    flags = {**QUICK, "runs_root": str(tmp_path), "epochs": 2}
    plan = ex.plan_suite(suite, flags, seeds=1)
    seen = []
    ex.run_plan(plan, jobs=1, threads=1, on_epoch=lambda run, p: seen.append((run.config.name, p["epoch"])))
    assert seen == [("a-s0", 1), ("a-s0", 2)]
    run_dir = plan.runs[0].run_dir
    for name in ("report.md", "misclassified.png", "misclassified.csv"):
        (run_dir / name).unlink()
    summary = (run_dir / "summary.json").read_text()

    plan = ex.plan_suite(suite, flags, seeds=1)
    assert plan.runs[0].state == "unreported" and "[1 unreported]" in ex.describe_plan(plan)
    reports = ex.run_plan(plan, jobs=1, threads=1, on_epoch=lambda run, p: seen.append(p))
    assert reports[0]["ok"] and reports[0]["final_test_acc"] == json.loads(summary)["final_test_acc"]
    assert len(seen) == 2  # nothing was trained again
    assert all((run_dir / n).is_file() for n in ("report.md", "misclassified.png", "misclassified.csv"))
    assert (run_dir / "summary.json").read_text() == summary
    assert ex.plan_suite(suite, flags, seeds=1).runs[0].state == "finished"


def test_cli_parallel_suite_from_grid_then_reuse(tmp_path, mnist_dir, capsys, monkeypatch):
    monkeypatch.setattr(ex.os, "sched_getaffinity", lambda pid: {0, 1})  # a 2-core machine, whatever CI runs on
    grid = write_grid(tmp_path, '[base]\nmodel = "tiny1k"\nbatch_size = 50\n'
                                '[grid]\ndropout = [0.0, 0.1]\n', name="small.toml")
    args = ["experiment", str(grid), "--seeds", "1", "--epochs", "1", "--jobs", "2", "--train-subset", "300",
            "--test-subset", "200", "--val-split", "100", "--runs-root", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "running 2 run(s), 2 at a time with 1 torch thread(s) each" in out
    lines = out.splitlines()
    for name in ("dropout-0-s0", "dropout-0.1-s0"):  # each epoch reported by the workers, before the run's result
        epoch = next(i for i, line in enumerate(lines) if f" {name} " in line and "epoch   1/1  test " in line)
        done = next(i for i, line in enumerate(lines) if f" {name} " in line and "final test acc" in line)
        assert epoch < done and "val " in lines[epoch]
    assert "| dropout-0.1 | dropout=0.1 | tiny1k |" in out and "final-epoch val acc" in out
    d = tmp_path / "experiments" / "small"
    assert (d / "results.png").is_file() and (d / "dropout-0-s0" / "summary.json").is_file()
    assert main(args) == 0
    assert "all runs finished already" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["experiment", "nonsense"], "unknown suite 'nonsense'"),
    (["experiment", "dropout", "--dropout", "0.2"], "--dropout: the 'dropout' suite varies this itself"),
    (["experiment", "dropout", "--param-budget", "100"], "over the parameter budget, nothing was run"),
    (["experiment", "dropout", "--seeds", "0"], "--seeds: must be a positive integer"),
    (["experiment", "dropout", "--jobs", "0"], "--jobs: must be a positive integer"),
    (["experiment", "dropout", "--model", "resnet"], "unknown model 'resnet'"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert main([*args, "--runs-root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "experiments").exists()


def test_dry_run_says_how_the_runs_would_share_the_cores(tmp_path, mnist_dir, capsys, monkeypatch):
    monkeypatch.setattr(ex.os, "sched_getaffinity", lambda pid: {0, 1})
    assert main(["experiment", "dropout", "--dry-run", "--seeds", "2", "--runs-root", str(tmp_path)]) == 0
    assert "would run 10 run(s), 2 at a time with 1 torch thread(s) each" in capsys.readouterr().out
    assert not (tmp_path / "experiments").exists()  # a dry run creates nothing
    assert main(["experiment", "dropout", "--dry-run", "--jobs", "2", "--threads", "2",
                 "--runs-root", str(tmp_path)]) == 1
    assert "more than this machine's 2 cores" in capsys.readouterr().err
