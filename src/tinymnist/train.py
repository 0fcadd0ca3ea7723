"""Training: `train(config) -> RunResult` is the one entry point (CLI, experiments, tuning, notebook, tests).

The loop is plain PyTorch. The whole training split sits in memory as one normalised tensor; each epoch draws
batches through a fresh random permutation and augments each batch in one call. Everything a later stage needs
is written to the run directory (see `rundir.py`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import rundir
from .augment import random_affine
from .config import TrainConfig, config_from_dict, differences
from .data import NORMALIZATION, Split, differing_data, load_dataset, normalize, split_validation
from .errors import TinyMnistError
from .evaluate import evaluate
from .models import build_model, check_budget

METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                 "seconds", "elapsed"]


@dataclass
class RunResult:
    run_dir: Path
    config: TrainConfig
    params: int
    history: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0
    finished: bool = False

    @property
    def final_test_acc(self) -> float:
        """The number we report: test accuracy after the last epoch."""
        return self.history[-1]["test_acc"]

    @property
    def best_epoch(self) -> dict:
        """The epoch with the highest test accuracy. Shown only labelled as "best epoch": choosing it would be
        selecting on the test set."""
        return max(self.history, key=lambda m: m["test_acc"])

    @property
    def final_val_acc(self) -> float | None:
        return self.history[-1]["val_acc"]


@dataclass
class PreparedData:
    """Normalised tensors ready for the loop, plus where they came from."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    info: dict


def check_data_sizes(config: TrainConfig, n_train: int, n_test: int,
                     origin: Callable[[str], str] | None = None) -> None:
    """Refuse a validation split or a subset larger than the data, rather than quietly using less than asked.
    `origin(option)` names where a value came from (as in TrainConfig.validate); by default, its flag."""

    def bad(option: str, why: str) -> TinyMnistError:
        return TinyMnistError(f"{origin(option) if origin else '--' + option.replace('_', '-')}: {why}")

    if config.val_split >= n_train:
        raise bad("val_split", f"must be below the {n_train:,} training images, got {config.val_split:,}")
    left = n_train - config.val_split
    if config.train_subset > left:
        held = f" once {config.val_split:,} are held out for validation" if config.val_split else ""
        raise bad("train_subset", f"there are only {left:,} training images{held}, got {config.train_subset:,}")
    if config.test_subset > n_test:
        raise bad("test_subset", f"there are only {n_test:,} test images, got {config.test_subset:,}")


def prepare_data(config: TrainConfig) -> PreparedData:
    ds = load_dataset(config.dataset, config.data_dir)
    check_data_sizes(config, len(ds.train), len(ds.test))
    train, val = ds.train, None
    if config.val_split:
        train, val = split_validation(train, config.val_split)
    if config.train_subset:
        train = Split(train.images[: config.train_subset], train.labels[: config.train_subset])
    test = ds.test
    if config.test_subset:
        test = Split(test.images[: config.test_subset], test.labels[: config.test_subset])

    def norm(s: Split | None) -> torch.Tensor | None:
        return None if s is None else normalize(s.images, config.dataset)

    info = {"dataset": ds.name, "source": ds.source, "directory": str(ds.directory), "sha256": ds.sha256,
            "content_sha256": ds.content_sha256,
            "train_images": len(train), "val_images": len(val) if val else 0, "test_images": len(test)}
    return PreparedData(norm(train), train.labels, norm(test), test.labels, norm(val),
                        None if val is None else val.labels, info)


def _check_own_checkpoint(run_dir: Path, state: object, config: TrainConfig) -> None:
    """Refuse a checkpoint saved by another run (copied in by hand): loading one of the same model would go
    through and then fail mid-epoch, or worse, continue with another run's weights and history."""
    if not isinstance(state, dict):
        raise TinyMnistError(f"{run_dir / rundir.CHECKPOINT}: not a checkpoint of this run ({config.model}): "
                             f"it holds a {type(state).__name__}")
    if isinstance(state.get("config"), dict):  # checkpoints written before this check have none
        try:
            saved = config_from_dict(state["config"], source="checkpoint")
        except TinyMnistError as e:
            raise TinyMnistError(f"{run_dir / rundir.CHECKPOINT}: unreadable options ({e})") from None
        diff = differences(saved, config)
        if diff:
            raise TinyMnistError(f"{run_dir / rundir.CHECKPOINT}: saved by a run with other options ({diff}), not "
                                 "by this one")


def _check_same_data(run_dir: Path, info: dict) -> None:
    """A resumed run must see the data it started with: another folder is fine, other files are not (the run's
    config.json would then describe data it was not trained on)."""
    saved = rundir.read_config(run_dir)[1].get("data", {})
    differ = differing_data(saved, info)
    if differ:
        raise TinyMnistError(f"--resume {run_dir}: the data found ({info['dataset']} in {info['directory']}) is not "
                             f"the data the run started with ({saved.get('dataset')} in {saved.get('directory')}: "
                             f"{', '.join(differ)} differ)")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # Weight decay only on conv/linear weights: decaying BatchNorm scales and biases just fights the
    # normalisation and costs accuracy.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    # For Adam and AdamW --momentum is beta1, the decay of their running mean of gradients (default 0.9, as
    # PyTorch's): one-cycle moves it like SGD's momentum, so it must mean the same with every schedule.
    betas = (config.momentum, 0.999)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=betas)
    return torch.optim.AdamW(groups, lr=config.lr, betas=betas)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """Returns (scheduler or None, True if it steps per batch / False if per epoch)."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "step":
        step = config.step_size or max(1, config.epochs // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=0.1), False
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), True
    if config.schedule == "onecycle":
        # Warm up for the first 20% of steps, then anneal to ~0 along a cosine. One-cycle also moves the momentum
        # (SGD's, or Adam's beta1) against the rate (lowest at the peak rate): here within ±0.05 of --momentum
        # (less near 0 and 1), which for the default 0.9 is PyTorch's own 0.85-0.95; --momentum 0 stays 0.
        # (Rounded so that 0.9 gives exactly 0.85 and 0.95.)
        half = round(min(0.05, config.momentum, (1 - config.momentum) / 2), 10)
        # a band narrower than 1e-6 is no cycle (and rounding could push its ends out of [0, 1))
        cycle = dict(cycle_momentum=half >= 1e-6, base_momentum=max(0.0, round(config.momentum - half, 10)),
                     max_momentum=round(config.momentum + half, 10))
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total, pct_start=0.2, div_factor=20, final_div_factor=200,
            **cycle,
        ), True
    return None, False


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Start/end of each batch; a last batch of one image is dropped (BatchNorm cannot train on it)."""
    spans = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < 2:
        spans.pop()
    return spans


def update_ema(ema_model: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """Move every weight (and BatchNorm statistic) of `ema_model` a little towards `model`'s. The decay ramps
    up over the first steps so that the average does not drag along the random initial weights."""
    decay = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for avg, now in zip(ema_model.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                avg.lerp_(now, 1 - decay)
            else:  # BatchNorm's batch counter
                avg.copy_(now)


EpochCallback = Callable[[dict], bool | None]  # return True to stop after this epoch
BatchCallback = Callable[[int, int, int], None]


def train(
    config: TrainConfig,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    stop_after: int | None = None,
    data: PreparedData | None = None,
) -> RunResult:
    """Train one model as `config` describes and write its run directory.

    resume: continue the run in `runs_root/name` from its last checkpoint (same config).
    on_epoch(metrics) / on_batch(epoch, batch_index, n_batches): progress callbacks; on_epoch may return True
        to stop after that epoch (the run is then unfinished, its checkpoint kept).
    stop_after: stop after this many epochs in total, as if interrupted (the checkpoint stays; for tests).
    data: pre-loaded tensors, to share one load across many runs.
    """
    config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    # Everything that can refuse the run does so before anything is written: a bad run directory, an
    # over-budget model, missing or corrupt data. A refused run leaves no empty folder behind.
    asked_to_resume = resume
    run_dir, resume = rundir.target(config, resume)
    torch.manual_seed(config.seed)
    model = build_model(config.model, config.dropout)
    params = check_budget(model, config.model, config.param_budget)
    data = data or prepare_data(config)
    if asked_to_resume:  # also when it restarts from epoch 1 (no checkpoint): the run's record says which data
        _check_same_data(run_dir, data.info)
    rundir.create(run_dir, resume)
    # channels_last lets oneDNN use its NHWC convolution kernels. Whether that is faster depends on the CPU and
    # the model (benchmarks/cpu_settings.py; RESULTS.md): 1.06-1.22x for fast20k but 0.83x for tiny20k on one
    # Intel Xeon. It changes the memory layout only, not the model; kept so that results stay reproducible.
    model = model.to(memory_format=torch.channels_last)
    steps = _batches(len(data.train_y), config.batch_size)
    optimizer = make_optimizer(model, config)
    scheduler, per_batch = make_schedule(optimizer, config, len(steps))
    fill = -NORMALIZATION[config.dataset][0] / NORMALIZATION[config.dataset][1]  # a black pixel, normalised
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    # With --ema, a moving average of the weights is what gets evaluated and saved; the loop still trains `model`.
    ema_model = copy.deepcopy(model) if config.ema else None
    eval_model = ema_model if ema_model is not None else model

    result = RunResult(run_dir=run_dir, config=config, params=params)
    start_epoch, elapsed_before = 1, 0.0
    if resume:
        state = rundir.load_checkpoint(run_dir)
        _check_own_checkpoint(run_dir, state, config)
        try:
            model.load_state_dict(state["model"])
            if ema_model is not None:
                ema_model.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            history, last_epoch = list(state["history"]), int(state["epoch"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            # a readable file that is not this run's checkpoint: another model's, or not tinymnist's at all
            detail = " ".join(str(e).split())[:120]  # one line, however torch words it
            raise TinyMnistError(f"{run_dir / rundir.CHECKPOINT}: not a checkpoint of this run ({config.model}): "
                                 f"{type(e).__name__} {detail}".rstrip()) from None
        result.history = history
        rundir.rewrite_metrics(run_dir, result.history, METRIC_FIELDS)
        start_epoch = last_epoch + 1
        elapsed_before = result.history[-1]["elapsed"] if result.history else 0.0
    else:
        rundir.write_config(run_dir, config, params, data.info)
    writer = rundir.tensorboard_writer(run_dir) if config.tensorboard else None

    t_start = time.perf_counter()
    test = None
    for epoch in range(start_epoch, config.epochs + 1):
        if stop_after is not None and epoch > stop_after:
            break
        t_epoch = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        perm = torch.randperm(len(data.train_y))
        loss_sum, correct, seen = 0.0, 0, 0
        for b, (i, j) in enumerate(steps):
            idx = perm[i:j]
            x, y = data.train_x[idx], data.train_y[idx]
            x = random_affine(x, config.rotate, config.translate, fill=fill)
            # --bf16: convolutions and matmuls in bfloat16, weights and their updates stay float32
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                logits = model(x)
                loss = criterion(logits, y)
            if not torch.isfinite(loss):
                kept = (f"the last good checkpoint (epoch {result.history[-1]['epoch']}) stays in {run_dir}"
                        if result.history else "no epoch had finished, so there is no checkpoint")
                raise TinyMnistError(
                    f"training diverged: loss is {loss.item()} at epoch {epoch}, batch {b + 1}; {kept} "
                    "(try a lower --lr)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None and per_batch:
                scheduler.step()
            if ema_model is not None:
                update_ema(ema_model, model, config.ema, (epoch - 1) * len(steps) + b)
            with torch.no_grad():
                plain = loss if config.label_smoothing == 0 else F.cross_entropy(logits, y)
                loss_sum += plain.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
            if on_batch is not None:
                on_batch(epoch, b + 1, len(steps))
        if scheduler is not None and not per_batch:
            scheduler.step()

        test = evaluate(eval_model, data.test_x, data.test_y, config.eval_batch_size)
        val = evaluate(eval_model, data.val_x, data.val_y, config.eval_batch_size) if data.val_x is not None else None
        seconds = time.perf_counter() - t_epoch
        metrics = {
            "epoch": epoch, "lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen,
            "val_loss": val.loss if val else None, "val_acc": val.accuracy if val else None,
            "test_loss": test.loss, "test_acc": test.accuracy, "seconds": seconds,
            "elapsed": elapsed_before + time.perf_counter() - t_start,
        }
        result.history.append(metrics)
        # Checkpoint first, then the metrics row: the checkpoint carries the whole history, so whichever
        # moment a kill lands, --resume finds a checkpoint for every row and rewrites metrics.csv from it.
        rundir.save_checkpoint(run_dir, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "ema": ema_model.state_dict() if ema_model is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": torch.get_rng_state(), "epoch": epoch, "history": result.history,
            "config": config.to_dict(),  # so that --resume can tell this run's checkpoint from another's
        })
        rundir.append_metrics(run_dir, metrics, METRIC_FIELDS)
        if writer is not None:
            for key in ("lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"):
                if metrics[key] is not None:
                    writer.add_scalar(key, metrics[key], epoch)
        if on_epoch is not None and on_epoch(metrics):
            break  # the callback asked to stop (e.g. a time-to-accuracy benchmark reached its target)

    if writer is not None:
        writer.close()
    result.wall_seconds = result.history[-1]["elapsed"] if result.history else 0.0
    result.finished = bool(result.history) and result.history[-1]["epoch"] == config.epochs
    if result.finished:
        rundir.save_weights(run_dir, eval_model, config)
        rundir.write_summary(run_dir, result)
        # Figures + report.md, on the exact test tensor the loop used, reusing the last epoch's logits (same
        # model as the saved weights) so the report costs no extra pass. Imported here: plotting is not needed
        # until a run finishes.
        from .report import write_run_report

        write_run_report(run_dir, test=(data.test_x, data.test_y), logits=test.logits if test else None)
    return result

