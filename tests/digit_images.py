"""Helpers for the predict / export tests: digits rendered the way a person's would look, broken files of every
kind, and trained runs built once per test session."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tinymnist.config import TrainConfig
from tinymnist.train import train

# A model that trains in a second or two: fine for testing formats, errors and parity, not for accuracy.
QUICK = dict(train_subset=1000, test_subset=200, epochs=1, batch_size=100, threads=1)
# A model good enough to test accuracy with (~99% on MNIST) that still trains in ~20 s of CPU time.
GOOD = dict(train_subset=20000, test_subset=500, epochs=3, batch_size=64, lr=0.1, threads=1)

_runs: dict[str, Path] = {}


def trained_run(kind: str, root: Path, dataset: str = "mnist") -> Path:
    """A finished run directory, trained once per test session and reused (`kind`: "quick" or "good")."""
    key = f"{kind}-{dataset}"
    if key not in _runs:
        settings = QUICK if kind == "quick" else GOOD
        result = train(TrainConfig(**settings, dataset=dataset, runs_root=str(root), name=key))
        _runs[key] = result.run_dir
    return _runs[key]


def render_like_a_person(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 28x28 MNIST digit (white on black) as someone's photo or scan of it would be: dark ink on off-white
    paper, a few hundred pixels tall, somewhere off-centre on a larger sheet, in RGB."""
    side = int(rng.integers(100, 300))
    ink = Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BICUBIC)
    width, height = side + int(rng.integers(20, 160)), side + int(rng.integers(20, 160))
    paper = int(rng.integers(215, 256))
    sheet = Image.new("L", (width, height), paper)
    x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    sheet.paste(Image.fromarray(np.minimum(np.asarray(ink), paper).astype(np.uint8)), (x, y))
    tint = np.array([1.0, 0.98, 0.94], dtype=np.float32)  # warm paper, slightly blue-black ink
    rgb = np.asarray(sheet, dtype=np.float32)[..., None] * tint
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny, valid-looking PNG that claims to be width x height: a decompression bomb's signature."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def write_bad_files(folder: Path, good_png: Path) -> dict[str, Path]:
    """One file for each way an input can be unusable, keyed by what is wrong with it."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "empty": folder / "empty.png",
        "not an image": folder / "notes.png",
        "truncated": folder / "truncated.png",
        "blank": folder / "blank.jpg",
        "bomb": folder / "bomb.png",
    }
    files["empty"].write_bytes(b"")
    files["not an image"].write_text("this is a text file with an image suffix\n")
    data = good_png.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    Image.new("RGB", (240, 180), (250, 250, 248)).save(files["blank"], quality=90)
    png_header_only(files["bomb"], 100_000, 100_000)
    return files
