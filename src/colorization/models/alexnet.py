"""The AlexNet colorization network of the paper's representation-learning experiments, as the authors trained it
(``train_alexnet/train_val.prototxt``, PAPER.md "How the authors actually trained it").

| layer | op | out | notes |
|---|---|---|---|
| conv1 | 11x11, stride 4, pad 5 | 96 | input: L - 50 (1 channel) |
| pool1 | max 3x3, stride 2, pad 1 | | Caffe's ceil mode |
| conv2 | 5x5, pad 2, 2 groups | 256 | |
| pool2 | max 3x3, stride 2, pad 1 | | |
| conv3 | 3x3, pad 1 | 384 | |
| conv4 | 3x3, pad 1, 2 groups | 384 | |
| conv5 | 3x3, pad 1, 2 groups | 256 | |
| pool5 | max 3x3, stride 1, pad 1 | | stride 1: the grid stays at stride 16 |
| fc6 | 6x6 conv, dilation 2, pad 5 | 4096 | AlexNet's fc6 on the stride-1 pool5 |
| fc7 | 1x1 conv | 4096 | |
| fc8 | 1x1 conv | Q | resized to the stride-8 targets |

Every convolution but fc8 is followed by BatchNorm (no learned parameters, ``batchnorm="caffe"``) then ReLU: BN
before ReLU, unlike ECCV16. At a 180 crop: conv1 45, pool1 23, conv2 23, pool2 12, conv3..conv5 12, pool5 12,
fc6..fc8 12, resized to the 23 x 23 targets (ab picked at stride 8). The resize is bilinear with aligned corners:
fc8's cell i sits over input pixel 16 i and target j over pixel 8 j, so corner alignment maps them exactly.

``features(L)`` gives what the linear probes read, in the classic AlexNet geometry the authors probe with
(``feature_learning_tests/linear``: 227 crops, conv1 and the pools unpadded, pool5 stride 2, so conv1 55,
pool1 27, conv2 27, pool2 13, conv3..conv5 13, pool5 6), or in the training geometry (``classic=False``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from colorization.models.batchnorm import batchnorm as make_batchnorm
from colorization.models.eccv16 import L_CENTER, scaled
from colorization.models.flops import forward_flops

LAYERS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")
CONV1_PAD = 5  # conv1's padding in the training geometry (none in the classic one): applied to the input
MIN_SIZE_FEATURES = 55  # classic geometry: conv1 12 -> pool1 6 -> pool2 3 -> pool5 1 (each pool's input >= 3)


def _conv_bn_relu(c_in, c_out, kernel, stride=1, padding=0, groups=1, dilation=1, norm="caffe") -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return nn.Sequential(conv, make_batchnorm(norm, c_out), nn.ReLU(inplace=True))


class AlexNetColorization(nn.Module):
    """L (B, 1, H, W) in [0, 100] -> (B, out_channels, ceil(H/8), ceil(W/8)); ``features`` for linear probes."""

    target_stride = 8  # the authors' AlexNet targets: ab picked at stride 8
    crop_multiple = 1  # any crop size (the authors' is 180)

    def __init__(self, out_channels: int = 313, batchnorm: str = "caffe", input_scale: float = 1.0, width=1.0):
        super().__init__()
        self.out_channels, self.input_scale = out_channels, float(input_scale)
        c = lambda n: scaled(n, width)  # noqa: E731
        even = lambda n: 2 * scaled(n // 2, width)  # noqa: E731  (grouped convs need even channel counts)
        self.feature_channels = {
            "conv1": c(96), "pool1": c(96), "conv2": even(256), "pool2": even(256), "conv3": even(384),
            "conv4": even(384), "conv5": even(256), "pool5": even(256),
        }  # fmt: skip
        ch = self.feature_channels
        self.conv1 = _conv_bn_relu(1, ch["conv1"], 11, stride=4, norm=batchnorm)  # its pad 5: see _trunk
        self.conv2 = _conv_bn_relu(ch["conv1"], ch["conv2"], 5, padding=2, groups=2, norm=batchnorm)
        self.conv3 = _conv_bn_relu(ch["conv2"], ch["conv3"], 3, padding=1, norm=batchnorm)
        self.conv4 = _conv_bn_relu(ch["conv3"], ch["conv4"], 3, padding=1, groups=2, norm=batchnorm)
        self.conv5 = _conv_bn_relu(ch["conv4"], ch["conv5"], 3, padding=1, groups=2, norm=batchnorm)
        self.fc6 = _conv_bn_relu(ch["conv5"], c(4096), 6, padding=5, dilation=2, norm=batchnorm)
        self.fc7 = _conv_bn_relu(c(4096), c(4096), 1, norm=batchnorm)
        self.fc8 = nn.Conv2d(c(4096), out_channels, 1)

    def _trunk(self, L: torch.Tensor, classic: bool) -> dict[str, torch.Tensor]:
        """Post-ReLU activations of conv1..conv5 and the pools, in the training or the classic geometry."""
        pad = 0 if classic else 1
        pool = lambda x, stride: F.max_pool2d(x, 3, stride, padding=pad, ceil_mode=True)  # noqa: E731  (Caffe's ceil)
        x = (L - L_CENTER) / self.input_scale
        if not classic:  # Caffe pads conv1's input (L - 50) with zeros, as F.pad does
            x = F.pad(x, (CONV1_PAD,) * 4)
        out = {"conv1": self.conv1(x)}
        out["pool1"] = pool(out["conv1"], 2)
        out["conv2"] = self.conv2(out["pool1"])
        out["pool2"] = pool(out["conv2"], 2)
        out["conv3"] = self.conv3(out["pool2"])
        out["conv4"] = self.conv4(out["conv3"])
        out["conv5"] = self.conv5(out["conv4"])
        out["pool5"] = pool(out["conv5"], 2 if classic else 1)
        return out

    def features(self, L: torch.Tensor, classic: bool = True) -> dict[str, torch.Tensor]:
        """conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5 (post-ReLU), for linear probing."""
        if classic and min(L.shape[-2:]) < MIN_SIZE_FEATURES:
            raise ValueError(
                f"AlexNet's classic geometry needs inputs of at least {MIN_SIZE_FEATURES} x {MIN_SIZE_FEATURES} "
                f"pixels, got {tuple(L.shape[-2:])}: raise data.crop_size"
            )
        return self._trunk(L, classic)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        logits = self.fc8(self.fc7(self.fc6(self._trunk(L, classic=False)["pool5"])))
        size = tuple(math.ceil(n / self.target_stride) for n in L.shape[-2:])  # the stride-8 picks
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    def flops(self, height: int, width: int) -> int:
        """FLOPs (2 x multiply-accumulates) of one forward pass of one image at (height, width)."""
        return forward_flops(self, height, width)
