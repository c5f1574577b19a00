"""BatchNorm as the authors trained with it (Caffe), and as their PyTorch port runs it.

``model.batchnorm``:
- ``caffe``: Caffe's BatchNorm layer with ``lr_mult: 0`` on its blobs and no Scale layer after it, as in the
  authors' training prototxts: no learned scale or shift (``affine=False``), and running statistics that are a
  *normalized* moving average. Caffe keeps sums ``s <- 0.999 s + x`` and a factor ``c <- 0.999 c + 1`` and uses
  ``s / c`` (a bias-corrected average; the variance with Bessel's correction, as torch stores it).
- ``affine``: ``nn.BatchNorm2d`` (learned gamma and beta, torch's momentum 0.1): the layout of the authors'
  PyTorch port and of their released weights (``colorization_release_v2-9b330a0b.pth``).

How ``caffe`` reuses torch's fused kernel: with momentum m = 0.001 = 1 - 0.999 and buffers started at zero, torch's
update ``r <- (1 - m) r + m x`` gives ``r = m s`` exactly, and Caffe's ``c`` after t updates is
``(1 - 0.999^t) / m``. So ``s / c = r / (1 - 0.999^t)``: the training-mode forward is torch's own, and the eval-mode
forward divides the buffers by ``1 - 0.999^t`` (t = ``num_batches_tracked``), computed on the device (no host sync).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorization.errors import ConfigError

BATCHNORM_KINDS = ("caffe", "affine")
CAFFE_MOVING_AVERAGE_FRACTION = 0.999  # Caffe's batch_norm_param default, unchanged in the authors' prototxts


class CaffeBatchNorm2d(nn.BatchNorm2d):
    """Caffe's BatchNorm without learned parameters: batch statistics in training, bias-corrected running ones in eval."""

    def __init__(self, num_features: int, eps: float = 1e-5, fraction: float = CAFFE_MOVING_AVERAGE_FRACTION):
        super().__init__(num_features, eps=eps, momentum=1 - fraction, affine=False)
        self.fraction = fraction
        self.reset_running_stats()

    def reset_running_stats(self) -> None:
        super().reset_running_stats()
        self.running_var.zero_()  # Caffe's sums start at 0 (torch's variance starts at 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)  # batch statistics; r <- 0.999 r + 0.001 x, num_batches_tracked += 1
        mean, var = self.eval_statistics()
        return F.batch_norm(x, mean, var, training=False, eps=self.eps)

    def eval_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and variance an eval-mode pass normalizes with: Caffe's s / c = r / (1 - 0.999^t).

        Before any update (t = 0) Caffe uses mean 0 and variance 0, as 0 / (a tiny correction) gives here."""
        correction = (1 - self.fraction ** self.num_batches_tracked.to(torch.float64)).clamp_min(1e-12).float()
        return self.running_mean / correction, self.running_var / correction


def check_kind(kind: str) -> str:
    if kind not in BATCHNORM_KINDS:
        raise ConfigError(f"model.batchnorm={kind!r} is not one of {BATCHNORM_KINDS}")
    return kind


def batchnorm(kind: str, channels: int) -> nn.BatchNorm2d:
    """The BatchNorm of ``model.batchnorm``: "caffe" (the authors' training) or "affine" (their PyTorch port)."""
    return CaffeBatchNorm2d(channels) if check_kind(kind) == "caffe" else nn.BatchNorm2d(channels)


@torch.no_grad()
def fold_batchnorm(net: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a convolution (in an ``nn.Sequential``) into that convolution, with
    its eval-mode statistics (and gamma, beta when affine), as the authors' ``batch_norm_absorb.py`` before probing:
    the network computes the same function in eval mode, and the BatchNorm becomes an ``nn.Identity``. Returns
    how many were folded."""
    folded = 0
    for seq in net.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, norm = seq[i], seq[i + 1]
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)):
                continue
            if isinstance(norm, CaffeBatchNorm2d):
                mean, var = norm.eval_statistics()
            else:
                mean, var = norm.running_mean, norm.running_var
            scale = torch.rsqrt(var + norm.eps)
            shift = -mean * scale
            if norm.affine:
                shift = shift * norm.weight + norm.bias
                scale = scale * norm.weight
            bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bias * scale + shift, requires_grad=conv.weight.requires_grad)
            seq[i + 1] = nn.Identity()
            folded += 1
    return folded
