"""How well a trained run reads MNIST test digits re-rendered the way a person's photo or scan would look, with
our preprocessing, without it, and with the common "invert and resize to 28x28" recipe; plus the two MNIST
statistics the preprocessing is built on (centre of mass, stroke width).

    python benchmarks/preprocess_accuracy.py runs/default-acceptance --n 500

The re-rendering (dark ink on off-white paper, 100-300 px, off-centre on a larger RGB sheet) is
`render_like_a_person` in tests/digit_images.py, the same one the acceptance test uses; seed 0.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from digit_images import render_like_a_person  # noqa: E402

from tinymnist.cli import OneLineParser
from tinymnist.data import load_dataset  # noqa: E402
from tinymnist.errors import TinyMnistError  # noqa: E402
from tinymnist.predict import from_run_dir  # noqa: E402
from tinymnist.preprocess import as_is, centre_of_mass, load_digit, stroke_width  # noqa: E402


def naive(path: Path) -> torch.Tensor:
    """What many tutorials do: grey, invert, squash to 28x28; no cropping, centring or background removal."""
    grey = np.asarray(Image.open(path).convert("L").resize((28, 28), Image.Resampling.BILINEAR), dtype=np.uint8)
    return torch.from_numpy(255 - grey)


def main() -> None:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a finished MNIST run directory")
    p.add_argument("--n", type=int, default=500, help="first N test digits (default 500)")
    args = p.parse_args()
    try:
        predictor = from_run_dir(args.run_dir)
        test = load_dataset("mnist").test
    except TinyMnistError as e:
        sys.exit(f"error: {e}")
    if not 1 <= args.n <= len(test):
        sys.exit(f"error: --n must be between 1 and {len(test)}, got {args.n}")
    images, labels = test.images[: args.n], test.labels[: args.n]

    def acc(batch: torch.Tensor) -> float:
        return float((predictor.probabilities(batch).argmax(1) == labels).float().mean())

    rng = np.random.default_rng(0)
    results = {"originals (28x28 MNIST)": acc(images)}
    with tempfile.TemporaryDirectory() as d:
        paths = {"png": [], "jpg": []}
        for i in range(args.n):
            img = render_like_a_person(images[i].numpy(), rng)
            for fmt, kw in (("png", {"compress_level": 1}), ("jpg", {"quality": 85})):
                path = Path(d) / f"{i:04d}.{fmt}"
                img.save(path, **kw)
                paths[fmt].append(path)
        results["re-rendered PNG, preprocessed"] = acc(torch.stack([load_digit(x) for x in paths["png"]]))
        results["re-rendered JPEG (q85), preprocessed"] = acc(torch.stack([load_digit(x) for x in paths["jpg"]]))
        results["re-rendered PNG, --no-normalize"] = acc(
            torch.stack([as_is(Image.open(x)) for x in paths["png"]]))
        results["re-rendered PNG, invert + resize"] = acc(torch.stack([naive(x) for x in paths["png"]]))
    print(f"model: {predictor.source} ({predictor.model_name}); first {args.n} MNIST test digits")
    for k, v in results.items():
        print(f"  {k:<40} {100 * v:6.1f}%")

    x = test.images.numpy().astype(np.float32) / 255.0
    com = np.array([centre_of_mass(im) for im in x])
    widths = np.array([stroke_width(im) for im in x])
    print(f"MNIST test set ({len(x):,} digits): mean centre of mass (row, col) = ({com[:, 0].mean():.2f}, "
          f"{com[:, 1].mean():.2f}); median stroke width {np.median(widths):.2f} px")


if __name__ == "__main__":
    main()
