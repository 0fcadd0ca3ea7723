"""Predict: image files -> digits (or Fashion-MNIST classes), from a run directory or an exported model.

A *predictor* wraps whatever runs the network: the PyTorch model of a run directory, an ONNX file (through
onnxruntime) or a TorchScript file. Each knows which dataset its model was trained on, hence the normalisation
to apply and the class names. Files are preprocessed one by one (`preprocess.py`); a file that cannot be read
becomes an error entry for that file only, and the rest are predicted in batches.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import CLASS_NAMES, NORMALIZATION
from .errors import TinyMnistError, first_line
from .preprocess import FIELD, IMAGE_SUFFIXES, load_digit

# Keys of the metadata an exported model carries (ONNX metadata_props / a TorchScript extra file).
META_PREFIX = "tinymnist."
TORCHSCRIPT_META = "tinymnist.json"
# `load_predictor` takes a file ending in .onnx for ONNX and reads any other file's content to tell a TorchScript
# archive; `export` writes only these suffixes, so each file it writes is recognised for what it is.
ONNX_SUFFIX = ".onnx"
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")


# ------------------------------------------------------------------------------------------------ predictors
@dataclass
class Predictor:
    """Runs a trained network on uint8 [N, 28, 28] images; normalises them the way its training did."""

    source: str  # what was loaded, for messages
    backend: str  # "pytorch", "onnxruntime" or "torchscript"
    dataset: str
    model_name: str
    mean: float
    std: float
    class_names: list[str]
    # the network itself: normalised float32 [N, 1, 28, 28] -> logits [N, C]
    forward: Callable[[torch.Tensor], torch.Tensor] = field(repr=False, default=lambda x: x)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 28, 28] -> logits [N, C]. The same arithmetic as `data.normalize`, but with this model's
        mean/std, which for an exported file come from its metadata."""
        x = ((images.float() / 255.0 - self.mean) / self.std).unsqueeze(1)
        return self.forward(x)

    def probabilities(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """uint8 [N, 28, 28] -> class probabilities [N, C], in batches."""
        if len(images) == 0:
            return torch.zeros(0, len(self.class_names))
        chunks = [self.logits(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return torch.softmax(torch.cat(chunks).float(), dim=1)


def _predictor(dataset: str, model_name: str, source: str, backend: str, run) -> Predictor:
    mean, std = NORMALIZATION[dataset]
    return Predictor(source=source, backend=backend, dataset=dataset, model_name=model_name, mean=mean, std=std,
                     class_names=list(CLASS_NAMES[dataset]), forward=run)


def from_run_dir(run_dir: str | Path) -> Predictor:
    from .rundir import load_model

    model, config = load_model(run_dir)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        return model(x)

    return _predictor(config.dataset, config.model, str(run_dir), "pytorch", run)


def _from_meta(meta: dict[str, str], path: Path, backend: str, run, n_classes: int) -> Predictor:
    """A predictor from exported metadata; a file made elsewhere (no metadata) is taken to be an MNIST model."""
    dataset = meta.get(META_PREFIX + "dataset", "mnist")
    if dataset not in NORMALIZATION:
        raise TinyMnistError(f"{path}: model metadata names an unknown dataset '{dataset}'")
    p = _predictor(dataset, meta.get(META_PREFIX + "model", "unknown"), str(path), backend, run)
    try:
        p.mean = float(meta.get(META_PREFIX + "mean", p.mean))
        p.std = float(meta.get(META_PREFIX + "std", p.std))
        if META_PREFIX + "class_names" in meta:
            p.class_names = [str(c) for c in json.loads(meta[META_PREFIX + "class_names"])]
    except (ValueError, TypeError) as e:
        raise TinyMnistError(f"{path}: unreadable model metadata ({e})") from None
    if len(p.class_names) != n_classes:
        p.class_names = [str(i) for i in range(n_classes)]
    return p


def from_onnx(path: str | Path, threads: int = 0) -> Predictor:
    path = Path(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise TinyMnistError(f"{path}: predicting with an ONNX file needs 'onnxruntime' (pip install onnxruntime)") \
            from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: keep ORT's informational lines out of our output
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad/missing files
        raise TinyMnistError(f"{path}: cannot load ONNX model ({first_line(e)})") from None
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    shape = list(inp.shape)
    if len(shape) != 4 or shape[1:] != [1, FIELD, FIELD]:
        raise TinyMnistError(f"{path}: model input has shape {shape}, expected [batch, 1, 28, 28]")
    fixed_batch = shape[0] if isinstance(shape[0], int) else None
    n_classes = out.shape[-1] if isinstance(out.shape[-1], int) else 10

    def run(x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        if fixed_batch is None:
            return torch.from_numpy(session.run([out.name], {inp.name: arr})[0])
        # A model exported with a fixed batch size: feed it chunks of that size, padding the last one.
        parts = []
        for i in range(0, len(arr), fixed_batch):
            chunk = arr[i:i + fixed_batch]
            pad = fixed_batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
            parts.append(session.run([out.name], {inp.name: chunk})[0][:fixed_batch - pad])
        return torch.from_numpy(np.concatenate(parts))

    meta = dict(session.get_modelmeta().custom_metadata_map)
    return _from_meta(meta, path, "onnxruntime", run, n_classes)


def from_torchscript(path: str | Path) -> Predictor:
    path = Path(path)
    extra = {TORCHSCRIPT_META: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream, still works
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:  # noqa: BLE001
        raise TinyMnistError(f"{path}: cannot load TorchScript model ({first_line(e)})") from None
    module.eval()
    try:
        meta = json.loads(extra[TORCHSCRIPT_META] or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinyMnistError(f"{path}: unreadable model metadata ({e})") from None

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        return module(x)

    try:
        n_classes = int(run(torch.zeros(1, 1, FIELD, FIELD)).shape[-1])
    except Exception as e:  # noqa: BLE001
        raise TinyMnistError(f"{path}: model does not take [batch, 1, 28, 28] images ({first_line(e)})") from None
    return _from_meta(meta, path, "torchscript", run, n_classes)


def archive_names(path: Path) -> list[str] | None:
    """The member names of a zip archive (TorchScript and torch.save files are zips), None for any other file."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def is_torchscript(names: list[str] | None) -> bool:
    # A TorchScript archive holds its code and constants; a torch.save archive (weights, a checkpoint) does not.
    return names is not None and any(n.endswith("/constants.pkl") for n in names) \
        and any("/code/" in n for n in names)


def _not_a_model(path: Path) -> TinyMnistError:
    """Why `path` is no model predict can use, in one line (torch's own message is a paragraph about corruption)."""
    from .rundir import CHECKPOINT, CONFIG

    names = archive_names(path)
    if path.name == CHECKPOINT and (path.parent / CONFIG).is_file():
        return TinyMnistError(f"{path}: a run's training checkpoint, not a model; give the run directory "
                              f"{path.parent} instead")
    if names is not None and any(n.endswith("/data.pkl") for n in names):
        return TinyMnistError(f"{path}: a file saved with torch.save (weights or a checkpoint), not a model; give "
                              "its run directory, an ONNX file or a TorchScript file")
    return TinyMnistError(f"{path}: not a run directory, an ONNX file ({ONNX_SUFFIX}) or a TorchScript file")


def load_predictor(model: str | Path, threads: int = 0) -> Predictor:
    """A run directory (or its model.pt), an .onnx file, or a TorchScript file -> Predictor."""
    path = Path(model)
    if path.is_dir():
        return from_run_dir(path)
    if not path.exists():
        raise TinyMnistError(f"{path}: no such run directory or model file")
    if path.suffix.lower() == ONNX_SUFFIX:
        return from_onnx(path, threads)
    if path.name == "model.pt" and (path.parent / "config.json").is_file():
        return from_run_dir(path.parent)  # the weights file of a run: use the run it belongs to
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise TinyMnistError(f"{path}: cannot read ({e.strerror})") from None
    if not is_torchscript(archive_names(path)):
        raise _not_a_model(path)
    return from_torchscript(path)


# ------------------------------------------------------------------------------------------------ prediction
@dataclass
class Prediction:
    file: str
    label: int | None = None  # class index
    name: str | None = None  # class name ("7", or "Sneaker" for Fashion-MNIST)
    probability: float | None = None
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (index, name, probability), best first
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "label": self.label, "class": self.name, "probability": self.probability,
                "top": [{"label": i, "class": n, "probability": p} for i, n, p in self.top]}


def expand_inputs(paths: list[str | Path]) -> list[tuple[str, Path | None, str | None]]:
    """Each argument -> (shown name, file to read or None, error or None). Folders are read recursively (image
    suffixes only, sorted, symlinked folders not followed); a path that does not exist is an error entry."""
    items: list[tuple[str, Path | None, str | None]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [Path(root) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES
                          and not f.startswith(".")]
            if not found:
                items.append((str(p), None, f"{p}: no image files in this folder"))
            items += [(str(f), f, None) for f in sorted(found)]
        elif p.exists():
            items.append((str(p), p, None))
        else:
            items.append((str(p), None, f"{p}: file not found"))
    return items


def predict_files(predictor: Predictor, paths: list[str | Path], top: int = 3, normalize: bool = True,
                  batch_size: int = 256) -> list[Prediction]:
    """Predict every image under `paths`, in order. Unreadable files get an `error` and do not stop the rest."""
    results: list[Prediction] = []
    images: list[torch.Tensor] = []
    slots: list[int] = []
    for shown, path, error in expand_inputs(paths):
        results.append(Prediction(file=shown, error=error))
        if path is None:
            continue
        try:
            images.append(load_digit(path, normalize=normalize, dataset=predictor.dataset))
            slots.append(len(results) - 1)
        except TinyMnistError as e:
            results[-1].error = str(e)
    if images:
        probs = predictor.probabilities(torch.stack(images), batch_size)
        k = max(1, min(top, probs.shape[1]))
        values, indices = probs.topk(k, dim=1)
        for slot, vals, idxs in zip(slots, values.tolist(), indices.tolist(), strict=True):
            r = results[slot]
            r.top = [(i, predictor.class_names[i], v) for i, v in zip(idxs, vals, strict=True)]
            r.label, r.name, r.probability = r.top[0]
    return results


# ------------------------------------------------------------------------------------------------ formatting
def describe(predictor: Predictor) -> str:
    return f"model: {predictor.source} ({predictor.model_name}, {predictor.dataset}, {predictor.backend})"


def format_text(predictions: list[Prediction]) -> list[tuple[bool, str]]:
    """One line per input, in order, as (is_error, line): file, class, probability, then the top-k; or the
    file's error."""
    ok = [p for p in predictions if p.error is None]
    width = min(max((len(p.file) for p in ok), default=0), 60)
    name_width = max((len(p.name or "") for p in ok), default=1)
    lines = []
    for p in predictions:
        if p.error is not None:
            lines.append((True, p.error))
            continue
        ranked = "  ".join(f"{n} {100 * v:.1f}%" for _, n, v in p.top)
        lines.append((False, f"{p.file:<{width}}  {p.name:>{name_width}}  {100 * p.probability:5.1f}%"
                             f"   top {len(p.top)}: {ranked}"))
    return lines


def format_json(predictor: Predictor, predictions: list[Prediction]) -> str:
    return json.dumps({
        "model": predictor.source, "backend": predictor.backend, "architecture": predictor.model_name,
        "dataset": predictor.dataset, "predictions": [p.to_dict() for p in predictions],
        "failed": sum(p.error is not None for p in predictions),
    }, indent=2)

