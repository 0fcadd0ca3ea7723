"""Export: a run directory's model -> a standalone file (ONNX or TorchScript), checked before it is kept.

ONNX goes through `torch.onnx.export` with the torch.export-based ("dynamo") exporter, which is PyTorch's
default and maintained path (the older TorchScript-based exporter is deprecated); it needs `onnxscript`. The
batch axis is dynamic, so one file serves a single image or a batch. The file then runs through onnxruntime on
a batch of test images and must reproduce PyTorch's logits to within `PARITY_TOLERANCE`; otherwise it is not
written. TorchScript is traced (`torch.jit.trace`) and loaded back for the same check. TorchScript is deprecated
upstream too, but still the simplest way to run a model from C++ / LibTorch without Python.

Either file carries what `predict` needs to use it correctly: the dataset, the normalisation (mean/std) and the
class names (ONNX: `metadata_props`; TorchScript: an extra file `tinymnist.json` inside the archive). That
metadata also marks the file as an export: an existing file at the destination is replaced only if it is a
previous export of the same format, never a run's own file or anything else.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from . import __version__
from .config import TrainConfig
from .data import CLASS_NAMES, NORMALIZATION, locate, normalize, read_split
from .errors import TinyMnistError
from .predict import META_PREFIX, ONNX_SUFFIX, TORCHSCRIPT_META, TORCHSCRIPT_SUFFIXES, archive_names

FORMATS = ("onnx", "torchscript")
DEFAULT_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
PARITY_TOLERANCE = 1e-4  # max |logit difference| allowed between PyTorch and the exported model
CHECK_IMAGES = 512


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # largest |logit difference| vs PyTorch over the check images
    same_predictions: float  # fraction of check images with the same predicted class (should be 1.0)
    checked: int
    check_data: str  # which images the check used
    bytes: int
    seconds: float


def model_metadata(config: TrainConfig, run_dir: Path) -> dict[str, str]:
    """What a consumer of the exported file needs to feed it and read its output."""
    mean, std = NORMALIZATION[config.dataset]
    meta = {
        "dataset": config.dataset, "model": config.model, "mean": repr(mean), "std": repr(std),
        "class_names": json.dumps(CLASS_NAMES[config.dataset]),
        "input": "images: float32 [batch, 1, 28, 28], white on black, digit scaled into 20x20 and centred by "
                 "centre of mass (MNIST style); pixels scaled to [0, 1], then (x - mean) / std",
        "output": f"logits: float32 [batch, {len(CLASS_NAMES[config.dataset])}] (softmax for probabilities)",
        "run": Path(run_dir).resolve().name, "tinymnist_version": __version__,
    }
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
        meta["test_accuracy"] = f"{summary['final_test_acc']:.4f}"
    except (OSError, ValueError, KeyError, TypeError):
        pass  # an unfinished summary is no reason to refuse an export
    return {META_PREFIX + k: v for k, v in meta.items()}


def check_images(config: TrainConfig, n: int = CHECK_IMAGES) -> tuple[torch.Tensor, str]:
    """Normalised images to compare the exported model against PyTorch on: the first `n` test images of the
    run's dataset, or (when that dataset is not on this machine) fixed random inputs, which check the arithmetic
    just as well."""
    try:
        directory, _ = locate(config.dataset, config.data_dir, allow_download=False)
        images = read_split(directory, "test").images[:n]
        return normalize(images, config.dataset), f"the first {len(images)} {config.dataset} test images"
    except TinyMnistError:
        g = torch.Generator().manual_seed(0)
        return torch.randn(n, 1, 28, 28, generator=g), f"{n} random inputs ({config.dataset} not found)"


def is_export(path: Path, fmt: str) -> bool:
    """Whether `path` is a file tinymnist exported as `fmt` (so replacing it loses nothing that cannot be redone)."""
    if fmt == "torchscript":
        return any(n.endswith("/extra/" + TORCHSCRIPT_META) for n in archive_names(path) or [])
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything that does not parse as ONNX is not our export
        return False
    return any(p.key.startswith(META_PREFIX) for p in proto.metadata_props)


def _out_path(run_dir: Path, fmt: str, out: str | Path | None) -> Path:
    """Where the export goes, refused (one line) before any work when it could not be used or would destroy
    something: a missing folder, a suffix `predict` would read as the other format, a run's own file, or an
    existing file that is not a previous export of the same format."""
    from .rundir import CHECKPOINT, CONFIG, METRICS, SUMMARY, WEIGHTS

    path = Path(out) if out else run_dir / DEFAULT_NAMES[fmt]
    # A folder (existing, or written with a trailing slash) gets the default file name inside it.
    if out and (path.is_dir() or str(out).endswith(("/", os.sep))):
        path = path / DEFAULT_NAMES[fmt]
    where = f"--out {path}" if out else str(path)
    if not path.parent.is_dir():
        why = "is not a folder" if path.parent.exists() else "does not exist"
        raise TinyMnistError(f"{where}: folder {path.parent} {why}")
    if path.name in (CONFIG, METRICS, CHECKPOINT, WEIGHTS, SUMMARY) and (path.parent / CONFIG).is_file():
        raise TinyMnistError(f"{where}: that is a run directory's own file; choose another name")
    # Another run's folder: its model.onnx would then hold this run's model under that run's name.
    if (path.parent / CONFIG).is_file() and path.parent.resolve() != run_dir.resolve():
        raise TinyMnistError(f"{where}: {path.parent} is another run's directory; choose a folder outside it")
    suffix = path.suffix.lower()
    if fmt == "onnx" and suffix != ONNX_SUFFIX:
        raise TinyMnistError(f"{where}: an ONNX file must end in {ONNX_SUFFIX} (predict recognises it by that)")
    if fmt == "torchscript" and suffix not in TORCHSCRIPT_SUFFIXES:
        hint = f" ({ONNX_SUFFIX} is for --format onnx)" if suffix == ONNX_SUFFIX else ""
        raise TinyMnistError(f"{where}: a TorchScript file must end in {', '.join(TORCHSCRIPT_SUFFIXES[:-1])} or "
                             f"{TORCHSCRIPT_SUFFIXES[-1]}{hint}")
    if path.exists() and not path.is_file():
        raise TinyMnistError(f"{where}: exists and is not a file")
    if path.exists() and not is_export(path, fmt):
        raise TinyMnistError(f"{where}: exists and is not a previous {fmt} export of tinymnist; not overwritten "
                             "(move it away or choose another --out)")
    return path


@contextmanager
def _quiet_exporter():
    """The exporters announce every stage and deprecations on stdout/logging; our caller reports the result."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _compare(reference: torch.Tensor, exported: torch.Tensor) -> tuple[float, float]:
    diff = float((reference - exported).abs().max())
    same = float((reference.argmax(1) == exported.argmax(1)).float().mean())
    return diff, same


def _write_onnx(model: nn.Module, meta: dict[str, str], tmp: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise TinyMnistError("--format onnx needs the 'onnx' and 'onnxscript' packages (pip install onnx onnxscript)") \
            from None
    example = torch.zeros(2, 1, 28, 28)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
            )
    except ImportError as e:
        raise TinyMnistError(f"--format onnx needs the '{e.name or 'onnxscript'}' package (pip install onnxscript)") \
            from None
    except Exception as e:  # noqa: BLE001 - torch.export / the ONNX translation refused the model
        text = str(e).strip().splitlines()
        raise TinyMnistError(f"ONNX export failed ({text[0] if text else type(e).__name__})") from None
    proto = program.model_proto
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = "tinymnist model; see the tinymnist.* metadata for the expected input"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(tmp))


def _check_onnx(tmp: Path, x: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    from .predict import from_onnx

    predictor = from_onnx(tmp)
    logits = predictor.forward(x)
    diff, same = _compare(reference, logits)
    # The batch axis must really be dynamic: one image alone gives the same logits as inside the batch.
    single = predictor.forward(x[:1])
    return max(diff, float((single - reference[:1]).abs().max())), same


def _write_torchscript(model: nn.Module, meta: dict[str, str], tmp: Path) -> None:
    with _quiet_exporter():
        traced = torch.jit.trace(model, torch.zeros(2, 1, 28, 28))
        torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_META: json.dumps(meta)})


def _check_torchscript(tmp: Path, x: torch.Tensor, reference: torch.Tensor,
                       meta: dict[str, str]) -> tuple[float, float]:
    from .predict import from_torchscript

    extra = {TORCHSCRIPT_META: ""}
    with _quiet_exporter():
        predictor = from_torchscript(tmp)
        logits = predictor.forward(x)
        single = predictor.forward(x[:1])
        torch.jit.load(str(tmp), _extra_files=extra)
    if json.loads(extra[TORCHSCRIPT_META]) != meta:
        raise TinyMnistError(f"{tmp}: metadata did not survive the round trip")
    diff, same = _compare(reference, logits)
    return max(diff, float((single - reference[:1]).abs().max())), same


def export(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None,
           n_check: int = CHECK_IMAGES) -> ExportResult:
    """Export the model of `run_dir` as `fmt` to `out` (default: inside the run directory), after checking that
    the exported file gives PyTorch's logits on `n_check` images. A file that fails the check is not kept."""
    from .rundir import load_model

    if fmt not in FORMATS:
        raise TinyMnistError(f"--format {fmt}: unknown format (choose from: {', '.join(FORMATS)})")
    start = time.perf_counter()
    run_dir = Path(run_dir)
    model, config = load_model(run_dir)
    path = _out_path(run_dir, fmt, out)
    meta = model_metadata(config, run_dir)
    x, described = check_images(config, n_check)
    with torch.inference_mode():
        reference = model(x)

    # A name of our own next to the destination (so the final rename is atomic), never someone's file that
    # happens to be called *.tmp; created by the writer itself, so the export gets the usual permissions.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        if fmt == "onnx":
            _write_onnx(model, meta, tmp)
            diff, same = _check_onnx(tmp, x, reference)
        else:
            _write_torchscript(model, meta, tmp)
            diff, same = _check_torchscript(tmp, x, reference, meta)
        if not diff < PARITY_TOLERANCE:
            raise TinyMnistError(
                f"{path}: exported model differs from PyTorch by up to {diff:.2e} in the logits (limit "
                f"{PARITY_TOLERANCE:.0e}); file not written"
            )
        os.replace(tmp, path)
    except OSError as e:
        raise TinyMnistError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(path=path, format=fmt, max_abs_diff=diff, same_predictions=same, checked=len(x),
                        check_data=described, bytes=path.stat().st_size, seconds=time.perf_counter() - start)
