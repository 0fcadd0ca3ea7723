"""Prediction speed on the CPU: PyTorch and onnxruntime side by side, in one run.

Reports, for each backend:
  * single-image latency, model only (normalise + forward + softmax of one preprocessed 28x28 image) and with
    preprocessing included (decode + MNIST-style preprocessing of one person-like PNG, then the same), as the
    median over many calls;
  * batch throughput, model only (images/s over the first N test images, in the predictor's batches of 256);
  * end-to-end throughput of `predict_files` over a folder of PNG files (decode + preprocess + predict).

Run: `python benchmarks/predict_speed.py [RUN_DIR] [--threads 1]`. Without RUN_DIR a small model is trained
first (1 epoch on 5,000 images: a few seconds; speed does not depend on how well it was trained).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import onnxruntime
import torch
from PIL import Image

from tinymnist.cli import OneLineParser
from tinymnist.config import TrainConfig
from tinymnist.data import locate, read_split
from tinymnist.errors import TinyMnistError
from tinymnist.export import export
from tinymnist.models import count_parameters
from tinymnist.predict import Predictor, from_onnx, from_run_dir, predict_files
from tinymnist.preprocess import load_digit
from tinymnist.rundir import cpu_name, load_model
from tinymnist.train import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from digit_images import render_like_a_person  # noqa: E402 - the test suite's person-like rendering


def per_call_ms(fn, calls: int) -> float:
    fn()  # warm-up (first-call allocations, ORT graph setup)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * median(times)


def throughput(fn, n: int, repeats: int = 3) -> float:
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return n / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", help="a finished run directory (default: train a small one)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for both backends (default: 1)")
    parser.add_argument("--calls", type=int, default=300, help="calls per latency measurement (default: 300)")
    parser.add_argument("--batch", type=int, default=2000, help="test images for batch throughput (default: 2000)")
    parser.add_argument("--files", type=int, default=200, help="PNG files for end-to-end throughput (default: 200)")
    args = parser.parse_args()
    for flag, value in (("--threads", args.threads), ("--calls", args.calls), ("--batch", args.batch),
                        ("--files", args.files)):
        if value < 1:
            sys.exit(f"error: {flag} must be at least 1, got {value}")
    if args.files > 10_000:
        sys.exit(f"error: --files is at most 10,000 (one per test image), got {args.files:,}")
    torch.set_num_threads(args.threads)
    try:
        run(args)
    except TinyMnistError as e:
        sys.exit(f"error: {e}")


def run(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir = Path(args.run_dir) if args.run_dir else None
        if run_dir is None:
            print("no RUN_DIR given: training a small model (1 epoch, 5,000 images)...", flush=True)
            run_dir = train(TrainConfig(train_subset=5000, test_subset=1000, epochs=1, threads=args.threads,
                                        runs_root=str(tmp), name="bench")).run_dir
        model, config = load_model(run_dir)
        onnx_path = export(run_dir, "onnx", tmp / "model.onnx").path
        backends: dict[str, Predictor] = {
            "PyTorch": from_run_dir(run_dir),
            "onnxruntime": from_onnx(onnx_path, threads=args.threads),
        }

        split = read_split(locate(config.dataset, config.data_dir, allow_download=False)[0], "test")
        batch = split.images[: args.batch]
        rng = np.random.default_rng(0)
        files = tmp / "files"
        files.mkdir()
        for i in range(args.files):
            render_like_a_person(split.images[i].numpy(), rng).save(files / f"{i:04d}.png")
        sample = files / "0000.png"
        one = load_digit(sample)[None]

        print(f"CPU: {cpu_name()}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
              f"{args.threads} thread(s) each")
        print(f"model: {config.model} ({count_parameters(model):,} parameters) from {run_dir}")
        prep_ms = per_call_ms(lambda: load_digit(sample), args.calls)
        rows = {}
        for name, predictor in backends.items():
            rows[name] = (
                per_call_ms(lambda p=predictor: p.probabilities(one), args.calls),
                per_call_ms(lambda p=predictor: p.probabilities(load_digit(sample)[None]), args.calls),
                throughput(lambda p=predictor: p.probabilities(batch), len(batch)),
                throughput(lambda p=predictor: predict_files(p, [files]), args.files, repeats=1),
            )
        w = 44
        print(f"{'':<{w}}{'PyTorch':>12}{'onnxruntime':>14}")
        labels = ["single image, model only (ms, median)", "single image, with preprocessing (ms)",
                  f"batch of {len(batch)}, model only (images/s)", f"{args.files} PNG files end to end (images/s)"]
        for i, label in enumerate(labels):
            a, b = rows["PyTorch"][i], rows["onnxruntime"][i]
            fmt = "{:>12.3f}{:>14.3f}" if i < 2 else "{:>12,.0f}{:>14,.0f}"
            print(f"{label:<{w}}" + fmt.format(a, b))
        with Image.open(sample) as img:
            size = "x".join(map(str, img.size))
        print(f"(preprocessing alone: {prep_ms:.2f} ms median for a {size} RGB PNG: decode, grey, invert, "
              "crop, scale, centre)")


if __name__ == "__main__":
    main()
