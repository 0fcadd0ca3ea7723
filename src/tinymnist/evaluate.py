"""Evaluation: run a model over a whole split in large, unshuffled batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy per sample (the same definition as the training loss)
    accuracy: float  # fraction correct, 0..1
    correct: int
    total: int


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
    loss = F.cross_entropy(logits, labels, reduction="sum").item() / len(labels)
    correct = int((logits.argmax(1) == labels).sum())
    return EvalResult(loss=loss, accuracy=correct / len(labels), correct=correct, total=len(labels))
