"""Models: small CNNs for 28x28 digits, a registry by name, a parameter-budget check and a layer summary.

Each model reads like the original project's `Net`: layers in `__init__`, the data flow in `forward`, with the
tensor shape after each step as a short comment ([channels, height, width], batch dimension left out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import TinyMnistError


def conv_bn(c_in: int, c_out: int, kernel: int = 3, padding: int = 0) -> nn.Sequential:
    """Conv -> BatchNorm -> ReLU. The conv has no bias: BatchNorm's shift does that job."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class SeedNet(nn.Module):
    """The reference design, reproduced exactly: 19,349 parameters, FC head."""

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool1 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(8, 16, 3)
        self.bn3 = nn.BatchNorm2d(16)
        self.conv4 = nn.Conv2d(16, 32, 3)
        self.bn4 = nn.BatchNorm2d(32)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 25)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(25, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # [4, 26, 26]
        x = F.relu(self.bn2(self.conv2(x)))  # [8, 24, 24]
        x = self.pool1(x)  # [8, 12, 12]
        x = F.relu(self.bn3(self.conv3(x)))  # [16, 10, 10]
        x = F.relu(self.bn4(self.conv4(x)))  # [32, 8, 8]
        x = self.pool2(x)  # [32, 4, 4]
        x = torch.flatten(x, 1)  # [512]
        x = F.relu(self.fc1(x))  # [25]
        x = self.dropout(x)
        return self.fc2(x)  # [10] logits


class Tiny20k(nn.Module):
    """Default model (< 20k params). Two choices make it both cheaper and more accurate than the seed:

    * pool early: the one full-resolution conv reads a single input channel, so it is nearly free; every later
      conv runs at 14x14 or 7x7. On a CPU the full-resolution layers are where the time goes;
    * a global-average-pool head instead of the seed's 512->25 fully connected layer, which spends 2/3 of its
      budget there; here the same parameters buy wider convolutions (more features per position).
    """

    def __init__(self, dropout: float = 0.05, widths: tuple[int, ...] = (8, 16, 24, 32, 26)) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        self.conv1 = conv_bn(1, c1, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = conv_bn(c1, c2, padding=1)
        self.conv3 = conv_bn(c2, c3, padding=1)
        self.pool2 = nn.MaxPool2d(2)
        self.conv4 = conv_bn(c3, c4, padding=1)
        self.conv5 = conv_bn(c4, c5)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # [8, 28, 28]
        x = self.pool1(x)  # [8, 14, 14]
        x = self.conv2(x)  # [16, 14, 14]
        x = self.conv3(x)  # [24, 14, 14]
        x = self.pool2(x)  # [24, 7, 7]
        x = self.conv4(x)  # [32, 7, 7]
        x = self.conv5(x)  # [26, 5, 5]
        x = x.mean(dim=(2, 3))  # [26] global average pool
        x = self.dropout(x)
        return self.head(x)  # [10] logits


class Fast20k(Tiny20k):
    """tiny20k's layers and parameters (19,562) in a cheaper order, for the time-to-accuracy benchmark: each
    max-pool runs *before* its BatchNorm and ReLU, so those two (forward and backward) touch a quarter as many
    values. On a CPU these memory-bound steps, not the convolutions, dominate the 28x28 and 14x14 stages (1.17x
    more training images per second, benchmarks/model_speed.py). Max-pool commutes exactly with ReLU, and with
    BatchNorm's per-channel scale when it is positive, so the model can still learn much the same function."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, relu = self.conv1
        x = conv(x)  # [8, 28, 28]
        x = relu(bn(self.pool1(x)))  # [8, 14, 14] pool first, then normalise
        x = self.conv2(x)  # [16, 14, 14]
        conv, bn, relu = self.conv3
        x = conv(x)  # [24, 14, 14]
        x = relu(bn(self.pool2(x)))  # [24, 7, 7] pool first, then normalise
        x = self.conv4(x)  # [32, 7, 7]
        x = self.conv5(x)  # [26, 5, 5]
        x = x.mean(dim=(2, 3))  # [26] global average pool
        x = self.dropout(x)
        return self.head(x)  # [10] logits


class Fast20k7(Tiny20k):
    """fast20k with its second max-pool moved one conv earlier, so that conv3 runs at 7x7 instead of 14x14: the same
    19,562 parameters, a third fewer multiply-adds per image (conv3 was the most expensive layer) and 1.29x more
    training images per second here (benchmarks/model_speed.py). Unlike fast20k this changes what the model
    computes (conv3 sees a coarser map); on a validation split it learned less per epoch than fast20k, so the
    time-to-accuracy configs do not use it (RESULTS.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, relu = self.conv1
        x = conv(x)  # [8, 28, 28]
        x = relu(bn(self.pool1(x)))  # [8, 14, 14] pool first, then normalise
        x = self.conv2(x)  # [16, 14, 14]
        x = self.pool2(x)  # [16, 7, 7]
        x = self.conv3(x)  # [24, 7, 7]
        x = self.conv4(x)  # [32, 7, 7]
        x = self.conv5(x)  # [26, 5, 5]
        x = x.mean(dim=(2, 3))  # [26] global average pool
        x = self.dropout(x)
        return self.head(x)  # [10] logits


class Tiny8k(Tiny20k):
    """< 8k params: the tiny20k layout with narrower layers (shapes as in tiny20k, channels 8/12/16/16/16)."""

    def __init__(self, dropout: float = 0.05) -> None:
        super().__init__(dropout, widths=(8, 12, 16, 16, 16))


def separable(c_in: int, c_out: int) -> nn.Sequential:
    """Depthwise 3x3 (one filter per channel) then pointwise 1x1 (mixes channels), then BN + ReLU: about
    (9 + c_out) * c_in weights instead of 9 * c_in * c_out, which is what fits a model in 1,000 parameters."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class Tiny1k(nn.Module):
    """< 1k params: one ordinary conv, then depthwise-separable convs, and a GAP head; no dropout (too few
    parameters to need it)."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = conv_bn(1, 6, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = separable(6, 12)
        self.conv3 = separable(12, 12)
        self.pool2 = nn.MaxPool2d(2)
        self.conv4 = separable(12, 16)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))  # [6, 14, 14]
        x = self.conv2(x)  # [12, 14, 14]
        x = self.conv3(x)  # [12, 14, 14]
        x = self.pool2(x)  # [12, 7, 7]
        x = self.conv4(x)  # [16, 7, 7]
        x = x.mean(dim=(2, 3))  # [16]
        return self.head(self.dropout(x))  # [10]


class Separable1k(nn.Module):
    """tiny1k's shape with the layout as arguments: one full-resolution conv (`stem` channels), a pool, one
    depthwise-separable block per width in `at14` at 14x14, a pool, one per width in `at7` at 7x7, GAP head.
    For asking where 1,000 parameters do most good (the tiny1k-* models; RESULTS.md compares them), and whether
    separable blocks, which buy about 3x the channels per parameter, beat tiny8k's plain convs (tiny8k-sep*)."""

    def __init__(self, stem: int, at14: tuple[int, ...], at7: tuple[int, ...], dropout: float = 0.0) -> None:
        super().__init__()
        widths = (stem, *at14, *at7)
        blocks = [separable(c_in, c_out) for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)]
        self.conv1 = conv_bn(1, stem, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.stage14 = nn.Sequential(*blocks[: len(at14)])
        self.pool2 = nn.MaxPool2d(2)
        self.stage7 = nn.Sequential(*blocks[len(at14):])
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))  # [stem, 14, 14]
        x = self.stage14(x)  # [at14[-1], 14, 14]
        x = self.pool2(x)  # [at14[-1], 7, 7]
        x = self.stage7(x)  # [at7[-1], 7, 7]
        x = x.mean(dim=(2, 3))  # [at7[-1]]
        return self.head(self.dropout(x))  # [10]


def _layout(stem: int, at14: tuple[int, ...], at7: tuple[int, ...]) -> Callable[..., nn.Module]:
    def factory(dropout: float = 0.0) -> nn.Module:
        return Separable1k(stem, at14, at7, dropout)

    return factory


class SeedGap(nn.Module):
    """The seed's conv stack with a global-average-pool head instead of its 512->25->10 FC head
    (for the `architecture` experiment: how much does the FC head buy?)."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 8), conv_bn(8, 16), nn.MaxPool2d(2),  # [16, 12, 12]
            conv_bn(16, 24), conv_bn(24, 32), nn.MaxPool2d(2),  # [32, 4, 4]
            conv_bn(32, 24, padding=1),  # [24, 4, 4]
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # [24, 4, 4]
        x = x.mean(dim=(2, 3))  # [24]
        return self.head(self.dropout(x))  # [10]


class SeedTransition(nn.Module):
    """The seed's stack with 1x1 "transition" convs that squeeze channels after each pool
    (for the `architecture` experiment: cheap channel mixing instead of wider 3x3 layers)."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 8), conv_bn(8, 16), nn.MaxPool2d(2),  # [16, 12, 12]
            conv_bn(16, 8, kernel=1),  # [8, 12, 12] 1x1 transition
            conv_bn(8, 16), conv_bn(16, 32), nn.MaxPool2d(2),  # [32, 4, 4]
            conv_bn(32, 16, kernel=1),  # [16, 4, 4] 1x1 transition
            conv_bn(16, 32, padding=1), conv_bn(32, 24, padding=1),  # [24, 4, 4]
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))  # [24]
        return self.head(self.dropout(x))  # [10]


@dataclass(frozen=True)
class ModelSpec:
    factory: Callable[..., nn.Module]
    description: str


MODELS: dict[str, ModelSpec] = {
    "seed": ModelSpec(SeedNet, "the reference design: 4 convs, FC head 512->25->10, dropout 0.3"),
    "tiny20k": ModelSpec(Tiny20k, "default: one full-res conv, pool, 4 convs, GAP head (< 20k params)"),
    "fast20k": ModelSpec(Fast20k, "tiny20k with each pool ahead of its BatchNorm/ReLU: same params, cheaper on a CPU"),
    "fast20k7": ModelSpec(Fast20k7, "fast20k with conv3 at 7x7 (pool moved earlier): same params, 1/3 fewer mult-adds"),
    "tiny8k": ModelSpec(Tiny8k, "narrower tiny20k (< 8k params)"),
    "tiny1k": ModelSpec(Tiny1k, "1 conv + 3 depthwise-separable convs, GAP head (< 1k params)"),
    # Other layouts of tiny1k's budget, compared on a validation split (benchmarks/configs/tiny1k_layout_val.toml)
    "tiny1k-deep7": ModelSpec(_layout(6, (12,), (12, 14)),
                             "tiny1k layout: stem 6, one block at 14x14 (12), two at 7x7 (12, 14)"),
    "tiny1k-stem8": ModelSpec(_layout(8, (12,), (12, 12)),
                             "tiny1k layout: stem 8, one block at 14x14 (12), two at 7x7 (12, 12)"),
    "tiny1k-thin": ModelSpec(_layout(4, (8, 12), (11, 12)),
                             "tiny1k layout: stem 4, two blocks at 14x14 (8, 12), two at 7x7 (11, 12)"),
    "tiny1k-3at7": ModelSpec(_layout(4, (10,), (11, 11, 11)),
                             "tiny1k layout: stem 4, one block at 14x14 (10), three at 7x7 (11)"),
    "tiny1k-3at14": ModelSpec(_layout(4, (8, 12, 12), (11,)),
                              "tiny1k layout: stem 4, three blocks at 14x14 (8, 12, 12), one at 7x7 (11)"),
    "tiny1k-stem8w": ModelSpec(_layout(8, (12, 12), (13,)),
                               "tiny1k layout: stem 8, two blocks at 14x14 (12, 12), one at 7x7 (13)"),
    # tiny8k's budget spent on separable blocks instead (benchmarks/configs/tiny8k_sep_val.toml)
    "tiny8k-sep": ModelSpec(_layout(8, (24, 40), (48, 56)),
                            "separable layout: stem 8, two blocks at 14x14 (24, 40), two at 7x7 (48, 56); < 8k"),
    "tiny8k-sep7": ModelSpec(_layout(8, (16, 32), (48, 64)),
                             "separable layout: stem 8, two blocks at 14x14 (16, 32), two at 7x7 (48, 64); < 8k"),
    "seed-gap": ModelSpec(SeedGap, "seed convs with a global-average-pool head"),
    "seed-1x1": ModelSpec(SeedTransition, "seed convs with 1x1 transition layers and a GAP head"),
}
DEFAULT_MODEL = "tiny20k"


def build_model(name: str, dropout: float | None = None) -> nn.Module:
    """Instantiate a registered model; `dropout=None` keeps the model's own default rate."""
    if name not in MODELS:
        raise TinyMnistError(f"unknown model '{name}' (choose from: {', '.join(MODELS)})")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise TinyMnistError(f"--dropout {dropout}: must be in [0, 1)")
    factory = MODELS[name].factory
    return factory() if dropout is None else factory(dropout=dropout)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_budget(model: nn.Module, name: str, budget: int) -> int:
    """Refuse a model whose trainable-parameter count exceeds the budget. Returns the count."""
    n = count_parameters(model)
    if n > budget:
        raise TinyMnistError(
            f"model '{name}' has {n:,} trainable parameters, over the budget of {budget:,} "
            "(raise it with --param-budget)"
        )
    return n


# ------------------------------------------------------------------------------------------------------ summary
@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    receptive_field: int  # side of the square input patch that one output position can see
    mult_adds: int = 0  # multiply-adds per image (convolutions and linear layers; the rest is cheap by comparison)


def _kernel_stride(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        s = module.stride if isinstance(module.stride, int) else module.stride[0]
        d = getattr(module, "dilation", 1)
        d = d if isinstance(d, int) else d[0]
        return (k - 1) * d + 1, s
    return None


def summarize(model: nn.Module, input_size: int = 28) -> list[LayerRow]:
    """Per leaf layer: output shape, parameters and receptive field, found by running one dummy image.

    The receptive field is tracked along the forward pass: a k x k layer with stride s grows it by
    (k - 1) * jump, where jump is the product of the strides so far. Ops that are not modules
    (pixel_unshuffle, global pooling, flatten) are recognised from the shape change they cause.
    """
    rows: list[LayerRow] = []
    state = {"rf": 1, "jump": 1, "size": input_size}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        if x.dim() == 4 and x.shape[-1] != state["size"]:
            # The spatial size changed outside a module: pixel_unshuffle (x2 stride, 2x2 patch).
            factor = state["size"] // x.shape[-1]
            state["rf"] += (factor - 1) * state["jump"]
            state["jump"] *= factor
            state["size"] = x.shape[-1]
        if x.dim() == 2 and state["size"] > 1:  # flattened or globally pooled: sees everything remaining
            state["rf"] += (state["size"] - 1) * state["jump"]
            state["size"] = 1
        ks = _kernel_stride(module)
        if ks is not None:
            k, s = ks
            state["rf"] += (k - 1) * state["jump"]
            state["jump"] *= s
        if output.dim() == 4:
            state["size"] = output.shape[-1]
        params = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
        mult_adds = 0
        if isinstance(module, nn.Conv2d):  # each output value: one weight per input channel of its group, per tap
            mult_adds = output[0].numel() * module.weight[0].numel()
        elif isinstance(module, nn.Linear):
            mult_adds = module.in_features * module.out_features
        rows.append(LayerRow(names[module], type(module).__name__, tuple(output.shape[1:]), params,
                             min(state["rf"], input_size), mult_adds))

    names = {}
    handles = []
    for name, module in model.named_modules():
        if len(list(module.children())) == 0:
            names[module] = name
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return rows


def format_summary(name: str, model: nn.Module) -> str:
    rows = summarize(model)
    lines = [f"model: {name}  ({MODELS[name].description})" if name in MODELS else f"model: {name}",
             f"{'layer':<22}{'type':<14}{'output shape':<16}{'params':>8}{'RF':>6}{'mult-adds':>12}"]
    for r in rows:
        shape = "x".join(str(s) for s in r.output_shape)
        macs = f"{r.mult_adds:,}" if r.mult_adds else ""
        lines.append(f"{r.name:<22}{r.kind:<14}{shape:<16}{r.params:>8,}{r.receptive_field:>6}{macs:>12}".rstrip())
    lines.append("(RF: receptive field, the side in pixels of the input patch one output can see, at most the "
                 "28-pixel image)")
    lines.append(f"total trainable parameters: {count_parameters(model):,}")
    lines.append(f"multiply-adds per image: {sum(r.mult_adds for r in rows):,} (what a forward pass costs; "
                 "training is about 3x that)")
    return "\n".join(lines)
