"""The paper's three objectives, as per-pixel losses over the 1/4-resolution targets.

Normalization: every loss is a mean over all B x h x w target pixels (gray images included, their
terms zeroed), i.e. nats per pixel for the classification losses. The authors' Caffe loss divides
the per-image sum by the batch size only; multiply by h x w to compare (e.g. 56 x 56 at 224 input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorization.models.eccv16 import AB_SCALE

VARIANTS = ("l2", "unbalanced", "rebalanced")


def soft_cross_entropy(logits: torch.Tensor, idx: torch.Tensor, wts: torch.Tensor) -> torch.Tensor:
    """Per-pixel -sum_q Z_q log softmax(logits)_q with Z sparse: (idx, wts) of shape (B, k, h, w)."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    return -(log_probs.gather(1, idx) * wts).sum(1)  # (B, h, w)


class ColorizationLoss(nn.Module):
    """``variant``: "l2" (ab regression), "unbalanced" or "rebalanced" (soft-encoded cross-entropy)."""

    def __init__(self, variant: str):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"loss.name={variant!r} is not one of {VARIANTS}")
        self.variant = variant

    @property
    def classification(self) -> bool:
        return self.variant != "l2"

    def forward(self, output: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """Returns ``loss`` (what is optimized) and, for classification, the unweighted ``ce``."""
        mask = batch["mask"].view(-1, 1, 1)
        if self.variant == "l2":
            per_pixel = 0.5 * (AB_SCALE * output.float() - batch["ab"]).square().sum(1)
            return {"loss": (per_pixel * mask).mean()}
        ce = soft_cross_entropy(output, batch["idx"], batch["wts"]) * mask
        # rebalancing weight of each pixel's nearest bin (the argmax of its soft target)
        weighted = ce * batch["pixel_weight"] if self.variant == "rebalanced" else ce
        return {"loss": weighted.mean(), "ce": ce.mean()}
