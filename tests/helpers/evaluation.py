"""The evaluation protocol's crop, written with torchvision directly, and fast evaluation overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

SIZE = 64  # small images keep the network's forward passes cheap on 2 CPU cores


FAST = ["logger=csv", "trainer.accelerator=cpu", "data.num_workers=0"]


FAST += [f"protocol.size={SIZE}"]


def center_crop(path: Path, size: int = SIZE) -> np.ndarray:
    """The paper's protocol, with torchvision directly: shorter side to size, central size x size. uint8 (H, W, 3)."""
    image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
    return v2.CenterCrop(size)(v2.Resize(size, antialias=True)(image)).permute(1, 2, 0).numpy()


