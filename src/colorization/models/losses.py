"""The paper's three objectives over the targets (1/4 or 1/8 of the input resolution), at the authors' scale.

Normalization, as the authors' Caffe loss: each image's loss is summed over its h x w target pixels (and, for
the classification losses, over the bins), then averaged over the N images of the batch (``loss``). Weight
decay is added to the gradient of exactly this objective, so its strength relative to the data term is the
authors' (a per-pixel mean would make a given decay h x w = 1,936 times stronger at 176 crops). For reading,
``loss_per_pixel`` is the same divided by h x w, and ``ce`` the unweighted soft cross-entropy per pixel in nats.
The L2 loss is the paper's 1/2 ||Y - Y_hat||^2 per pixel in ab units, summed and averaged likewise.
Gray images (the non-gray mask is 0) contribute nothing, in every variant; they stay in N, as in Caffe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorization.color.targets import AB_SCALE
from colorization.errors import ConfigError

VARIANTS = ("l2", "unbalanced", "rebalanced")


def soft_cross_entropy(logits: torch.Tensor, idx: torch.Tensor, wts: torch.Tensor) -> torch.Tensor:
    """Per-pixel -sum_q Z_q log softmax(logits)_q with Z sparse: (idx, wts) of shape (B, k, h, w)."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    return -(log_probs.gather(1, idx) * wts).sum(1)  # (B, h, w)


def check_variant(name: str) -> str:
    if name not in VARIANTS:
        raise ConfigError(f"loss.name={name!r} is not one of {VARIANTS}")
    return name


class ColorizationLoss(nn.Module):
    """``variant``: "l2" (ab regression), "unbalanced" or "rebalanced" (soft-encoded cross-entropy)."""

    def __init__(self, variant: str):
        super().__init__()
        self.variant = check_variant(variant)

    @property
    def classification(self) -> bool:
        return self.variant != "l2"

    def forward(self, output: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """``loss`` (what is optimized: per image, summed over pixels), ``loss_per_pixel``, and for the
        classification losses the unweighted per-pixel cross-entropy ``ce``."""
        mask = batch["mask"].view(-1, 1, 1)
        images, pixels = output.shape[0], output.shape[-2] * output.shape[-1]
        if self.variant == "l2":
            per_pixel = 0.5 * (AB_SCALE * output.float() - batch["ab"]).square().sum(1) * mask
            loss = per_pixel.sum() / images
            return {"loss": loss, "loss_per_pixel": loss / pixels}
        ce = soft_cross_entropy(output, batch["idx"], batch["wts"]) * mask
        # rebalancing weight of each pixel's nearest bin (the argmax of its soft target)
        weighted = ce * batch["pixel_weight"] if self.variant == "rebalanced" else ce
        loss = weighted.sum() / images
        return {"loss": loss, "loss_per_pixel": loss / pixels, "ce": ce.mean()}
