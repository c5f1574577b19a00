"""Test helpers for sharding and resuming: images that say who they are, and a callback that writes down
which ones each rank trained on.

Image i is a flat color from PALETTE (JPEG keeps a flat color to within a few levels; any crop, resize
or flip of it is the same color), so the mean color of a training crop names its source file.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image

PALETTE = np.array(list(itertools.product((20, 90, 160, 230), repeat=3)), dtype=np.int64)  # 64 colors, 70 apart


def write_color_images(root: Path, n: int, size: int = 40, fmt: str = "JPEG") -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        pixels = np.broadcast_to(PALETTE[i].astype(np.uint8), (size, size, 3))
        path = root / f"img_{i:03d}.{'jpg' if fmt == 'JPEG' else fmt.lower()}"
        Image.fromarray(np.ascontiguousarray(pixels)).save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        files.append(path)
    return files


def identify(images: torch.Tensor) -> list[int]:
    """uint8 (B, 3, H, W) crops of color images -> their palette indices (asserting a clear match)."""
    means = images.float().mean((2, 3)).cpu().numpy()
    dist = np.abs(means[:, None, :] - PALETTE[None]).max(-1)
    ids = dist.argmin(1)
    assert (dist.min(1) < 8).all(), f"a crop matches no palette color: {means}"
    return [int(i) for i in ids]


class SeenRecorder(L.Callback):
    """Writes <out_dir>/<tag>_rank<r>.json: the palette ids of every training example, batch sizes, and
    what the run looked like from this rank (world size, SyncBatchNorm)."""

    def __init__(self, out_dir: str, tag: str = "run"):
        self.out_dir, self.tag = Path(out_dir), tag
        self.ids: list[int] = []
        self.batch_sizes: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.ids += identify(batch["image"])
        self.batch_sizes.append(len(batch["image"]))

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "ids": self.ids,
            "batch_sizes": self.batch_sizes,
            "world_size": trainer.world_size,
            "sync_batchnorm": any(isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules()),
        }
        (self.out_dir / f"{self.tag}_rank{trainer.global_rank}.json").write_text(json.dumps(record))
