"""Folders of real photos for data tests: random crops of scikit-image's sample photos, every file different."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photo_folder(root: Path, n: int, size: int = 72, seed: int = 0, classes: int = 0) -> Path:
    """``n`` JPEG files of ``size`` x ``size`` crops of real photos under ``root`` (in ``classes`` sub-folders
    c0, c1, ... when given, file i in class i % classes)."""
    rng = np.random.default_rng(seed)
    photos = [np.asarray(getattr(skimage.data, name)())[..., :3] for name in PHOTOS]
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        photo = photos[i % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        folder = root / f"c{i % classes}" if classes else root
        folder.mkdir(exist_ok=True)
        files.append(folder / f"{i:03d}.jpg")
        Image.fromarray(photo[top : top + size, left : left + size]).save(files[-1], quality=90)
    return root
