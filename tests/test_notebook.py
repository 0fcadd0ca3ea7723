"""The walkthrough notebook runs top to bottom without a cell error (in fast mode: small data, one epoch)."""

import json
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "MNIST_Training_in_less_than_20k_Params.ipynb"


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch, mnist_dir):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    # A kernel spec that starts *this* interpreter (the venv's python, with the package under test), whatever
    # kernels the machine has registered: JUPYTER_PATH is searched first.
    spec_dir = tmp_path / "jupyter" / "kernels" / "tinymnist-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tinymnist test", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("TINYMNIST_FAST", "1")  # the kernel inherits this environment

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="tinymnist-test", timeout=600,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "fast mode: True" in text
    assert "final test accuracy" in text and "dropout 0.2 minus dropout 0.0" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # digit grid, augmentation grid, curves, confusion, mistakes, comparison
