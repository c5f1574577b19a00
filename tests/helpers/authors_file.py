"""A file shaped like the authors' released ECCV16 weights (their keys and shapes, written out), never theirs."""

from __future__ import annotations

import numpy as np
import torch

# (out, in) of each 3x3 conv, block by block; each block ends with a BatchNorm at index 2 x (number of convs)
BLOCKS = {
    "model1": [(64, 1), (64, 64)],
    "model2": [(128, 64), (128, 128)],
    "model3": [(256, 128), (256, 256), (256, 256)],
    "model4": [(512, 256), (512, 512), (512, 512)],
    "model5": [(512, 512)] * 3,
    "model6": [(512, 512)] * 3,
    "model7": [(512, 512)] * 3,
}


def authors_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for block, convs in BLOCKS.items():
        for i, (c_out, c_in) in enumerate(convs):
            shapes[f"{block}.{2 * i}.weight"] = (c_out, c_in, 3, 3)
            shapes[f"{block}.{2 * i}.bias"] = (c_out,)
        bn, channels = f"{block}.{2 * len(convs)}", convs[-1][0]
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{bn}.{name}"] = (channels,)
    shapes |= {
        "model8.0.weight": (512, 256, 4, 4),  # ConvTranspose2d(512, 256, 4, stride 2): (in, out, k, k)
        "model8.0.bias": (256,),
        "model8.2.weight": (256, 256, 3, 3),
        "model8.2.bias": (256,),
        "model8.4.weight": (256, 256, 3, 3),
        "model8.4.bias": (256,),
        "model8.6.weight": (313, 256, 1, 1),  # the head: 313 logits
        "model8.6.bias": (313,),
        "model_out.weight": (2, 313, 1, 1),  # bins / 110
    }
    return shapes


def grid_313() -> np.ndarray:
    """313 points of the step-10 ab grid sorted by (a, b): shaped like the authors' bins (used without them)."""
    a, b = np.meshgrid(np.arange(-90.0, 110.0, 10.0), np.arange(-110.0, 110.0, 10.0), indexing="ij")
    return np.stack((a.ravel(), b.ravel()), 1)[:313]


def authors_state(bins: np.ndarray, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of a sane scale (He init, BatchNorm near identity) in the authors' keys and shapes."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in authors_shapes().items():
        if key == "model_out.weight":
            state[key] = torch.tensor(np.asarray(bins).T / 110.0, dtype=torch.float32).reshape(shape)
        elif key.endswith(".running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) == 1:
            base = 1.0 if key.endswith(".weight") else 0.0  # a BatchNorm gamma near 1; biases, betas, means near 0
            state[key] = base + 0.05 * torch.randn(shape, generator=g)
        else:
            fan_in = shape[0 if key == "model8.0.weight" else 1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return state


# ---- the authors' released weights -----------------------------------------------------------
def grid_bins() -> torch.Tensor:
    """313 distinct grid points sorted by (a, b): shaped like the authors' bins, but not theirs."""
    return torch.from_numpy(grid_313()).float()


