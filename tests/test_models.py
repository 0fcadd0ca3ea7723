import pytest
import torch

from tinymnist.errors import TinyMnistError
from tinymnist.models import MODELS, build_model, check_budget, count_parameters, summarize

BUDGETS = {"tiny20k": 20_000, "tiny8k": 8_000, "tiny1k": 1_000, "fast20k": 20_000, "fast20k7": 20_000,
           "tiny1k-deep7": 1_000, "tiny1k-stem8": 1_000, "tiny1k-thin": 1_000, "tiny1k-3at7": 1_000,
           "tiny1k-3at14": 1_000, "tiny1k-stem8w": 1_000, "tiny8k-sep": 8_000, "tiny8k-sep7": 8_000}


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


def test_fast20k_is_tiny20k_in_a_cheaper_order():
    # Same layers; with BatchNorm in eval mode (a per-channel affine map) and positive scales, pooling before or
    # after BatchNorm + ReLU gives the same numbers, so the two models compute the same function.
    torch.manual_seed(0)
    tiny, fast = build_model("tiny20k"), build_model("fast20k")
    assert count_parameters(fast) == count_parameters(tiny)
    for m in tiny.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)  # positive scales
            m.bias.data.uniform_(-0.5, 0.5)
    fast.load_state_dict(tiny.state_dict())
    tiny.eval(), fast.eval()
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(fast(x), tiny(x), rtol=1e-4, atol=1e-5)
    # With a negative scale the order matters (max-pool becomes min-pool): a different model, not a bug.
    tiny.conv1[1].weight.data[0] = -1.0
    fast.load_state_dict(tiny.state_dict())
    assert not torch.allclose(fast(x), tiny(x), atol=1e-5)


def test_mult_adds_per_image():
    # Worked by hand for the seed: conv1 26*26 outputs x 4 channels x 9 taps = 24,336; conv2 24*24*8*36 = 165,888;
    # conv3 10*10*16*72 = 115,200; conv4 8*8*32*144 = 294,912; fc1 512*25 = 12,800; fc2 25*10 = 250.
    rows = {r.name: r.mult_adds for r in summarize(build_model("seed"))}
    assert rows["conv1"] == 24_336 and rows["conv4"] == 294_912 and rows["fc1"] == 12_800
    assert sum(rows.values()) == 613_386
    # fast20k7 moves conv3 (16 -> 24 channels, 3x3) from 14x14 to 7x7: 196 - 49 positions x 3,456 weights fewer.
    total = {m: sum(r.mult_adds for r in summarize(build_model(m))) for m in ("tiny20k", "fast20k", "fast20k7")}
    assert total["tiny20k"] == total["fast20k"] == 1_485_764
    assert total["tiny20k"] - total["fast20k7"] == (196 - 49) * 3_456
    # A depthwise conv costs one 3x3 filter per output value, not one per input channel.
    depthwise = {r.name: r.mult_adds for r in summarize(build_model("tiny1k"))}["conv2.0"]
    assert depthwise == 6 * 14 * 14 * 9
