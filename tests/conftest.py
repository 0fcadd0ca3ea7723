"""Shared fixtures. Real MNIST must be present (every dev and CI machine has ../shared/data/mnist): if it is
missing, tests that need it fail loudly instead of skipping."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from tinymnist.data import locate


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    directory, _ = locate("mnist", allow_download=False)  # raises (test fails) when not found
    return directory


def write_idx(path: Path, tensor: torch.Tensor, compress: bool = True) -> Path:
    """Write a uint8 tensor as an IDX file (the format MNIST ships in)."""
    header = struct.pack(">HBB", 0, 0x08, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    payload = header + tensor.to(torch.uint8).numpy().tobytes()
    if compress:
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def make_dataset_dir(directory: Path, n_train: int = 64, n_test: int = 32, compress: bool = True) -> Path:
    """A small but well-formed MNIST-style dataset of random images and labels."""
    g = torch.Generator().manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}",
                  torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}",
                  torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8), compress)
    return directory
