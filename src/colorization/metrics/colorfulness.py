"""Colorfulness (Hasler and Suesstrunk 2003), the mean over images of M = sigma_rgyb + 0.3 mu_rgyb.

On 0-255 RGB: rg = R - G, yb = (R + G) / 2 - B; sigma_rgyb = sqrt(std(rg)^2 + std(yb)^2) and
mu_rgyb = sqrt(mean(rg)^2 + mean(yb)^2) over each image's pixels (population std).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], (B, 3, H, W) -> (B,) Hasler-Suesstrunk colorfulness on the 0-255 scale."""
    r, g, b = (255 * rgb.double()).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    sigma = (rg.var(1, correction=0) + yb.var(1, correction=0)).sqrt()
    mu = (rg.mean(1).square() + yb.mean(1).square()).sqrt()
    return sigma + 0.3 * mu


class Colorfulness(Metric):
    """update(rgb) with RGB in [0, 1], (B, 3, H, W); compute() -> mean colorfulness per image."""

    full_state_update = False
    higher_is_better = None  # closer to the photos' own colorfulness is better, not more
    is_differentiable = False

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, rgb: torch.Tensor) -> None:
        values = colorfulness(rgb)
        self.total += values.sum()
        self.count += len(values)

    def compute(self) -> torch.Tensor:
        return self.total / self.count
