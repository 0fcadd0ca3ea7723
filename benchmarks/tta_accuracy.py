"""Test-time augmentation (TTA), measured and labelled: for each finished run, the accuracy of its saved model on
its validation split (if it has one) and on its test set, plain and with TTA.

The TTA scheme is fixed here and not tuned: five views of every image (as it is, and shifted by one pixel up, down,
left and right, the background filling in), the class probabilities averaged over the views. It costs five forward
passes per image instead of one. A TTA figure is never the model's plain final-epoch accuracy and is reported
beside it, labelled; whether TTA helps is judged on validation splits first.

    python benchmarks/tta_accuracy.py runs/experiments/tiny8k_recipe_val/*/
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn as nn

from tinymnist.cli import OneLineParser
from tinymnist.data import NORMALIZATION, locate
from tinymnist.errors import TinyMnistError
from tinymnist.evaluate import predict_logits
from tinymnist.rundir import load_model
from tinymnist.train import prepare_data

SHIFTS = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]  # (rows, columns): the image itself and four 1-pixel shifts


def shifted(images: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """The images moved by (dy, dx) pixels; what moves into view is background (`fill`)."""
    if dy == dx == 0:
        return images
    h, w = images.shape[-2:]
    padded = nn.functional.pad(images, (1, 1, 1, 1), value=fill)
    return padded[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def accuracies(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, fill: float) -> tuple[float, float]:
    """(plain accuracy, TTA accuracy): the unshifted view is the plain prediction and the first of the five."""
    probs = [predict_logits(model, shifted(images, dy, dx, fill)).softmax(1) for dy, dx in SHIFTS]
    return tuple((p.argmax(1) == labels).float().mean().item() for p in (probs[0], sum(probs)))


def main() -> None:
    p = OneLineParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run directories")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    args = p.parse_args()
    if args.threads < 0:
        sys.exit(f"error: --threads must not be negative, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:  # every run directory, and the data it was trained on, is checked before any work starts
        runs = [(run, *load_model(run)) for run in args.runs]
        for _, _, config in runs:
            locate(config.dataset, config.data_dir, allow_download=False)
    except TinyMnistError as e:
        sys.exit(f"error: {e}")
    print(f"{'run':<48}{'val':>8}{'val+TTA':>9}{'test':>8}{'test+TTA':>10}")
    gains: dict[str, list[float]] = {"val": [], "test": []}
    for run, model, config in runs:
        try:
            data = prepare_data(config)
        except TinyMnistError as e:
            sys.exit(f"error: {e}")
        fill = -NORMALIZATION[config.dataset][0] / NORMALIZATION[config.dataset][1]
        row = {}
        for split, x, y in (("val", data.val_x, data.val_y), ("test", data.test_x, data.test_y)):
            if x is None:
                continue
            plain, tta = accuracies(model, x, y, fill)
            row[split] = (plain, tta)
            gains[split].append(tta - plain)
        cells = [f"{100 * row[split][i]:{width}.2f}" if split in row else f"{'-':>{width}}"
                 for split, i, width in (("val", 0, 8), ("val", 1, 9), ("test", 0, 8), ("test", 1, 10))]
        label = "/".join(Path(run).parts[-2:])  # suite/run: enough to tell the rows apart
        print(f"{label[-47:]:<48}{''.join(cells)}", flush=True)
    for split, g in gains.items():
        if g:
            better = sum(d > 0 for d in g)
            worse = sum(d < 0 for d in g)
            print(f"TTA on {split}: mean change {100 * statistics.mean(g):+.3f} points over {len(g)} run(s) "
                  f"({better} better, {worse} worse, {len(g) - better - worse} equal)")


if __name__ == "__main__":
    main()
