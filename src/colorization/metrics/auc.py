"""AuC of the cumulative per-pixel ab error (the paper's Table 1), raw or class-rebalanced.

For each pixel, is the predicted ab within L2 distance t of the truth? The fraction of pixels that
are, swept over integer thresholds t = 0, 1, ..., 150, is a cumulative curve; its area (trapezoid
rule) divided by 150 and times 100 is the AuC: 100 for a perfect prediction.
Rebalanced: each pixel counts with the lambda = 0 rebalancing weight of its true color's nearest bin,
i.e. inversely to that bin's prior probability, so rare colors count as much as common ones.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from colorization.color.encode import candidate_planes, nearest_bins, neighbour_table
from colorization.color.prior import rebalance_weights


class AuC(Metric):
    """update(pred_ab, true_ab), each (B, 2, H, W); compute() -> AuC in [0, 100].

    With ``bins`` and ``prior`` (the same Q), the rebalanced AuC. The state is a histogram of the
    errors rounded up to integers (d <= t exactly when ceil(d) <= t), summed across DDP ranks.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, max_threshold: int = 150, bins: torch.Tensor | None = None, prior: torch.Tensor | None = None):
        super().__init__()
        if (bins is None) != (prior is None):
            raise ValueError("AuC: pass both bins and prior (rebalanced) or neither (raw)")
        if bins is not None and len(bins) != len(prior):
            raise ValueError(f"AuC: {len(bins)} bins but a prior over {len(prior)}")
        self.max_threshold = int(max_threshold)
        self.rebalanced = bins is not None
        if self.rebalanced:
            self.register_buffer("bins", bins.float())
            self.register_buffer("pixel_weights", rebalance_weights(prior, 0.0).double())
            self.register_buffer("table", neighbour_table(self.bins, 1))
            self.register_buffer("centres", candidate_planes(self.bins, self.table), persistent=False)
        # bucket t holds the weight of pixels with ceil(d) = t; the last bucket, everything beyond max_threshold
        self.add_state("hist", torch.zeros(self.max_threshold + 2, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.shape != target.shape or preds.shape[1] != 2:
            raise ValueError(f"AuC: expected matching (B, 2, H, W) ab tensors, got {preds.shape} and {target.shape}")
        dist = (preds.double() - target.double()).square().sum(1).sqrt().flatten()
        bucket = dist.ceil().clamp(max=self.max_threshold + 1).long()
        weight = None
        if self.rebalanced:
            true_ab = target.permute(0, 2, 3, 1).reshape(-1, 2).float()
            nearest = nearest_bins(true_ab, self.bins, 1, self.table, self.centres)[1][:, 0]
            weight = self.pixel_weights[nearest]
        self.hist += torch.bincount(bucket, weights=weight, minlength=self.max_threshold + 2).double()

    def compute(self) -> torch.Tensor:
        total = self.hist.sum()
        if total == 0:
            return torch.tensor(float("nan"), dtype=torch.float64, device=self.hist.device)
        accuracy = self.hist.cumsum(0)[: self.max_threshold + 1] / total  # fraction with d <= t, t = 0..max
        return 100 * torch.trapezoid(accuracy) / self.max_threshold
