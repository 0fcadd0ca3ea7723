"""Metrics on hand-made predictions, where every number can be checked by counting."""

import pytest
import torch

from tinymnist.data import normalize
from tinymnist.evaluate import (
    confusion_matrix,
    denormalize,
    evaluate,
    find_mistakes,
    per_class_metrics,
    top_confusions,
)

# 3 classes, 8 images. true: 0 0 0 1 1 2 2 2   predicted: 0 0 1 1 1 2 0 0
TRUE = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
PRED = torch.tensor([0, 0, 1, 1, 1, 2, 0, 0])


def test_confusion_matrix_counts_rows_true_columns_predicted():
    cm = confusion_matrix(TRUE, PRED, num_classes=3)
    assert cm.tolist() == [[2, 1, 0],
                           [0, 2, 0],
                           [2, 0, 1]]
    assert cm.sum() == len(TRUE) and cm.trace() == 5  # 5 correct


def test_confusion_matrix_keeps_absent_classes():
    cm = confusion_matrix(torch.tensor([1, 1]), torch.tensor([1, 3]), num_classes=10)
    assert cm.shape == (10, 10) and cm[1, 1] == 1 and cm[1, 3] == 1 and cm.sum() == 2


def test_confusion_matrix_rejects_length_mismatch():
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 2)


def test_per_class_precision_recall():
    rows = per_class_metrics(confusion_matrix(TRUE, PRED, 3), ["a", "b", "c"])
    a, b, c = rows
    # class a: 2 of 3 found (recall 2/3); predicted 4 times, 2 right (precision 1/2)
    assert (a.name, a.support, a.predicted) == ("a", 3, 4)
    assert a.recall == pytest.approx(2 / 3) and a.precision == pytest.approx(1 / 2)
    # class b: both found; predicted 3 times, 2 right
    assert b.recall == 1.0 and b.precision == pytest.approx(2 / 3)
    # class c: 1 of 3 found; predicted once, right
    assert c.recall == pytest.approx(1 / 3) and c.precision == 1.0
    assert c.f1 == pytest.approx(2 * 1.0 * (1 / 3) / (1 + 1 / 3))


def test_undefined_ratios_are_none_not_zero():
    # class 2 is never predicted and class 1 never occurs
    cm = confusion_matrix(torch.tensor([0, 2]), torch.tensor([0, 1]), 3)
    rows = per_class_metrics(cm)
    assert rows[1].recall is None and rows[1].precision == 0.0  # predicted once, wrongly
    assert rows[2].precision is None and rows[2].recall == 0.0
    assert rows[0].precision == rows[0].recall == 1.0


def test_mistakes_sorted_by_confidence():
    logits = torch.tensor([
        [5.0, 0.0, 0.0],  # true 0, predicted 0: right
        [0.0, 3.0, 0.0],  # true 0, predicted 1: wrong, fairly confident
        [0.0, 0.0, 9.0],  # true 1, predicted 2: wrong, very confident
        [0.1, 0.0, 0.0],  # true 2, predicted 0: wrong, barely
    ])
    labels = torch.tensor([0, 0, 1, 2])
    mistakes = find_mistakes(logits, labels)
    assert [m.index for m in mistakes] == [2, 1, 3]
    assert [(m.true, m.predicted) for m in mistakes] == [(1, 2), (0, 1), (2, 0)]
    assert mistakes[0].confidence == pytest.approx(torch.softmax(logits[2], 0)[2].item())
    assert mistakes[0].true_prob == pytest.approx(torch.softmax(logits[2], 0)[1].item())
    assert 1 / 3 < mistakes[2].confidence < 0.4


def test_top_confusions():
    cm = confusion_matrix(TRUE, PRED, 3)
    assert top_confusions(cm, 5) == [(2, 0, 2), (0, 1, 1)]
    assert top_confusions(cm, 1) == [(2, 0, 2)]


def test_denormalize_recovers_every_byte():
    pixels = torch.arange(256, dtype=torch.uint8).repeat(7)[: 2 * 28 * 28].reshape(2, 28, 28)
    for dataset in ("mnist", "fashion-mnist"):
        assert torch.equal(denormalize(normalize(pixels, dataset), dataset), pixels)


def test_evaluate_keeps_logits_and_does_not_depend_on_batch_size():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    x, y = torch.randn(50, 1, 28, 28), torch.randint(0, 10, (50,))
    a, b = evaluate(model, x, y, batch_size=7), evaluate(model, x, y, batch_size=50)
    assert a.correct == b.correct and a.loss == pytest.approx(b.loss, abs=1e-6)
    assert a.logits.shape == (50, 10) and a.correct == int((a.logits.argmax(1) == y).sum())
