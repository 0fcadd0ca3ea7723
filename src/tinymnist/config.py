"""One config object describes a run. CLI flags, TOML files and experiment grids all produce a `TrainConfig`,
and the resolved config is saved in the run directory, so a run can always be reproduced or resumed."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import TinyMnistError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")


@dataclass
class TrainConfig:
    # what to train
    model: str = "tiny20k"
    dataset: str = "mnist"
    data_dir: str | None = None
    param_budget: int = 20_000
    dropout: float | None = None  # None: the model's own default
    # how long and how
    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.2  # peak lr for onecycle, initial lr otherwise
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    ema: float = 0.0  # evaluate and save an exponential moving average of the weights with this decay; 0 = off
    schedule: str = "onecycle"
    bf16: bool = False  # run the training forward pass in bfloat16 (torch.autocast): faster only on CPUs with AMX
    step_size: int = 0  # step schedule: epochs between x0.1 decays; 0 = epochs // 3
    # augmentation (0 = off); never applied to validation or test images
    rotate: float = 10.0  # max degrees, each image its own angle
    translate: float = 0.1  # max shift as a fraction of the image side
    # data subsets
    val_split: int = 0  # hold out this many training images as a fixed validation set
    train_subset: int = 0  # use only the first N training images (0 = all); for quick checks and tests
    test_subset: int = 0  # evaluate on the first N test images (0 = all); for quick checks and tests
    # bookkeeping
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    runs_root: str = "runs"
    name: str | None = None  # run directory name; default: <model>-<timestamp>
    eval_batch_size: int = 2000
    tensorboard: bool = False

    def validate(self, origin: Callable[[str], str] | None = None) -> None:
        """Reject options that make no sense, naming the option. `origin(option)` says where a value came from
        (e.g. "cfg.toml: option 'lr'"); by default the option is named as its command-line flag."""
        from .data import DATASETS
        from .models import MODELS

        def bad(option: str, why: str) -> TinyMnistError:
            where = origin(option) if origin else f"--{option.replace('_', '-')}"
            return TinyMnistError(f"{where}: {why}")

        if self.model not in MODELS:
            raise bad("model", f"unknown model '{self.model}' (choose from: {', '.join(MODELS)})")
        if self.dataset not in DATASETS:
            raise bad("dataset", f"unknown dataset '{self.dataset}' (choose from: {', '.join(DATASETS)})")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"unknown optimizer '{self.optimizer}' (choose from: {', '.join(OPTIMIZERS)})")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"unknown schedule '{self.schedule}' (choose from: {', '.join(SCHEDULES)})")
        if self.data_dir is not None and not str(self.data_dir).strip():
            raise bad("data_dir", "must not be empty (leave it out to search the usual places)")
        if self.epochs <= 0:
            raise bad("epochs", f"must be a positive integer, got {self.epochs}")
        if self.batch_size <= 0:
            raise bad("batch_size", f"must be a positive integer, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad("lr", f"must be a positive number, got {self.lr}")
        for name in ("momentum", "weight_decay", "rotate", "translate", "step_size", "val_split",
                     "train_subset", "test_subset", "threads"):
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):  # nan passes every < and > check below
                raise bad(name, f"must be a finite number, got {value}")
            if value < 0:
                raise bad(name, f"must not be negative, got {value}")
        if self.momentum >= 1:
            raise bad("momentum", f"must be below 1 (at 1 or more the update never decays and training diverges), "
                                  f"got {self.momentum}")
        if self.step_size and self.schedule != "step":  # silently ignored otherwise
            raise bad("step_size", f"only applies to the step schedule (the schedule is '{self.schedule}'), "
                                   f"got {self.step_size}")
        if self.rotate > 180:
            raise bad("rotate", f"is a maximum angle in degrees and must be at most 180, got {self.rotate}")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.ema < 1:
            raise bad("ema", f"must be in [0, 1) (0 = off; 0.999 averages about the last 1,000 steps), got {self.ema}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise bad("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.translate >= 0.5:
            raise bad("translate", f"is a fraction of the image side and must be < 0.5, got {self.translate}")
        if self.param_budget <= 0:
            raise bad("param_budget", f"must be positive, got {self.param_budget}")
        if self.name is not None and (self.name.strip() in ("", ".", "..") or self.name != self.name.strip()
                                      or any(c in self.name for c in "/\\")):
            # A name is one folder inside --runs-root: "../other-run" or "" would point at someone else's folder,
            # and " " or "a " make folders that look like nothing (or like another run) in a listing.
            raise bad("name", "must be a plain folder name (no '/', not empty, not '.' or '..', no leading or "
                              f"trailing spaces), got {self.name!r}")
        if not 0 <= self.seed < 2**63:  # torch.manual_seed's range
            raise bad("seed", f"must be between 0 and 2**63 - 1, got {self.seed}")
        if self.eval_batch_size <= 0:
            raise bad("eval_batch_size", f"must be positive, got {self.eval_batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


FIELD_NAMES = {f.name for f in fields(TrainConfig)}

# Options that do not change what a run computes: ignored when deciding whether a saved run (an experiment's, a
# tuning retrain, a checkpoint to resume) was made with the same options.
NOT_COMPARED = ("name", "runs_root", "threads", "data_dir", "tensorboard", "eval_batch_size")


def comparable(config: TrainConfig) -> dict[str, Any]:
    d = config.to_dict()
    for k in NOT_COMPARED:
        d.pop(k, None)
    return d


def differences(a: TrainConfig, b: TrainConfig) -> str:
    """The options that differ, as "option: A there, B now, ..." (empty if none)."""
    da, db = comparable(a), comparable(b)
    return ", ".join(f"{k}: {da[k]!r} there, {db[k]!r} now" for k in da if da[k] != db[k])


def config_from_dict(values: dict[str, Any], base: TrainConfig | None = None, source: str = "config") -> TrainConfig:
    """Build a config from plain values (TOML table, JSON, experiment grid), rejecting unknown keys and
    values of the wrong type with a message that names the key."""
    base = base or TrainConfig()
    unknown = sorted(set(values) - FIELD_NAMES)
    if unknown:
        grid = {"config", "grid"} & set(unknown) and source.endswith(".toml")
        hint = " (a grid file of configurations: run it with `tinymnist experiment FILE`)" if grid else ""
        raise TinyMnistError(f"{source}: unknown option(s) {', '.join(unknown)}{hint}")
    defaults = base.to_dict()
    out = {}
    for key, value in values.items():
        ref = defaults[key] if defaults[key] is not None else TrainConfig.__dataclass_fields__[key].default
        if key in ("dropout", "name", "data_dir") and value is None:
            out[key] = None
            continue
        if isinstance(ref, bool) or key == "tensorboard":
            ok = isinstance(value, bool)
        elif isinstance(ref, int) and key != "dropout":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(ref, float) or key == "dropout":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            raise TinyMnistError(f"{source}: option '{key}' has the wrong type ({type(value).__name__}: {value!r})")
        out[key] = value
    return dataclasses.replace(base, **out)


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Parse a TOML file; a missing, unreadable or malformed file is a one-line error naming it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise TinyMnistError(f"{path}: {what} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TinyMnistError(f"{path}: not valid TOML ({e})") from None
    except OSError as e:
        raise TinyMnistError(f"{path}: cannot read ({e.strerror})") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; options may sit at the top level or under a [train] table."""
    data = read_toml(path)
    if "train" in data and len(data) > 1:
        # Both would be ambiguous: which epochs did the user mean? Refuse rather than silently pick one.
        raise TinyMnistError(f"{path}: put options either at the top level or under [train], not both "
                             f"(top level has: {', '.join(k for k in data if k != 'train')})")
    train = data.get("train", data)
    if not isinstance(train, dict):
        raise TinyMnistError(f"{path}: 'train' must be a table of options")
    return train
