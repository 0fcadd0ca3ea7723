"""The benchmark scripts are tools too: a mistake in their arguments is one line and a non-zero exit."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize(
    "script, args, expected",
    [
        ("cpu_settings.py", ["--threads", "0"], "error: --threads must be at least 1, got 0"),
        ("cpu_settings.py", ["--model", "nope"], "argument --model: invalid choice: 'nope'"),
        ("tta_accuracy.py", ["/nonexistent-run"], "error: /nonexistent-run: run directory not found"),
        ("tta_accuracy.py", [], "the following arguments are required: RUN_DIR"),
        ("predict_speed.py", ["--calls", "0"], "error: --calls must be at least 1, got 0"),
        ("seeds.py", ["--config", "/nonexistent.toml"], "error: /nonexistent.toml: config file not found"),
        ("seeds.py", ["--config", "x.toml", "--seeds", "0", "0"], "error: --seeds repeats a seed (0 0)"),
        ("epoch_time.py", ["--repeats", "0"], "error: --repeats must be at least 1, got 0"),
        ("time_to_accuracy.py", ["--target", "2"], "error: --target is a test accuracy in (0, 1], got 2.0"),
        ("model_speed.py", ["--steps", "0"], "error: --steps must be at least 1, got 0"),
        ("optimizer_speed.py", ["--nonsense"], "unrecognized arguments: --nonsense"),
        ("compile_speed.py", ["--nonsense"], "unrecognized arguments: --nonsense"),
    ],
)
def test_bad_arguments_are_one_line_errors(script, args, expected):
    r = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert expected in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
