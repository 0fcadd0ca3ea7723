"""The run directory: the interface between training and everything after it.

    runs/<name>/
      config.json     resolved config, parameter count, library versions, data source and checksums
      metrics.csv     one row per epoch
      checkpoint.pt   everything needed to --resume (model, optimizer, schedule, RNG state, history)
      model.pt        final weights + model name, for evaluate / predict / export
      summary.json    final numbers of a finished run

evaluate, report, predict and export take a run directory and need nothing else.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .config import TrainConfig, config_from_dict
from .errors import TinyMnistError

CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.csv", "checkpoint.pt"
WEIGHTS, SUMMARY = "model.pt", "summary.json"


def default_name(config: TrainConfig) -> str:
    return f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def path_of(config: TrainConfig) -> Path:
    return Path(config.runs_root) / (config.name or default_name(config))


# Files a run may leave behind while being written (atomic-write temporaries, TensorBoard's folder): an otherwise
# empty run directory holding only these may be (re)used for a new run. Anything else in it is someone's work.
_LEFTOVERS = ("tensorboard", ".write-test")


def _is_leftover(path: Path) -> bool:
    return path.name.endswith(".tmp") or path.name in _LEFTOVERS


def nearest_existing(path: Path) -> Path:
    """`path` itself or its closest ancestor that exists: where a mkdir -p of `path` would start writing."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def make_writable_dir(path: Path) -> None:
    """mkdir -p, then prove the folder writable with a probe file (mkdir alone succeeds on some read-only mounts
    when running as root). Raises OSError."""
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".write-test"
    probe.write_text("")
    probe.unlink()


def target(config: TrainConfig, resume: bool) -> tuple[Path, bool]:
    """Decide where the run goes, and refuse before any work is done; creates nothing.

    Returns (run directory, resume): resuming a run that stopped before its first epoch ended (it has a
    config.json but no checkpoint) means starting it again, so resume comes back False for it.
    Never lets a new run write into a folder that holds anything: an existing run, or files of the user's."""
    if config.name is None:
        config.name = default_name(config)
    if not config.runs_root.strip():
        raise TinyMnistError("--runs-root: must not be empty (the default is 'runs')")
    run_dir = Path(config.runs_root) / config.name
    if resume:
        if (run_dir / CHECKPOINT).is_file():
            return run_dir, True
        if (run_dir / CHECKPOINT).exists():  # a folder or other non-file: refuse before anything is deleted
            raise TinyMnistError(f"{run_dir / CHECKPOINT}: is not a file, so there is no checkpoint to resume from "
                                 "(move it away to train the run again from the start)")
        if (run_dir / CONFIG).is_file() and not (run_dir / SUMMARY).exists():
            return run_dir, False  # nothing was saved yet: resuming is training it again
        raise TinyMnistError(f"{run_dir}: no checkpoint to resume from")
    # A new run inside another run's folder would mix its files with that run's (`export`/`report` refuse it too).
    inside = next((p for p in run_dir.parents if (p / CONFIG).is_file()), None)
    if inside is not None:
        raise TinyMnistError(f"--runs-root {config.runs_root}: {inside} is a run directory; choose a folder "
                             "outside it")
    if run_dir.exists() and not run_dir.is_dir():
        raise TinyMnistError(f"{run_dir}: exists and is not a directory (choose another --name or --runs-root)")
    if (run_dir / METRICS).exists() or (run_dir / CHECKPOINT).exists() or (run_dir / SUMMARY).exists():
        raise TinyMnistError(
            f"{run_dir}: a run with this name already exists (use --resume {run_dir} to continue it, "
            "or choose another --name)"
        )
    if run_dir.is_dir() and any(not _is_leftover(p) for p in run_dir.iterdir() if p.name != CONFIG):
        raise TinyMnistError(f"{run_dir}: folder exists and is not empty (choose another --name)")
    # Fail now, not after loading the data: the nearest existing folder on the way must be writable.
    existing = nearest_existing(run_dir)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise TinyMnistError(f"{run_dir}: cannot write the run directory ({existing} is not a writable folder)")
    return run_dir, False


def create(run_dir: Path, resume: bool) -> None:
    """Make the run directory (once training is certain to start) and prove it is writable."""
    try:
        make_writable_dir(run_dir)
        if not resume:
            # A run restarted from scratch (see target) starts a fresh metrics file and config.
            for name in (METRICS, CONFIG):
                (run_dir / name).unlink(missing_ok=True)
    except OSError as e:
        raise TinyMnistError(f"{run_dir}: cannot write the run directory ({e.strerror})") from None


def environment() -> dict[str, Any]:
    import numpy

    return {
        "python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__,
        "platform": platform.platform(), "cpu": cpu_name(), "threads": torch.get_num_threads(),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_config(run_dir: Path, config: TrainConfig, params: int, data_info: dict) -> None:
    payload = {"config": config.to_dict(), "params": params, "data": data_info, "environment": environment(),
               "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    _atomic_write(run_dir / CONFIG, json.dumps(payload, indent=2) + "\n")


def append_metrics(run_dir: Path, metrics: dict, fields: list[str]) -> None:
    path = run_dir / METRICS
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow({k: ("" if metrics[k] is None else metrics[k]) for k in fields})


def rewrite_metrics(run_dir: Path, history: list[dict], fields: list[str]) -> None:
    """metrics.csv exactly as the checkpoint's history says (on resume: a run killed between writing its
    checkpoint and its metrics row, or after the row but before the checkpoint, comes back consistent)."""
    (run_dir / METRICS).unlink(missing_ok=True)
    for m in history:
        append_metrics(run_dir, m, fields)


def save_checkpoint(run_dir: Path, state: dict) -> None:
    # Write then rename, so an interruption mid-write never leaves a broken checkpoint behind.
    tmp = run_dir / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, run_dir / CHECKPOINT)


def load_checkpoint(run_dir: Path) -> dict:
    path = Path(run_dir) / CHECKPOINT
    try:
        return torch.load(path, weights_only=False)
    except FileNotFoundError:
        raise TinyMnistError(f"{path}: checkpoint not found") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
        detail = " ".join(str(e).split())[:100]  # one line, however the unpickler words it
        raise TinyMnistError(f"{path}: damaged or not a tinymnist checkpoint ({type(e).__name__}: {detail})") from None


def save_weights(run_dir: Path, model: nn.Module, config: TrainConfig) -> None:
    tmp = run_dir / (WEIGHTS + ".tmp")
    torch.save({"model": config.model, "dropout": config.dropout, "dataset": config.dataset,
                "state_dict": model.state_dict()}, tmp)
    os.replace(tmp, run_dir / WEIGHTS)


def write_summary(run_dir: Path, result: Any) -> None:
    best = result.best_epoch
    last = result.history[-1]
    summary = {
        "model": result.config.model, "params": result.params, "epochs": result.config.epochs,
        "seed": result.config.seed,
        "final_test_acc": last["test_acc"], "final_test_loss": last["test_loss"],
        "final_val_acc": last["val_acc"],
        "best_epoch_test_acc": best["test_acc"], "best_epoch": best["epoch"],
        "wall_seconds": result.wall_seconds, "finished": True,
    }
    _atomic_write(run_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")


# ----------------------------------------------------------------------------------------- reading a run back
def _require_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        why = "is a file, not a run directory" if run_dir.exists() else "run directory not found"
        raise TinyMnistError(f"{run_dir}: {why}")
    return run_dir


def read_config(run_dir: str | Path) -> tuple[TrainConfig, dict]:
    """The run's TrainConfig and the whole config.json payload."""
    path = _require_dir(run_dir) / CONFIG
    try:
        payload = json.loads(path.read_text())
        return config_from_dict(payload["config"], source=str(path)), payload
    except FileNotFoundError:
        raise TinyMnistError(f"{path}: missing (not a tinymnist run directory?)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise TinyMnistError(f"{path}: unreadable config ({e})") from None


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = _require_dir(run_dir) / METRICS
    if not path.is_file():
        raise TinyMnistError(f"{path}: missing (the run has no per-epoch metrics)")
    rows: list[dict] = []
    try:
        with path.open() as f:
            for row in csv.DictReader(f):
                rows.append({k: (None if v in ("", None) else (int(v) if k == "epoch" else float(v)))
                             for k, v in row.items()})
    except (ValueError, TypeError, csv.Error, UnicodeDecodeError) as e:
        raise TinyMnistError(f"{path}: unreadable metrics (data row {len(rows) + 1}: {e})") from None
    except OSError as e:
        raise TinyMnistError(f"{path}: cannot read ({e.strerror})") from None
    if not rows:
        raise TinyMnistError(f"{path}: empty (the run finished no epoch)")
    return rows


def read_summary(run_dir: str | Path) -> dict:
    path = _require_dir(run_dir) / SUMMARY
    if not path.is_file():
        raise TinyMnistError(f"{path}: missing (the run did not finish)")
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinyMnistError(f"{path}: unreadable summary ({e})") from None
    except OSError as e:
        raise TinyMnistError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(summary, dict) or "final_test_acc" not in summary:
        raise TinyMnistError(f"{path}: not a tinymnist summary (no final_test_acc)")
    return summary


def load_model(run_dir: str | Path) -> tuple[nn.Module, TrainConfig]:
    """The trained model of a finished run, in eval mode, and its config."""
    from .models import build_model

    run_dir = _require_dir(run_dir)
    config, _ = read_config(run_dir)
    path = run_dir / WEIGHTS
    if not path.is_file():
        raise TinyMnistError(f"{path}: missing (the run has no final weights; did it finish?)")
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
        # torch's messages run to several lines of advice, including "set weights_only=False", which would
        # unpickle arbitrary code: not advice to pass on for what is simply a damaged or foreign file.
        raise TinyMnistError(f"{path}: cannot read weights: damaged, truncated or not a tinymnist weights file "
                             f"({type(e).__name__}); retrain, or restore the file") from None
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise TinyMnistError(f"{path}: not a tinymnist weights file (no state_dict)")
    if saved.get("model", config.model) != config.model:
        raise TinyMnistError(f"{path}: weights are for model '{saved['model']}' but {CONFIG} says '{config.model}'")
    model = build_model(config.model, saved.get("dropout", config.dropout))
    try:
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise TinyMnistError(f"{path}: weights do not match model '{config.model}' ({first})") from None
    model.eval()
    return model, config


def tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TinyMnistError("--tensorboard needs the 'tensorboard' package (pip install tensorboard)") from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
