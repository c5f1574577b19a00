"""FLOPs of a network's forward pass, counted by torch on the meta device (no compute, no state change)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_flops(net: nn.Module, height: int, width: int) -> int:
    """FLOPs (2 x multiply-accumulates) of one forward pass of one 1-channel image at (height, width)."""
    meta = copy.deepcopy(net).to("meta")  # on the meta device: no memory, no BatchNorm update
    with FlopCounterMode(display=False) as counter:
        meta(torch.zeros(1, 1, height, width, device="meta"))
    return counter.get_total_flops()
