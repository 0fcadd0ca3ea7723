"""Pictures and reports of what a run learned, and side-by-side comparisons of several runs.

Every finished `train` calls `write_run_report(run_dir)`, which adds to the run directory:

    curves.png         train/test (and validation) loss and accuracy per epoch, and the learning rate
    confusion.png      the test-set confusion matrix, with counts
    misclassified.png  the most confident mistakes: digit, true -> predicted, confidence
    misclassified.csv  every misclassified test image: index, true, predicted, confidence
    report.md          the run's summary and config, embedding the three figures

`compare_runs` / `plot_comparison` overlay several runs' curves and tabulate their final numbers.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot: no display is
needed, and nothing global changes (a notebook's inline backend keeps working).
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import rundir
from .errors import TinyMnistError
from .evaluate import RunEvaluation, evaluate_run, top_confusions

CURVES, CONFUSION, MISCLASSIFIED, MISCLASSIFIED_CSV, REPORT = (
    "curves.png", "confusion.png", "misclassified.png", "misclassified.csv", "report.md")
# A PNG text chunk that marks a comparison figure, so a later `report --out` may replace it (and nothing else)
# inside a run directory.
COMPARISON_MARK = {"tinymnist": "comparison"}
DPI = 100
# Matplotlib's default cycle, spelled out so that overlaid runs keep the same colours in every panel.
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def epoch_locator() -> MaxNLocator:
    """Whole-number ticks for an axis of epochs. min_n_ticks=1: by default MaxNLocator gives up on integers
    when fewer than two fit in the view, and a 1-epoch run (view 0.945 to 1.055) got ticks 0.945 ... 1.050."""
    return MaxNLocator(integer=True, min_n_ticks=1)


def _style_epoch_axes(*axes) -> None:
    """Epochs on the x axis (whole numbers) and a light grid, for every panel of a curves figure."""
    for ax in axes:
        if not ax.get_xlabel():
            ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(epoch_locator())
        ax.grid(alpha=0.3)


def _marker(n_points: int, default: str | None) -> str | None:
    # A line through a single point draws nothing: a 1-epoch curve needs a marker to be seen at all.
    return "o" if n_points == 1 else default


def _save(fig: Figure, path: Path, option: str = "", metadata: dict[str, str] | None = None) -> Path:
    """Write to a temporary name and rename, like every other file in the run directory. A folder we cannot
    write to is a one-line error naming the path (and the option that gave it). `metadata`: PNG text chunks."""
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    try:
        fig.savefig(tmp, dpi=DPI, facecolor="white", metadata=metadata)
        tmp.replace(path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()  # no half-written temporary left next to the user's files
        where = f"{option} {path}" if option else str(path)
        raise TinyMnistError(f"{where}: cannot write the figure ({e.strerror or e})") from None
    return path


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m {s:02d}s" if m else f"{seconds:.1f}s"


# ------------------------------------------------------------------------------------------------------ curves
def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(m["epoch"], m[key]) for m in history if m.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def lr_by_step(config: dict, n_train: int) -> tuple[list[float], list[float]] | None:
    """The learning rate at every optimiser step of a run, replayed from its config with the training loop's own
    optimiser and schedule (on a dummy parameter, so it costs milliseconds). x is training progress in epochs:
    epoch e runs from x = e - 1 to x = e. None if the config cannot be replayed."""
    from .config import config_from_dict
    from .train import _batches, make_optimizer, make_schedule

    try:
        cfg = config_from_dict(config)
    except TinyMnistError:
        return None
    steps = len(_batches(n_train, cfg.batch_size))
    if steps == 0:
        return None
    dummy = torch.nn.Linear(1, 1)
    optimizer = make_optimizer(dummy, cfg)
    scheduler, per_batch = make_schedule(optimizer, cfg, steps)
    stride = max(1, cfg.epochs * steps // 2000)  # a few thousand points draw the same line
    xs, ys = [], []
    optimizer.step()  # no gradients, so a no-op; the scheduler warns if it steps before the optimizer ever has
    for epoch in range(1, cfg.epochs + 1):
        for b in range(steps):
            if b % stride == 0:
                xs.append(epoch - 1 + b / steps)
                ys.append(optimizer.param_groups[0]["lr"])
            if scheduler is not None and per_batch:
                scheduler.step()
        if scheduler is not None and not per_batch:
            scheduler.step()
    xs.append(cfg.epochs)
    ys.append(optimizer.param_groups[0]["lr"])
    return xs, ys


def plot_curves(history: list[dict], path: str | Path, title: str = "",
                lr_steps: tuple[list[float], list[float]] | None = None) -> Path:
    """Three panels over epochs: loss, accuracy (%), learning rate. Train is dashed, test solid, validation
    dotted, in every panel and every figure; the last values are in the panel titles. `lr_steps` (from
    `lr_by_step`) draws the learning rate at every step; the dots are the rate at the start of each epoch."""
    fig = _new_figure(15, 5.0)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    marker = "o" if len(history) <= 30 else None  # with few epochs, markers show where the measurements are
    styles = [("train", "--", "#1f77b4", "train (augmented, dropout on, averaged over the epoch)"),
              ("test", "-", "#d62728", "test (model at the end of the epoch, eval mode)"),
              ("val", ":", "#2ca02c", "validation (held-out training images, end of epoch)")]
    last: dict[str, list[str]] = {"loss": [], "acc": []}
    for split, ls, color, label in styles:
        for ax, key, scale in ((ax_loss, "loss", 1), (ax_acc, "acc", 100)):
            x, y = _series(history, f"{split}_{key}")
            if x:
                ax.plot(x, [v * scale for v in y], ls, color=color, marker=marker, markersize=4, label=label)
                last[key].append(f"{split} {y[-1]:.4f}" if scale == 1 else f"{split} {100 * y[-1]:.2f}%")
    x, y = _series(history, "lr")
    if lr_steps is not None:
        ax_lr.plot(*lr_steps, "-", color="#555555", linewidth=1.5)
        ax_lr.plot([e - 1 for e in x], y, "o", color="#555555", markersize=4)
        ax_lr.set(title="Learning rate\nline: every step; dots: start of each epoch",
                  xlabel="training progress (epochs)")
        ax_lr.set_ylim(bottom=0)
    else:
        ax_lr.plot(x, y, "-", color="#555555", marker=marker, markersize=4)
        ax_lr.set(title="Learning rate\nat the start of each epoch")
    ax_loss.set(title="Loss\nlast epoch: " + ", ".join(last["loss"]), ylabel="cross-entropy (lower is better)")
    ax_acc.set(title="Accuracy\nlast epoch: " + ", ".join(last["acc"]), ylabel="accuracy (%)")
    ax_lr.set(ylabel="learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    _style_epoch_axes(ax_loss, ax_acc, ax_lr)
    # One legend under the panels: the same line styles mean the same thing in both, and it covers no curve.
    handles, labels = ax_loss.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=13)
    return _save(fig, Path(path))


# --------------------------------------------------------------------------------------------------- confusion
def plot_confusion(confusion: torch.Tensor, class_names: list[str], path: str | Path, title: str = "") -> Path:
    """Counts in every cell. Correct predictions (the diagonal) are shaded blue and errors red, each on its own
    scale: on one shared scale the errors, a hundred times rarer, would all look blank."""
    cm = confusion.numpy() if isinstance(confusion, torch.Tensor) else np.asarray(confusion)
    n = cm.shape[0]
    long_names = max(len(c) for c in class_names) > 3
    fig = _new_figure(9.5 if long_names else 7.6, 8.6 if long_names else 7.0)
    ax = fig.subplots()
    diag = np.where(np.eye(n, dtype=bool), cm, np.nan)
    off = np.where(np.eye(n, dtype=bool) | (cm == 0), np.nan, cm)
    ax.imshow(diag, cmap="Blues", vmin=0, vmax=max(1, np.nanmax(diag) if np.isfinite(diag).any() else 1) * 1.15)
    off_max = np.nanmax(off) if np.isfinite(off).any() else 1
    ax.imshow(off, cmap="Reds", vmin=0, vmax=max(1, off_max) * 1.1)
    font = 9 if n <= 10 else 7
    for t in range(n):
        for p in range(n):
            v = int(cm[t, p])
            if v == 0 and t != p:
                continue  # empty cells stay blank, so the errors stand out
            strong = (v / max(1, np.nanmax(diag)) > 0.5) if t == p else (v / max(1, off_max) > 0.6)
            ax.text(p, t, f"{v:,}", ha="center", va="center", fontsize=font,
                    color="white" if strong else "black", fontweight="bold" if t == p else "normal")
    ax.set_xticks(range(n), class_names, rotation=40 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class", fontsize=11)
    ax.set_ylabel("true class", fontsize=11)
    ax.set_xticks(np.arange(-0.5, n), minor=True)
    ax.set_yticks(np.arange(-0.5, n), minor=True)
    ax.grid(which="minor", color="#dddddd", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    total, errors = int(cm.sum()), int(cm.sum() - np.trace(cm))
    head = title or "Confusion matrix"
    ax.set_title(f"{head}\n{total:,} test images, {errors:,} errors. Rows: true class; columns: predicted.\n"
                 "Blue: correct (diagonal). Red: mistakes, darker = more frequent. Blank: zero.", fontsize=10)
    return _save(fig, Path(path))


# ------------------------------------------------------------------------------------------------ digit grids
def plot_digits(images: torch.Tensor, titles: list[str], path: str | Path | None = None, cols: int = 6,
                title: str = "", title_colors: list[str] | None = None) -> Figure:
    """A grid of 28x28 uint8 images, each with a caption (one or two lines) above it. Saved to `path` if
    given; the figure is returned either way (a notebook can display it).

    Drawn as one mosaic image in one axes: 36 separate axes take seconds to lay out, one takes milliseconds.
    """
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    side, cap = 28, 3 + 5 * lines  # data units (image pixels); `cap` leaves room for the caption
    inch_per_px = 1.45 / side
    # Leave each caption room for its longest line (about 0.075 inch a character at 9 pt): long Fashion-MNIST
    # names get wider cells instead of running into their neighbours.
    longest = max((len(line) for t in titles for line in t.split("\n")), default=0)
    gap_x = max(7, math.ceil((0.075 * longest + 0.15) / inch_per_px) - side)
    cell_w, cell_h = side + gap_x, side + cap
    mosaic = np.full((rows * cell_h, cols * cell_w), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        y0, x0 = r * cell_h + cap, c * cell_w + gap_x // 2
        img = images[i].numpy() if isinstance(images[i], torch.Tensor) else np.asarray(images[i])
        mosaic[y0:y0 + side, x0:x0 + side] = img
    width = cols * cell_w * inch_per_px + 0.2
    if title:  # wide enough for the title even when there are only a few images
        width = max(width, 0.1 * max(len(line) for line in title.split("\n")) + 0.4)
    fig = _new_figure(width, rows * cell_h * inch_per_px + (0.6 if title else 0.1))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")  # white between the tiles
    ax.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    for i in range(n):
        r, c = divmod(i, cols)
        ax.text(c * cell_w + cell_w / 2 - 0.5, r * cell_h + cap - 1, titles[i], ha="center", va="bottom",
                fontsize=9, color=title_colors[i] if title_colors else "black", linespacing=1.1)
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=12)
    if path is not None:
        _save(fig, Path(path))
    return fig


def _confidence(p: float) -> str:
    # Whole percents, except near certainty: rounding 99.6% up to "100%" would claim what the model did not.
    return f"{100 * p:.0f}%" if p < 0.995 else f"{math.floor(1000 * p) / 10:.1f}%"


def plot_misclassified(ev: RunEvaluation, path: str | Path, top: int = 36) -> Path:
    """The `top` most confident mistakes, most confident first."""
    shown = ev.mistakes[:top]
    names = ev.class_names
    if not shown:
        fig = _new_figure(6, 2)
        fig.text(0.5, 0.5, f"No misclassified images: all {ev.total:,} test images are right.",
                 ha="center", va="center", fontsize=12)
        return _save(fig, Path(path))
    titles = [f"true {names[m.true]} → {names[m.predicted]}\n{_confidence(m.confidence)} sure · #{m.index}"
              for m in shown]
    if len(shown) == len(ev.mistakes):
        head = f"All {len(shown):,} misclassified test images, the most confident first"
    else:
        head = f"The {len(shown)} most confident of {len(ev.mistakes):,} misclassified test images"
    title = head + "\ncaption: true → predicted class; confidence in the wrong answer; test index"
    fig = plot_digits(ev.images[[m.index for m in shown]], titles, cols=6, title=title)
    return _save(fig, Path(path))


# ------------------------------------------------------------------------------------------------- run report
def write_misclassified_csv(ev: RunEvaluation, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "true", "predicted", "true_name", "predicted_name", "confidence", "true_prob"])
        for m in ev.mistakes:
            w.writerow([m.index, m.true, m.predicted, ev.class_names[m.true], ev.class_names[m.predicted],
                        f"{m.confidence:.4f}", f"{m.true_prob:.4f}"])
    tmp.replace(path)
    return path


def _config_value(key: str, v: Any, model: str) -> str:
    if v is None:
        if key == "dropout":
            d = _model_default_dropout(model)
            return "model default" + ("" if d is None else f" (`{d:g}`)")
        return {"data_dir": "(searched: see Data below)"}.get(key, "-")
    return f"`{v}`"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def format_report_md(run_dir: Path, ev: RunEvaluation, history: list[dict], payload: dict,
                     summary: dict | None) -> str:
    config = payload["config"]
    data = payload.get("data", {})
    env = payload.get("environment", {})
    last = history[-1]
    lines = [f"# Run `{run_dir.name}`", ""]
    n_train = data.get("train_images")
    lines.append(
        f"**{config['model']}** ({payload.get('params', 0):,} trainable parameters), trained for "
        f"{_plural(last['epoch'], 'epoch')} on **{config['dataset']}**"
        + (f" ({n_train:,} training images)" if isinstance(n_train, int) else "")
        + f", evaluated on {ev.total:,} test images."
    )
    lines += ["", f"- **Final test accuracy: {_pct(ev.accuracy)}** ({ev.correct:,} / {ev.total:,} correct), "
              f"test loss {ev.loss:.4f}. This is the reported number: the model after the last epoch"
              + (f" (its moving-average weights, --ema {config['ema']})." if config.get("ema") else ".")]
    if last.get("val_acc") is not None:
        lines.append(f"- Final validation accuracy: {_pct(last['val_acc'])} "
                     f"({config.get('val_split', 0):,} held-out training images).")
    best = max(history, key=lambda m: m["test_acc"])
    lines.append(f"- Best epoch: {_pct(best['test_acc'])} at epoch {best['epoch']} (picked on the test set, "
                 "so for reference only).")
    if summary is not None:
        lines.append(f"- Training time: {_duration(summary['wall_seconds'])} on {env.get('cpu', 'a CPU')} "
                     f"({_plural(env['threads'], 'thread') if 'threads' in env else '? threads'}).")
    lines += [f"- {len(ev.mistakes):,} misclassified test images (all listed in `{MISCLASSIFIED_CSV}`)."]
    for w in ev.warnings:
        lines.append(f"- **Warning:** {w}")

    lines += ["", "## Training curves", "", f"![training curves]({CURVES})", "",
              "Train numbers are averaged over each epoch on augmented images with dropout active, so they "
              "can sit below the test numbers, which come from the finished epoch's model in eval mode"
              + (" (with --ema, its moving-average weights). " if config.get("ema") else ". ")
              + "A test curve that turns up while train keeps falling is overfitting.", ""]

    lines += ["## Confusion matrix", "", f"![confusion matrix]({CONFUSION})", ""]
    pairs = top_confusions(ev.confusion, 5)
    if pairs:
        names = ev.class_names
        lines.append("Most frequent mistakes: " + ", ".join(
            f"{names[t]} → {names[p]} ({c})" for t, p, c in pairs) + ".")
        lines.append("")

    lines += ["## Per-class precision and recall", "",
              "Precision: of the images predicted as this class, the share that really are. "
              "Recall: of the images of this class, the share the model found.", "",
              "| class | precision | recall | test images | predicted as |", "|---|---:|---:|---:|---:|"]
    for c in ev.per_class:
        lines.append(f"| {c.name} | {_pct(c.precision)} | {_pct(c.recall)} | {c.support:,} | {c.predicted:,} |")

    lines += ["", "## Most confident mistakes", "", f"![misclassified test images]({MISCLASSIFIED})", "",
              "Confident mistakes are worth a look: some are genuinely ambiguous or mislabelled digits, others "
              "show what the model has not learned.", ""]

    lines += ["## Config", "", "| option | value |", "|---|---|"]
    for key, value in config.items():
        lines.append(f"| {key} | {_config_value(key, value, config['model'])} |")
    lines += ["", "## Data and environment", ""]
    if data:
        lines.append(f"- Data: {data.get('dataset')} from {data.get('source')}.")
    if env:
        lines.append(f"- Python {env.get('python')}, torch {env.get('torch')}, numpy {env.get('numpy')}, "
                     f"{env.get('platform')}.")
    lines.append(f"- Created {payload.get('created', '?')}; report written {time.strftime('%Y-%m-%d %H:%M:%S')}.")
    lines.append("")
    return "\n".join(lines)


def write_run_report(
    run_dir: str | Path,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    logits: torch.Tensor | None = None,
    evaluation: RunEvaluation | None = None,
    data_dir: str | Path | None = None,
    top: int = 36,
) -> dict[str, Path]:
    """Evaluate a finished run's final weights on its test set and write the figures, the list of mistakes
    and report.md into its run directory. Returns the written paths by name.

    test, logits: the run's test set and final logits already in memory (see `evaluate_run`);
    evaluation: reuse one already computed.
    """
    run_dir = Path(run_dir)
    history = rundir.read_metrics(run_dir)
    _, payload = rundir.read_config(run_dir)
    summary = rundir.read_summary(run_dir)
    ev = evaluation or evaluate_run(run_dir, data_dir=data_dir, test=test, logits=logits)
    config = payload["config"]
    title = (f"{run_dir.name}: {config['model']} ({payload.get('params', 0):,} params) on {config['dataset']}, "
             f"final test accuracy {_pct(ev.accuracy)}")
    n_train = payload.get("data", {}).get("train_images")
    lr_steps = lr_by_step(config, n_train) if isinstance(n_train, int) else None
    out = {
        "curves": plot_curves(history, run_dir / CURVES, title, lr_steps),
        "confusion": plot_confusion(ev.confusion, ev.class_names, run_dir / CONFUSION,
                                    f"{run_dir.name}: test-set confusion matrix, accuracy {_pct(ev.accuracy)}"),
        "misclassified": plot_misclassified(ev, run_dir / MISCLASSIFIED, top),
        "misclassified_csv": write_misclassified_csv(ev, run_dir / MISCLASSIFIED_CSV),
    }
    text = format_report_md(run_dir, ev, history, payload, summary)
    tmp = run_dir / (REPORT + ".tmp")
    tmp.write_text(text)
    tmp.replace(run_dir / REPORT)
    out["report"] = run_dir / REPORT
    return out


# ---------------------------------------------------------------------------------------------- several runs
# Config keys that name or place a run rather than change what it learns.
_BOOKKEEPING = {"name", "runs_root"}


@dataclass
class RunInfo:
    run_dir: Path
    config: dict
    params: int
    history: list[dict]
    summary: dict | None  # None: the run did not finish
    train_images: int | None = None

    @property
    def label(self) -> str:
        return self.run_dir.name


def load_runs(run_dirs: list[str | Path]) -> list[RunInfo]:
    """Config, metrics and (if finished) summary of each run; a run without metrics is an error naming it."""
    if not run_dirs:
        raise TinyMnistError("report: no run directories given (usage: tinymnist report RUN_DIR [RUN_DIR ...])")
    runs = []
    for d in run_dirs:
        d = Path(d)
        _, payload = rundir.read_config(d)
        history = rundir.read_metrics(d)
        summary = rundir.read_summary(d) if (d / rundir.SUMMARY).is_file() else None
        n_train = payload.get("data", {}).get("train_images")
        runs.append(RunInfo(d, payload["config"], int(payload.get("params", 0)), history, summary,
                            n_train if isinstance(n_train, int) else None))
    return runs


def differing_options(runs: list[RunInfo]) -> list[str]:
    """Config options whose value is not the same in every run: what the comparison is about."""
    keys = [k for k in runs[0].config if k not in _BOOKKEEPING]
    return [k for k in keys if len({repr(r.config.get(k)) for r in runs}) > 1]


def _model_default_dropout(model: str) -> float | None:
    import inspect

    from .models import MODELS

    if model not in MODELS:
        return None
    param = inspect.signature(MODELS[model].factory).parameters.get("dropout")
    return None if param is None else param.default


def _option(run: RunInfo, key: str) -> str:
    """An option's value as a table cell; dropout None is resolved to the model's own rate."""
    v = run.config.get(key)
    if v is None and key == "dropout":
        d = _model_default_dropout(run.config.get("model", ""))
        return "default" if d is None else f"{d:g} (default)"
    return _short(v)


def _short(v: Any) -> str:
    if v is None:
        return "default"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def comparison_rows(runs: list[RunInfo]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table: run, the options that differ, then the results."""
    # Epochs have their own results column (it also marks an unfinished run): not a second one among the options.
    diff = [k for k in differing_options(runs) if k != "epochs"]
    header = ["run", *diff, "params", "epochs", "final test acc", "test loss", "train acc", "best epoch", "time"]
    rows = []
    for r in runs:
        last = r.history[-1]
        best = max(r.history, key=lambda m: m["test_acc"])
        epochs = f"{last['epoch']}" if r.summary else f"{last['epoch']}/{r.config['epochs']} (unfinished)"
        rows.append([
            r.label, *[_option(r, k) for k in diff], f"{r.params:,}", epochs,
            _pct(last["test_acc"]), f"{last['test_loss']:.4f}", _pct(last["train_acc"]),
            f"{_pct(best['test_acc'])} @{best['epoch']}", _duration(last["elapsed"]),
        ])
    return header, rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    # text columns left-aligned, numbers right-aligned
    left = {i for i, h in enumerate(header) if i == 0 or not any(ch.isdigit() for r in rows for ch in r[i][:1])}

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                               strict=True)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def plot_comparison(runs: list[RunInfo], path: str | Path, title: str = "", option: str = "") -> Path:
    """Overlay the runs' curves: one colour per run; train dashed, test solid (as in curves.png)."""
    diff = differing_options(runs)
    fig = _new_figure(16, 5.2)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    for i, r in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        label = r.label + (" (" + ", ".join(f"{k}={_option(r, k)}" for k in diff[:3]) + ")" if diff else "")
        marker = "o" if len(r.history) <= 30 else None
        for ax, key, scale in ((ax_loss, "loss", 1), (ax_acc, "acc", 100)):
            x, y = _series(r.history, f"test_{key}")
            ax.plot(x, [v * scale for v in y], "-", color=color, marker=marker, markersize=4, label=label)
            x, y = _series(r.history, f"train_{key}")
            # Train has no markers (they would crowd the test ones), except a lone point, drawn hollow so it
            # is not mistaken for a test point.
            ax.plot(x, [v * scale for v in y], "--", color=color, alpha=0.6, marker=_marker(len(x), None),
                    markersize=5, markerfacecolor="none")
        x, y = _series(r.history, "lr")
        steps = lr_by_step(r.config, r.train_images) if r.train_images else None
        # Runs often share a schedule: earlier runs are drawn wider, so a curve hidden under another still shows.
        width = 1.5 + 1.5 * (len(runs) - 1 - i) if len(runs) <= 4 else 1.5
        if steps is not None:
            ax_lr.plot(*steps, "-", color=color, linewidth=width)
            ax_lr.plot([e - 1 for e in x], y, "o", color=color, markersize=4)
            ax_lr.set_xlabel("training progress (epochs)")
        else:
            ax_lr.plot(x, y, "-", color=color, marker=marker, markersize=4)
    ax_loss.set(title="Loss (solid: test, dashed: train)", ylabel="cross-entropy (lower is better)")
    ax_acc.set(title="Accuracy (solid: test, dashed: train)", ylabel="accuracy (%)")
    ax_lr.set(title="Learning rate (dots: start of each epoch)", ylabel="learning rate")
    ax_lr.set_ylim(bottom=0)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    _style_epoch_axes(ax_loss, ax_acc, ax_lr)
    # One legend for the whole figure, below the panels, so it never covers a curve.
    handles, labels = ax_acc.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(runs)), fontsize=9)
    differ = f": {', '.join(diff)} differ" + ("s" if len(diff) == 1 else "") if diff else ""
    fig.suptitle(title or f"Comparison of {len(runs)} runs{differ}", fontsize=13)
    return _save(fig, Path(path), option, COMPARISON_MARK)


def is_comparison_figure(path: Path) -> bool:
    """Whether `path` is a figure written by `plot_comparison` (it carries COMPARISON_MARK)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            text = dict(getattr(im, "text", {}) or {})
    except Exception:  # noqa: BLE001 - not an image Pillow can read: not ours
        return False
    return all(text.get(k) == v for k, v in COMPARISON_MARK.items())


def compare_runs(run_dirs: list[str | Path], out: str | Path | None = None) -> tuple[str, Path]:
    """Comparison table (text) and the overlaid curves saved to `out` (default: comparison.png next to the
    first run)."""
    runs = load_runs(run_dirs)
    given = out is not None
    out = Path(out) if given else runs[0].run_dir.parent / "comparison.png"
    if out.suffix.lower() != ".png":
        raise TinyMnistError(f"--out {out}: the figure is saved as PNG; give a path ending in .png")
    if not out.parent.is_dir():
        why = "is not a folder" if out.parent.exists() else "does not exist"
        raise TinyMnistError(f"--out {out}: folder {out.parent} {why}")
    # Inside a run directory, a run's own figures (written or still to be written) and any other file there
    # stay untouched; only a previous comparison figure may be replaced.
    where = f"--out {out}" if given else str(out)
    if (out.parent / rundir.CONFIG).is_file() and (
            out.name in (CURVES, CONFUSION, MISCLASSIFIED) or (out.exists() and not is_comparison_figure(out))):
        raise TinyMnistError(f"{where}: a file of run directory {out.parent}, not a comparison figure; "
                             "choose another name")
    # Anywhere else too, an existing file is replaced only if it is an earlier comparison figure (a user's own
    # picture called comparison.png stays).
    if out.exists() and not is_comparison_figure(out):
        raise TinyMnistError(f"{where}: exists and is not an earlier comparison figure of tinymnist; not "
                             "overwritten (move it away or choose another --out)")
    header, rows = comparison_rows(runs)
    # The default location is no option of the user's: name --out in a write error only when it was given.
    return format_table(header, rows), plot_comparison(runs, out, option="--out" if given else "")
