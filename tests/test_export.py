"""`tinymnist export`: ONNX parity with PyTorch (through onnxruntime), TorchScript round trip, metadata that lets
`predict` use the file directly, and no half-written or unchecked files left behind."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from digit_images import render_like_a_person, trained_run

from tinymnist import export as export_module
from tinymnist.cli import main
from tinymnist.data import CLASS_NAMES, normalize, read_split
from tinymnist.errors import TinyMnistError
from tinymnist.predict import from_run_dir, load_predictor, predict_files
from tinymnist.rundir import load_model


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, mnist_dir):
    return trained_run("quick", tmp_path_factory.getbasetemp() / "predict-runs")


@pytest.fixture(scope="module")
def exported(quick_run, tmp_path_factory):
    """One ONNX export through the CLI, shared by the tests below (an export takes a few seconds):
    (folder it was written to, what the command printed)."""
    folder = tmp_path_factory.mktemp("onnx")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(quick_run), "--out", str(folder)]) == 0  # a folder: default name inside
    return folder, printed.getvalue()


@pytest.fixture(scope="module")
def onnx_file(exported):
    return exported[0] / "model.onnx"


@pytest.fixture(scope="module")
def test_images(mnist_dir):
    split = read_split(mnist_dir, "test")
    return split.images[:300], split.labels[:300]


def test_onnx_matches_pytorch(quick_run, onnx_file, test_images):
    model, _ = load_model(quick_run)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    x = normalize(test_images[0])
    with torch.no_grad():
        reference = model(x)
    for batch in (1, 7, 300):  # the batch axis is dynamic
        logits = session.run(None, {"images": x[:batch].numpy()})[0]
        assert np.abs(logits - reference[:batch].numpy()).max() < 1e-4


def test_export_reports_parity(exported):
    folder, out = exported
    assert f"wrote {folder / 'model.onnx'}" in out
    diff = float(out.split("max |logit difference| vs PyTorch ")[1].split()[0])
    assert diff < 1e-4 and "the first 512 mnist test images" in out and "same prediction for 100.00%" in out
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx"]  # no temporary file left


def test_onnx_carries_what_predict_needs(onnx_file):
    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert props["tinymnist.dataset"] == "mnist" and props["tinymnist.model"] == "tiny20k"
    assert float(props["tinymnist.mean"]) == 0.1307 and float(props["tinymnist.std"]) == 0.3081
    assert json.loads(props["tinymnist.class_names"]) == CLASS_NAMES["mnist"]


def test_predict_on_onnx_equals_predict_on_run(quick_run, onnx_file, tmp_path, test_images, capsys):
    rng = np.random.default_rng(0)
    for i in range(5):
        render_like_a_person(test_images[0][i].numpy(), rng).save(tmp_path / f"{i}.png")
    via_onnx = predict_files(load_predictor(onnx_file), [tmp_path], top=3)
    via_torch = predict_files(from_run_dir(quick_run), [tmp_path], top=3)
    for a, b in zip(via_onnx, via_torch, strict=True):
        assert a.label == b.label and a.probability == pytest.approx(b.probability, abs=1e-5)
    assert main(["predict", str(onnx_file), str(tmp_path / "0.png")]) == 0
    assert "onnxruntime" in capsys.readouterr().out.splitlines()[0]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_round_trip(quick_run, tmp_path, test_images, capsys):
    out = tmp_path / "m.pt"
    assert main(["export", str(quick_run), "--format", "torchscript", "--out", str(out)]) == 0
    assert "TorchScript (reloaded)" in capsys.readouterr().out
    model, _ = load_model(quick_run)
    extra = {"tinymnist.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    x = normalize(test_images[0][:50])
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert json.loads(extra["tinymnist.json"])["tinymnist.dataset"] == "mnist"
    predictor = load_predictor(out)
    assert predictor.backend == "torchscript" and predictor.class_names == CLASS_NAMES["mnist"]
    labels = predictor.probabilities(test_images[0][:50]).argmax(1)
    with torch.no_grad():
        assert torch.equal(labels, model(x).argmax(1))
    # Exporting again to the same place replaces the earlier export: that is no one's lost work.
    assert export_module.is_export(out, "torchscript") and not export_module.is_export(out, "onnx")
    assert main(["export", str(quick_run), "--format", "torchscript", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_failed_parity_writes_nothing(quick_run, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "PARITY_TOLERANCE", 0.0)  # nothing can pass
    out = tmp_path / "never.pt"
    with pytest.raises(TinyMnistError, match="differs from PyTorch by up to .* file not written"):
        export_module.export(quick_run, "torchscript", out, n_check=16)
    assert list(tmp_path.iterdir()) == []


def test_export_of_unfinished_run_is_a_one_line_error(quick_run, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(quick_run, broken)
    (broken / "model.pt").unlink()
    assert main(["export", str(broken)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.pt: missing" in err[0]
    assert not (broken / "model.onnx").exists()


def test_export_never_overwrites_run_files(quick_run, capsys):
    before = (quick_run / "model.pt").read_bytes()
    assert main(["export", str(quick_run), "--format", "torchscript", "--out", str(quick_run / "model.pt")]) == 1
    assert "a run directory's own file" in capsys.readouterr().err
    assert (quick_run / "model.pt").read_bytes() == before


def test_export_never_writes_into_another_run(quick_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(quick_run, other)
    before = sorted(p.name for p in other.iterdir())
    msg = one_line_error(capsys, ["export", str(quick_run), "--out", f"{other}/"])
    assert f"{other} is another run's directory" in msg
    assert sorted(p.name for p in other.iterdir()) == before


def test_unknown_format_is_refused(quick_run, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", str(quick_run), "--format", "tflite"])
    assert e.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("tinymnist: error: "), captured.err
    return lines[0]


def test_out_folder_and_missing_folder(quick_run, tmp_path, capsys):
    # An existing folder, or a path ending in a slash, means "the default name in that folder".
    assert export_module._out_path(quick_run, "onnx", tmp_path) == tmp_path / "model.onnx"
    assert export_module._out_path(quick_run, "torchscript", f"{tmp_path}/") == tmp_path / "model.torchscript.pt"
    # A folder that does not exist is refused, not created, and never written as a file of that name.
    new = tmp_path / "new"
    msg = one_line_error(capsys, ["export", str(quick_run), "--out", f"{new}/"])
    assert f"folder {new} does not exist" in msg
    msg = one_line_error(capsys, ["export", str(quick_run), "--out", str(new / "deeper" / "m.onnx")])
    assert f"folder {new / 'deeper'} does not exist" in msg
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt,name,message", [
    ("torchscript", "ts.onnx", "a TorchScript file must end in .pt, .pth, .ts or .torchscript (.onnx is for --format "
                               "onnx)"),
    ("torchscript", "ts.md", "a TorchScript file must end in"),
    ("onnx", "model.pt", "an ONNX file must end in .onnx"),
    ("onnx", "precious.md", "an ONNX file must end in .onnx"),
])
def test_suffix_must_match_the_format(quick_run, tmp_path, capsys, fmt, name, message):
    """predict picks ONNX by the .onnx suffix: a file named for the other format would not load there."""
    (tmp_path / "precious.md").write_text("# my notes\n")
    msg = one_line_error(capsys, ["export", str(quick_run), "--format", fmt, "--out", str(tmp_path / name)])
    assert message in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.md"]
    assert (tmp_path / "precious.md").read_text() == "# my notes\n"


def test_other_files_are_never_overwritten(quick_run, onnx_file, tmp_path, capsys):
    foreign_onnx = tmp_path / "theirs.onnx"
    foreign_onnx.write_bytes(b"\x08\x01not tinymnist's")
    weights = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(3)}, weights)
    before = {p: p.read_bytes() for p in (foreign_onnx, weights)}
    msg = one_line_error(capsys, ["export", str(quick_run), "--out", str(foreign_onnx)])
    assert "exists and is not a previous onnx export of tinymnist; not overwritten" in msg
    msg = one_line_error(capsys, ["export", str(quick_run), "--format", "torchscript", "--out", str(weights)])
    assert "is not a previous torchscript export" in msg
    assert {p: p.read_bytes() for p in before} == before and len(list(tmp_path.iterdir())) == 2
    # An earlier ONNX export is recognised by its metadata (and may be replaced by the next one).
    assert export_module.is_export(onnx_file, "onnx") and not export_module.is_export(onnx_file, "torchscript")
    assert not export_module.is_export(foreign_onnx, "onnx")
