"""The ECCV16 colorization network ("VGG-style with dilations"), PAPER.md's table.

Parts are named as in the authors' PyTorch port (``model1`` ... ``model8``, the same layer indices),
so their released state dict maps onto this module key for key. ``model8`` ends with the 1x1 head:
Q logits for the classification losses, or 2 channels (ab / 110) for L2 regression. The authors'
``model_out`` (a fixed 1x1 conv Q -> 2 holding the bin centres) is not a module here: decoding is
``colorization.color.annealed_mean`` with the bins the LightningModule carries.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

L_CENTER, L_SCALE = 50.0, 100.0  # input normalization (L - 50) / 100
AB_SCALE = 110.0  # regression output unit: ab = 110 * output, as in the authors' port


def _block(channels: list[int], strides: list[int] | None = None, dilation: int = 1, batchnorm: bool = True):
    layers: list[nn.Module] = []
    strides = strides or [1] * (len(channels) - 1)
    for c_in, c_out, s in zip(channels[:-1], channels[1:], strides, strict=True):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=s, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(channels[-1]))
    return nn.Sequential(*layers)


class ECCV16(nn.Module):
    """L (B, 1, H, W) in [0, 100] -> (B, out_channels, H/4, W/4). H and W must be multiples of 8."""

    def __init__(self, out_channels: int = 313):
        super().__init__()
        self.out_channels = out_channels
        self.model1 = _block([1, 64, 64], [1, 2])
        self.model2 = _block([64, 128, 128], [1, 2])
        self.model3 = _block([128, 256, 256, 256], [1, 1, 2])
        self.model4 = _block([256, 512, 512, 512])
        self.model5 = _block([512, 512, 512, 512], dilation=2)
        self.model6 = _block([512, 512, 512, 512], dilation=2)
        self.model7 = _block([512, 512, 512, 512])
        self.model8 = nn.Sequential(
            nn.ConvTranspose2d(512, 256, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            *_block([256, 256, 256], batchnorm=False),
            nn.Conv2d(256, out_channels, 1),
        )

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        x = (L - L_CENTER) / L_SCALE
        for part in (self.model1, self.model2, self.model3, self.model4, self.model5, self.model6, self.model7):
            x = part(x)
        return self.model8(x)

    def flops(self, height: int, width: int) -> int:
        """FLOPs (2 x multiply-accumulates) of one forward pass of one image at (height, width)."""
        meta = copy.deepcopy(self).to("meta")  # count on the meta device: no compute, no BatchNorm update
        with FlopCounterMode(display=False) as counter:
            meta(torch.zeros(1, 1, height, width, device="meta"))
        return counter.get_total_flops()
