"""Augmentation on a whole batch at once.

Every image in the batch gets its own random rotation and translation, but all of them are applied in one
`affine_grid` + `grid_sample` call: no Python loop over images, no PIL. This is what makes augmentation nearly
free compared with per-image transforms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Named strengths used by the CLI (`--augment`) and the experiment suites: (max degrees, max shift fraction).
PRESETS: dict[str, tuple[float, float]] = {
    "none": (0.0, 0.0),
    "light": (5.0, 0.05),
    "medium": (10.0, 0.1),
    "strong": (20.0, 0.15),
}


def random_affine(
    images: torch.Tensor,
    degrees: float,
    translate: float,
    fill: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate each image by U(-degrees, degrees) and shift it by U(-translate, translate) of its size.

    images: float [B, C, H, W]. `fill` is the value of the background that moves into view (for normalised
    MNIST that is the normalised value of a black pixel). degrees == translate == 0 returns the input as-is.
    """
    if degrees == 0 and translate == 0:
        return images
    b = images.shape[0]
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(degrees)
    # affine_grid works in normalised coordinates where the image spans [-1, 1], so a shift of a fraction f
    # of the image is 2f there.
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * (2 * translate)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # grid_sample pads with zeros; shift so that "zero" is the background value, then shift back.
    out = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill
