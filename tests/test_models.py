import pytest
import torch

from tinymnist.errors import TinyMnistError
from tinymnist.models import MODELS, build_model, check_budget, count_parameters, summarize

BUDGETS = {"tiny20k": 20_000, "tiny8k": 8_000, "tiny1k": 1_000}


def test_seed_is_the_reference_model():
    assert count_parameters(build_model("seed")) == 19_349


@pytest.mark.parametrize("name,budget", BUDGETS.items())
def test_zoo_models_are_under_their_budget(name, budget):
    assert count_parameters(build_model(name)) < budget


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_summary(name):
    model = build_model(name)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    rows = summarize(model)
    assert sum(r.params for r in rows) == count_parameters(model)
    assert rows[-1].receptive_field == 28  # every model's output sees the whole image


def test_receptive_field_of_seed():
    rf = {r.name: r.receptive_field for r in summarize(build_model("seed"))}
    assert rf["conv1"] == 3 and rf["conv2"] == 5 and rf["pool1"] == 6 and rf["conv4"] == 14 and rf["pool2"] == 16


def test_budget_refusal_names_model_and_count():
    with pytest.raises(TinyMnistError, match="'seed' has 19,349 trainable parameters, over the budget of 10,000"):
        check_budget(build_model("seed"), "seed", 10_000)


def test_unknown_model_and_bad_dropout():
    with pytest.raises(TinyMnistError, match="unknown model 'nope'"):
        build_model("nope")
    with pytest.raises(TinyMnistError, match="dropout"):
        build_model("seed", dropout=1.5)


def test_dropout_override_reaches_the_model():
    model = build_model("seed", dropout=0.1)
    assert model.dropout.p == 0.1
