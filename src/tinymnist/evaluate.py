"""Evaluation: run a model over a whole split in large, unshuffled batches, and take a finished run apart:
accuracy, loss, per-class precision/recall, the confusion matrix and the list of mistakes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import TinyMnistError


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy per sample (the same definition as the training loss)
    accuracy: float  # fraction correct, 0..1
    correct: int
    total: int
    logits: torch.Tensor | None = field(default=None, repr=False)  # [N, classes], for reports


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Logits for normalised images [N, 1, 28, 28], in order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000) -> EvalResult:
    """Loss and accuracy of `model` on normalised images. Loss is summed per sample, then divided by N, so it
    does not depend on the batch size."""
    logits = predict_logits(model, images, batch_size)
    result = _loss_and_accuracy(logits, labels)
    result.logits = logits
    return result


def _loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> EvalResult:
    loss = F.cross_entropy(logits, labels, reduction="sum").item() / len(labels)
    correct = int((logits.argmax(1) == labels).sum())
    return EvalResult(loss=loss, accuracy=correct / len(labels), correct=correct, total=len(labels))


# --------------------------------------------------------------------------------------------- per-class metrics
def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """[num_classes, num_classes] int64 counts; row = true class, column = predicted class."""
    labels, predictions = labels.long().flatten(), predictions.long().flatten()
    if labels.shape != predictions.shape:
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    flat = labels * num_classes + predictions  # one bincount instead of a Python loop over images
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class ClassMetrics:
    index: int
    name: str
    precision: float | None  # of the images predicted as this class, the fraction that are; None: none predicted
    recall: float | None  # of the images of this class, the fraction found; None: no such image in the set
    support: int  # images of this class in the set
    predicted: int  # images predicted as this class

    @property
    def f1(self) -> float | None:
        if not self.precision or not self.recall:
            return None if self.precision is None or self.recall is None else 0.0
        return 2 * self.precision * self.recall / (self.precision + self.recall)


def per_class_metrics(confusion: torch.Tensor, class_names: list[str] | None = None) -> list[ClassMetrics]:
    """Precision and recall of every class from a confusion matrix (rows true, columns predicted). A ratio with
    nothing to divide by is None, not 0: "never predicted" is not the same as "always wrong"."""
    n = confusion.shape[0]
    names = class_names or [str(i) for i in range(n)]
    rows = []
    for k in range(n):
        hit = int(confusion[k, k])
        support = int(confusion[k].sum())
        predicted = int(confusion[:, k].sum())
        rows.append(ClassMetrics(
            index=k, name=names[k],
            precision=hit / predicted if predicted else None,
            recall=hit / support if support else None,
            support=support, predicted=predicted,
        ))
    return rows


@dataclass
class Mistake:
    index: int  # position in the evaluated test set (= index in the official test file)
    true: int
    predicted: int
    confidence: float  # softmax probability of the (wrong) predicted class
    true_prob: float  # softmax probability the model gave the true class


def find_mistakes(logits: torch.Tensor, labels: torch.Tensor) -> list[Mistake]:
    """Every misclassified image, the most confident mistakes first (ties broken by index, so the order is
    deterministic)."""
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    wrong = (pred != labels).nonzero().flatten().tolist()
    out = [Mistake(i, int(labels[i]), int(pred[i]), float(conf[i]), float(probs[i, labels[i]])) for i in wrong]
    out.sort(key=lambda m: (-m.confidence, m.index))
    return out


def top_confusions(confusion: torch.Tensor, k: int = 5) -> list[tuple[int, int, int]]:
    """The k most frequent (true, predicted, count) off-diagonal pairs, largest first."""
    off = confusion.clone()
    off.fill_diagonal_(0)
    pairs = [(int(t), int(p), int(off[t, p])) for t, p in (off > 0).nonzero().tolist()]
    pairs.sort(key=lambda x: (-x[2], x[0], x[1]))
    return pairs[:k]


# ------------------------------------------------------------------------------------------------ a whole run
def denormalize(images: torch.Tensor, dataset: str) -> torch.Tensor:
    """Inverse of data.normalize: float [N, 1, 28, 28] -> uint8 [N, 28, 28]. Exact: the float error is far
    below half a grey level, so rounding recovers the original byte."""
    from .data import NORMALIZATION

    mean, std = NORMALIZATION[dataset]
    return ((images.squeeze(1) * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


@dataclass
class RunEvaluation:
    run_dir: Path
    model: str
    dataset: str
    class_names: list[str]
    loss: float
    accuracy: float
    correct: int
    total: int
    confusion: torch.Tensor
    per_class: list[ClassMetrics]
    mistakes: list[Mistake]
    images: torch.Tensor = field(repr=False)  # the evaluated test images, uint8 [N, 28, 28], for pictures
    labels: torch.Tensor = field(repr=False)
    warnings: list[str] = field(default_factory=list)
    data_differs: bool = False  # the test files' checksums differ from those the run was trained with

    def to_dict(self) -> dict:
        """Plain JSON-able numbers (no images)."""
        return {
            "run_dir": str(self.run_dir), "model": self.model, "dataset": self.dataset,
            "accuracy": self.accuracy, "correct": self.correct, "total": self.total, "loss": self.loss,
            "per_class": [{"class": c.name, "precision": c.precision, "recall": c.recall, "support": c.support,
                           "predicted": c.predicted} for c in self.per_class],
            "confusion": self.confusion.tolist(),
            "class_names": self.class_names,
            "misclassified": [{"index": m.index, "true": m.true, "predicted": m.predicted,
                               "confidence": m.confidence} for m in self.mistakes],
            "warnings": self.warnings,
        }


def load_test_split(dataset: str, data_dir: str | Path | None, test_subset: int = 0):
    """The test images of a dataset exactly as `train` used them (first `test_subset` if set), as uint8, plus
    their checksums in the form config.json records ({"sha256": per file, "content_sha256": per content}).
    Reads only the test split: it is what evaluation needs."""
    from .data import locate, read_split, split_checksums

    directory, _ = locate(dataset, data_dir)
    split = read_split(directory, "test")
    # refuses Fashion-MNIST files for an MNIST run, or the other way round
    sums = split_checksums(directory, "test", split, dataset, fix="point --data-dir at the files this run was "
                                                                  "trained on")
    images, labels = split.images, split.labels
    if test_subset:
        images, labels = images[:test_subset], labels[:test_subset]
    return images, labels, sums


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    logits: torch.Tensor | None = None,
) -> RunEvaluation:
    """Load a finished run's final weights and evaluate them on the run's own test set (its dataset, its
    test_subset, its normalisation, eval mode, its eval batch size), so the accuracy equals the run's reported
    final test accuracy.

    data_dir: where the dataset is (default: the run's own data_dir, else the usual search).
    test: (images, labels) already in memory, skipping the disk: raw uint8 [N, 28, 28], or the normalised
        [N, 1, 28, 28] tensor the training loop evaluated on.
    logits: with `test`, the final model's logits on it, already computed by the training loop's last
        evaluation (the same model as the saved weights): skips one pass over the test set.
    """
    from . import rundir
    from .data import CLASS_NAMES, differing_data, normalize

    run_dir = Path(run_dir)
    model, config = rundir.load_model(run_dir)
    # The training loop evaluates a channels_last model (see train.py); the same memory layout runs the same
    # convolution kernels, so the numbers match the run's to the last bit, not just to rounding.
    model = model.to(memory_format=torch.channels_last)
    warnings: list[str] = []
    data_differs = False
    if test is None:
        source = data_dir if data_dir is not None else config.data_dir
        if data_dir is None and config.data_dir is not None and not Path(config.data_dir).is_dir():
            source = None  # the run was made elsewhere; search as usual (the checksum check below still applies)
        images, labels, sums = load_test_split(config.dataset, source, config.test_subset)
        _, payload = rundir.read_config(run_dir)
        for name in differing_data(payload.get("data", {}), sums, prefix="t10k"):
            data_differs = True
            warnings.append(f"{name} differs from the data this run was trained with (sha256 mismatch): "
                            "accuracy may not match the run's own")
    else:
        images, labels = test
    if len(labels) == 0:
        raise TinyMnistError(f"{run_dir}: the test set is empty")
    if images.dtype == torch.uint8:
        inputs = normalize(images, config.dataset)
    else:
        # Already normalised (the training loop's own tensor): use it as-is, and recover the pixels for pictures.
        inputs = images
        images = denormalize(images, config.dataset)

    if logits is None or test is None:
        logits = predict_logits(model, inputs, config.eval_batch_size)
    elif logits.shape[0] != len(labels):
        raise ValueError(f"{logits.shape[0]} logits for {len(labels)} test images")
    basic = _loss_and_accuracy(logits, labels)
    names = CLASS_NAMES[config.dataset]
    confusion = confusion_matrix(labels, logits.argmax(1), len(names))
    return RunEvaluation(
        run_dir=run_dir, model=config.model, dataset=config.dataset, class_names=names,
        loss=basic.loss, accuracy=basic.accuracy, correct=basic.correct, total=basic.total,
        confusion=confusion, per_class=per_class_metrics(confusion, names),
        mistakes=find_mistakes(logits, labels), images=images, labels=labels, warnings=warnings,
        data_differs=data_differs,
    )
