"""The AlexNet-style colorization network of the paper's representation-learning experiments.

Backbone (what the linear probes read): AlexNet's five convolutions on the single L channel, with
AlexNet's own shapes, laid out as the later linear benchmarks rebuild the authors' AlexNet
colorization model (Goyal et al. 2019's benchmark code; VISSL's ``alexnet_colorization`` trunk):

| layer | op | out channels | notes |
|---|---|---|---|
| conv1 | 11x11, stride 4, no padding | 96 | input is 1 channel (L), not RGB |
| pool1 | max 3x3, stride 2 | | |
| conv2 | 5x5, padding 2, 2 groups | 256 | |
| pool2 | max 3x3, stride 2 | | |
| conv3 | 3x3, padding 1 | 384 | |
| conv4 | 3x3, padding 1, 2 groups | 384 | |
| conv5 | 3x3, padding 1, 2 groups | 256 | |
| pool5 | max 3x3, stride 2 | | probe tap only; the colorization head reads conv5 |

Each convolution is followed by BatchNorm then ReLU (no LRN; BatchNorm in its place, as in those
benchmark rebuilds). A 227 x 227 input gives AlexNet's sizes:
conv1 55, conv2 27, conv3-5 13, pool5 6. Input L is normalized as (L - 50) / 100, as for ECCV16.

Head (ours: the paper does not describe it). conv5 sits at stride 16; the losses want stride 4. A
fully convolutional stand-in for fc6/fc7 (3x3 conv 256 -> 1024 and 1x1 conv 1024 -> 512, each with
ReLU and BatchNorm; narrower than AlexNet's 4096-wide fc layers) is followed by two 4x4 stride-2
transposed convolutions (512 -> 256 -> 256, as ECCV16's ``model8``) and a 1x1 conv to the Q logits
(or 2 channels for L2). AlexNet's unpadded conv1 and floor pooling make the stride-4 grid slightly
smaller than H/4 (227: 52 vs 56; 176: 36 vs 44), so the logits are bilinearly resized to exactly
(H/4, W/4); their alignment with the stride-4 targets is therefore approximate (a few input pixels).

Smallest input: 35 x 35 for colorization (conv5 must be at least 1 x 1), 67 x 67 for the pool5 tap.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from colorization.models.eccv16 import L_CENTER, L_SCALE

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5")
FEATURE_CHANNELS = {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256, "pool5": 256}
MIN_SIZE_COLORIZE = 35  # conv1 7 -> pool1 3 -> pool2 1
MIN_SIZE_FEATURES = 67  # conv1 15 -> pool1 7 -> pool2 3 -> pool5 1


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class AlexNetColorization(nn.Module):
    """L (B, 1, H, W) in [0, 100] -> (B, out_channels, H/4, W/4). ``features`` exposes conv1..conv5, pool5."""

    feature_channels = FEATURE_CHANNELS

    def __init__(self, out_channels: int = 313):
        super().__init__()
        self.out_channels = out_channels
        self.conv1 = _conv_bn_relu(1, 96, 11, stride=4)
        self.pool1 = nn.MaxPool2d(3, stride=2)
        self.conv2 = _conv_bn_relu(96, 256, 5, padding=2, groups=2)
        self.pool2 = nn.MaxPool2d(3, stride=2)
        self.conv3 = _conv_bn_relu(256, 384, 3, padding=1)
        self.conv4 = _conv_bn_relu(384, 384, 3, padding=1, groups=2)
        self.conv5 = _conv_bn_relu(384, 256, 3, padding=1, groups=2)
        self.pool5 = nn.MaxPool2d(3, stride=2)
        self.head = nn.Sequential(
            nn.Conv2d(256, 1024, 3, padding=1),  # conv6 (fc6 as a convolution)
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(1024),
            nn.Conv2d(1024, 512, 1),  # conv7 (fc7 as a convolution)
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(512),
            nn.ConvTranspose2d(512, 256, 4, stride=2, padding=1),  # stride 16 -> 8
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(256, 256, 4, stride=2, padding=1),  # stride 8 -> 4
            nn.ReLU(inplace=True),
            nn.Conv2d(256, out_channels, 1),
        )

    @staticmethod
    def _check_size(L: torch.Tensor, minimum: int) -> None:
        if min(L.shape[-2:]) < minimum:
            raise ValueError(
                f"AlexNet colorization needs inputs of at least {minimum} x {minimum} pixels, got "
                f"{tuple(L.shape[-2:])}: raise data.crop_size"
            )

    def _convs(self, L: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (L - L_CENTER) / L_SCALE
        out = {}
        x = out["conv1"] = self.conv1(x)
        x = out["conv2"] = self.conv2(self.pool1(x))
        x = out["conv3"] = self.conv3(self.pool2(x))
        x = out["conv4"] = self.conv4(x)
        out["conv5"] = self.conv5(x)
        return out

    def features(self, L: torch.Tensor) -> dict[str, torch.Tensor]:
        """Post-ReLU activations of conv1..conv5 and pool5, for linear probing."""
        self._check_size(L, MIN_SIZE_FEATURES)
        out = self._convs(L)
        out["pool5"] = self.pool5(out["conv5"])
        return out

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        self._check_size(L, MIN_SIZE_COLORIZE)
        logits = self.head(self._convs(L)["conv5"])
        size = (L.shape[-2] // 4, L.shape[-1] // 4)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def flops(self, height: int, width: int) -> int:
        """FLOPs (2 x multiply-accumulates) of one forward pass of one image at (height, width)."""
        meta = copy.deepcopy(self).to("meta")  # count on the meta device: no compute, no BatchNorm update
        with FlopCounterMode(display=False) as counter:
            meta(torch.zeros(1, 1, height, width, device="meta"))
        return counter.get_total_flops()
