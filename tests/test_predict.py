"""`tinymnist predict`: many files at once, folders, text and JSON output, per-file errors, and the acceptance
test: a person's renderings of test digits are read as well as the digits themselves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from digit_images import render_like_a_person, trained_run, write_bad_files
from PIL import Image

from tinymnist.cli import main
from tinymnist.data import CLASS_NAMES, normalize, read_split
from tinymnist.errors import TinyMnistError, first_line
from tinymnist.predict import from_run_dir, load_predictor, predict_files
from tinymnist.rundir import load_model


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, mnist_dir):
    return trained_run("quick", tmp_path_factory.getbasetemp() / "predict-runs")


@pytest.fixture(scope="module")
def test_split(mnist_dir):
    return read_split(mnist_dir, "test")


@pytest.fixture
def photos(tmp_path, test_split):
    """Four renderings of test digits (two in a subfolder, one JPEG) plus a file that is not an image."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    paths = []
    for i in range(4):
        path = folder / ("more" if i >= 2 else "") / f"digit{i}.{'jpg' if i == 3 else 'png'}"
        render_like_a_person(test_split.images[i].numpy(), rng).save(path)
        paths.append(path)
    (folder / "readme.txt").write_text("not an image, and not picked up from a folder\n")
    return folder, paths


def test_predict_text_output(quick_run, photos, capsys):
    folder, paths = photos
    assert main(["predict", str(quick_run), str(folder), "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"model: {quick_run} (") and "pytorch" in out[0]
    assert len(out) == 1 + 4  # the .txt file is skipped, the subfolder is read
    for line, path in zip(out[1:], sorted(paths), strict=True):
        assert line.startswith(str(path)) and "top 2:" in line and line.count("%") == 3


def test_predict_json(quick_run, photos, capsys):
    folder, paths = photos
    assert main(["predict", str(quick_run), str(paths[0]), str(paths[3]), "--json", "--top", "4"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dataset"] == "mnist" and doc["backend"] == "pytorch" and doc["failed"] == 0
    assert [p["file"] for p in doc["predictions"]] == [str(paths[0]), str(paths[3])]
    for p in doc["predictions"]:
        probs = [t["probability"] for t in p["top"]]
        assert len(probs) == 4 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert p["class"] == p["top"][0]["class"] == str(p["label"]) and p["probability"] == probs[0]


def test_bad_files_fail_alone(quick_run, photos, tmp_path, capsys):
    folder, paths = photos
    bad = write_bad_files(tmp_path / "bad", paths[0])
    missing = tmp_path / "nowhere.png"
    code = main(["predict", str(quick_run), str(paths[0]), *map(str, bad.values()), str(missing), str(paths[1])])
    captured = capsys.readouterr()
    assert code == 1
    out = captured.out.splitlines()
    assert [line.split()[0] for line in out[1:]] == [str(paths[0]), str(paths[1])]  # the good ones, still predicted
    errors = captured.err.splitlines()
    assert len(errors) == len(bad) + 1 + 1  # one line per bad file, then the count
    for line, path in zip(errors, [*bad.values(), missing], strict=False):
        assert line.startswith(f"tinymnist: error: {path}: ")
    assert errors[-1] == f"{len(bad) + 1} of {len(bad) + 3} input(s) failed"
    assert "Traceback" not in captured.err


def test_bad_files_in_json(quick_run, photos, tmp_path, capsys):
    folder, paths = photos
    bad = write_bad_files(tmp_path / "bad", paths[0])
    assert main(["predict", str(quick_run), str(tmp_path / "bad"), str(paths[0]), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["failed"] == len(bad)
    errors = {p["file"]: p["error"] for p in doc["predictions"] if "error" in p}
    assert set(errors) == {str(p) for p in bad.values()}
    assert "decompression bomb" in errors[str(bad["bomb"])] and "no ink" in errors[str(bad["blank"])]
    assert doc["predictions"][-1]["label"] is not None


def test_empty_folder_is_an_error(quick_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert main(["predict", str(quick_run), str(tmp_path / "empty")]) == 1
    assert "no image files in this folder" in capsys.readouterr().err


def test_run_without_weights_is_a_one_line_error(quick_run, tmp_path, photos):
    broken = tmp_path / "broken"
    shutil.copytree(quick_run, broken)
    (broken / "model.pt").unlink()
    r = subprocess.run([sys.executable, "-m", "tinymnist", "predict", str(broken), str(photos[1][0])],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"tinymnist: error: {broken / 'model.pt'}: missing (the run has no "
                                             "final weights; did it finish?)"]


@pytest.mark.parametrize("model,message", [
    ("nowhere", "no such run directory or model file"),
    ("notes.txt", "not a run directory, an ONNX file (.onnx) or a TorchScript file"),
    ("README.md", "not a run directory, an ONNX file (.onnx) or a TorchScript file"),
    ("weights.pt", "a file saved with torch.save (weights or a checkpoint), not a model"),
    ("fake.onnx", "cannot load ONNX model"),
])
def test_bad_model_argument(tmp_path, model, message):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "README.md").write_text("# tinymnist\n\nnot a model\n")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "weights.pt")
    (tmp_path / "fake.onnx").write_bytes(b"\x08\x01garbage")
    with pytest.raises(TinyMnistError, match=re.escape(message)) as e:
        load_predictor(tmp_path / model)
    # torch's reader explains corruption at length; none of that reaches the user.
    assert "PytorchStreamReader" not in str(e.value) and len(str(e.value).replace(str(tmp_path), "")) < 200


def test_checkpoint_points_at_its_run(quick_run, photos, capsys):
    assert main(["predict", str(quick_run / "checkpoint.pt"), str(photos[1][0])]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tinymnist: error: {quick_run / 'checkpoint.pt'}: a run's training checkpoint, not a model; "
                   f"give the run directory {quick_run} instead"]


def test_long_library_errors_are_cut_at_the_first_sentence():
    long = ("PytorchStreamReader failed reading zip archive: not a ZIP archive. This is an internal miniz error. If "
            "you are seeing this error, there is a high likelihood that your checkpoint file is corrupted. This can "
            "happen if the checkpoint was not saved properly, or the file was modified after saving.")
    assert first_line(RuntimeError(long)) == "PytorchStreamReader failed reading zip archive: not a ZIP archive"
    assert len(first_line(RuntimeError("x" * 500))) == 200
    assert first_line(RuntimeError("short. message\nsecond line")) == "short. message"


def hand_made_onnx(path, batch, channels=1) -> np.ndarray:
    """A linear 'model' written with onnx.helper, as a file made outside tinymnist would be: no metadata, and
    possibly a fixed batch size. Returns its weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(channels * 28 * 28, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["y"])],
        "linear", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, channels, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return w


def test_foreign_onnx_with_fixed_batch(tmp_path, test_split):
    w = hand_made_onnx(tmp_path / "linear.onnx", batch=4)
    predictor = load_predictor(tmp_path / "linear.onnx")
    assert predictor.dataset == "mnist" and predictor.class_names == [str(i) for i in range(10)]  # the defaults
    images = test_split.images[:6]  # not a multiple of 4: the last chunk is padded, then trimmed
    expected = torch.softmax(normalize(images).flatten(1) @ torch.from_numpy(w), 1)
    assert torch.allclose(predictor.probabilities(images), expected, atol=1e-5)


def test_onnx_with_the_wrong_input_shape(tmp_path):
    hand_made_onnx(tmp_path / "rgb.onnx", batch=1, channels=3)
    with pytest.raises(TinyMnistError, match=r"input has shape \[1, 3, 28, 28\], expected \[batch, 1, 28, 28\]"):
        load_predictor(tmp_path / "rgb.onnx")


def test_top_must_be_positive(quick_run, photos, capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", str(quick_run), str(photos[1][0]), "--top", "0"])
    assert e.value.code == 2 and "--top: expected a positive integer" in capsys.readouterr().err


def test_weights_file_means_its_run(quick_run):
    assert load_predictor(quick_run / "model.pt").source == str(quick_run)


def test_no_normalize_feeds_the_pixels_as_they_are(quick_run, tmp_path, test_split):
    """With --no-normalize an MNIST image reaches the model untouched: same probabilities as the model gives the
    dataset tensor directly."""
    for i in range(3):
        Image.fromarray(test_split.images[i].numpy()).save(tmp_path / f"{i}.png")
    preds = predict_files(from_run_dir(quick_run), [tmp_path], top=1, normalize=False)
    model, _ = load_model(quick_run)
    with torch.no_grad():
        direct = torch.softmax(model(normalize(test_split.images[:3])), 1)
    for p, row in zip(preds, direct, strict=True):
        assert p.label == int(row.argmax()) and p.probability == pytest.approx(float(row.max()), abs=1e-6)


def test_fashion_mnist_class_names(tmp_path_factory, tmp_path, capsys):
    import os

    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        if os.environ.get("CI"):
            pytest.fail("dataset-fashion-mnist missing under CI")
        pytest.skip("dataset-fashion-mnist not installed")
    run = trained_run("quick", tmp_path_factory.getbasetemp() / "predict-runs", dataset="fashion-mnist")
    split = read_split("/usr/share/datasets/fashion-mnist", "test")
    # A photo of a garment: dark on a light background, as a shop picture would be.
    render_like_a_person(split.images[0].numpy(), np.random.default_rng(0)).save(tmp_path / "item.png")
    assert main(["predict", str(run), str(tmp_path / "item.png"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dataset"] == "fashion-mnist"
    assert {t["class"] for t in doc["predictions"][0]["top"]} <= set(CLASS_NAMES["fashion-mnist"])


# ------------------------------------------------------------------------------------------------ acceptance
@pytest.mark.slow
def test_a_persons_digits_are_read_as_well_as_mnist(tmp_path_factory, tmp_path, test_split):
    """Acceptance: 1,000 test digits re-rendered as a person's would be (dark ink on paper, a few hundred px,
    off-centre, RGB PNG and JPEG) are predicted within 1 point of the model's accuracy on the originals."""
    run = trained_run("good", tmp_path_factory.getbasetemp() / "predict-runs")
    n = 1000  # at ~99% accuracy, one point is 10 images: room for the model to differ a little across CPUs
    images, labels = test_split.images[:n], test_split.labels[:n]
    predictor = from_run_dir(run)
    original_acc = float((predictor.probabilities(images).argmax(1) == labels).float().mean())
    assert original_acc > 0.97  # the model must be good for the comparison to mean something

    rng = np.random.default_rng(0)
    for fmt in ("png", "jpg"):
        (tmp_path / fmt).mkdir()
    for i in range(n):
        img = render_like_a_person(images[i].numpy(), rng)
        img.save(tmp_path / "png" / f"{i:04d}.png", compress_level=1)
        img.save(tmp_path / "jpg" / f"{i:04d}.jpg", quality=85)
    for fmt in ("png", "jpg"):
        preds = predict_files(predictor, [tmp_path / fmt])
        assert all(p.error is None for p in preds)
        acc = float(np.mean([p.label == int(y) for p, y in zip(preds, labels, strict=True)]))
        print(f"{fmt}: accuracy {acc:.4f} on re-rendered digits vs {original_acc:.4f} on the originals")
        assert abs(acc - original_acc) <= 0.01, (fmt, acc, original_acc)
