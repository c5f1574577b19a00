"""One training batch's targets, on the device: uint8 RGB images in; L at full resolution, ab at the target stride,
the gray mask, the soft-encoding indices and weights, and each pixel's rebalancing weight out.

Used by the LightningModule (``on_after_batch_transfer``), the prior estimate and the benchmark, so the three compute
the same thing. The stride pick (one pixel of each stride x stride block, not an average) is the authors'.
"""

from __future__ import annotations

import torch

from colorization.color.encode import SoftEncoder, gray_mask
from colorization.color.lab import rgb_to_lab, rgb_to_lightness, uint8_to_lab, uint8_to_lightness

AB_SCALE = 110.0  # the L2 variant's output unit: ab = 110 * output, as the authors' port scales its regression


def lab_inputs(images: torch.Tensor, stride: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB (B, 3, H, W) -> L (B, 1, H, W) and ab at 1/stride resolution (stride pick, as the authors).

    Only the picked pixels are converted to float for ab; L comes from a lookup table for uint8 input."""
    picked = images[..., ::stride, ::stride]
    if images.dtype != torch.uint8:
        return rgb_to_lightness(images.float() / 255), rgb_to_lab(picked.float() / 255)[:, 1:]
    return uint8_to_lightness(images), uint8_to_lab(picked)[:, 1:]


def make_targets(
    images: torch.Tensor,
    stride: int,
    gray_threshold: float,
    encoder: SoftEncoder | None = None,
    class_weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """{"L", "ab", "mask"} and, for the classification losses (an ``encoder`` and the rebalancing ``class_weights``),
    {"idx", "wts"} (each pixel's k nearest bins and their Gaussian weights) and "pixel_weight" (the weight of its
    nearest bin)."""
    L_full, ab = lab_inputs(images, stride)
    targets = {"L": L_full, "ab": ab, "mask": gray_mask(ab, gray_threshold)}
    if encoder is not None:
        targets["idx"], targets["wts"] = encoder(ab)
        targets["pixel_weight"] = class_weights.take(targets["idx"][:, 0])  # take: a fast gather on a CPU too
    return targets
