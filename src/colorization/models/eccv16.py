"""The ECCV16 colorization network ("VGG-style with dilations"), PAPER.md's table.

Parts are named as in the authors' PyTorch port (``model1`` ... ``model8``, the same layer indices),
so their released state dict maps onto this module key for key (with ``batchnorm="affine"``). ``model8``
ends with the 1x1 head: Q logits for the classification losses, or 2 channels (ab / 110) for L2 regression.
The authors' ``model_out`` (a fixed 1x1 conv Q -> 2 holding the bin centres) is not a module here: decoding
is ``colorization.color.annealed_mean`` with the bins the LightningModule carries.

Options (``model.*``): ``batchnorm`` "caffe" (the authors' training net: no learned BatchNorm parameters,
Caffe's moving average) or "affine" (their PyTorch port); ``input_scale``: the input is (L - 50) / input_scale,
1 in the Caffe training net (L - 50), 100 in the port; ``width``: a channel multiplier (1 is the paper's net;
smaller nets for tests and quick experiments).
"""

from __future__ import annotations

import torch
from torch import nn

from colorization.models.batchnorm import batchnorm as make_batchnorm
from colorization.models.flops import forward_flops

L_CENTER = 50.0  # the input is (L - 50) / input_scale
# The layout of the authors' PyTorch port (model=eccv16_port): the default of the network options, which is also that
# of every checkpoint written before these options existed (so those load unchanged). The configs choose Caffe's.
PORT_LAYOUT = {"batchnorm": "affine", "input_scale": 100.0}


def scaled(channels: int, width: float) -> int:
    """A layer's channel count at ``width`` (at least 1)."""
    return max(1, round(channels * width))


def _block(channels, strides=None, dilation: int = 1, norm: str | None = "caffe"):
    layers: list[nn.Module] = []
    strides = strides or [1] * (len(channels) - 1)
    for c_in, c_out, s in zip(channels[:-1], channels[1:], strides, strict=True):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=s, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
    if norm is not None:
        layers.append(make_batchnorm(norm, channels[-1]))  # after the block's last ReLU, as in the prototxt
    return nn.Sequential(*layers)


class ECCV16(nn.Module):
    """L (B, 1, H, W) in [0, 100] -> (B, out_channels, H/4, W/4). H and W must be multiples of 8."""

    target_stride = 4  # targets and outputs at 1/4 of the input resolution (the authors' stride-4 pick)
    crop_multiple = 8  # three stride-2 convs, one stride-2 transposed conv

    def __init__(
        self,
        out_channels: int = 313,
        batchnorm: str = PORT_LAYOUT["batchnorm"],
        input_scale: float = PORT_LAYOUT["input_scale"],
        width=1.0,
    ):
        super().__init__()
        self.out_channels, self.input_scale = out_channels, float(input_scale)
        c = lambda n: scaled(n, width)  # noqa: E731
        self.model1 = _block([1, c(64), c(64)], [1, 2], norm=batchnorm)
        self.model2 = _block([c(64), c(128), c(128)], [1, 2], norm=batchnorm)
        self.model3 = _block([c(128), c(256), c(256), c(256)], [1, 1, 2], norm=batchnorm)
        self.model4 = _block([c(256), c(512), c(512), c(512)], norm=batchnorm)
        self.model5 = _block([c(512)] * 4, dilation=2, norm=batchnorm)
        self.model6 = _block([c(512)] * 4, dilation=2, norm=batchnorm)
        self.model7 = _block([c(512)] * 4, norm=batchnorm)
        self.model8 = nn.Sequential(
            nn.ConvTranspose2d(c(512), c(256), 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            *_block([c(256)] * 3, norm=None),
            nn.Conv2d(c(256), out_channels, 1),
        )

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        x = (L - L_CENTER) / self.input_scale
        for part in (self.model1, self.model2, self.model3, self.model4, self.model5, self.model6, self.model7):
            x = part(x)
        return self.model8(x)

    def flops(self, height: int, width: int) -> int:
        """FLOPs (2 x multiply-accumulates) of one forward pass of one image at (height, width)."""
        return forward_flops(self, height, width)
