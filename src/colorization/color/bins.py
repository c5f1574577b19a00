"""The quantized ab output space: bin centres on a grid of step 10.

Two sources:
- ``"srgb"``: derived here. Rule: a grid point (a, b) (multiples of 10) is a bin when at least
  one 8-bit sRGB color has Lab ab that rounds to it (``round(ab / 10) * 10``), i.e. the
  10 x 10 cell centred on it contains an sRGB color. This gives fewer bins than the authors' 313
  (their rule is unpublished and their set is wider than sRGB; see PAPER.md).
- ``"official"`` or a path: the authors' ``pts_in_hull.npy`` (313 rows, sorted by (a, b)),
  checksum-verified (see ``colorization.color.reference``).
Both are returned sorted by (a, b), as float32 (Q, 2).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from colorization.color.lab import rgb_to_lab
from colorization.color.reference import cache_dir, load_reference

GRID_STEP = 10.0


@lru_cache(maxsize=1)
def _srgb_bins() -> np.ndarray:
    levels = torch.arange(256, dtype=torch.float64) / 255
    g, b = torch.meshgrid(levels, levels, indexing="ij")
    offset, size = 16, 32  # grid indices -16..15 cover |a|, |b| < 160, beyond any sRGB color
    seen = torch.zeros(size * size, dtype=torch.bool)
    for r in levels.split(32):  # 32 slices of the 8-bit cube at a time keeps memory small
        rgb = torch.stack(torch.broadcast_tensors(r[:, None, None], g, b), dim=1)
        q = torch.round(rgb_to_lab(rgb)[:, 1:] / GRID_STEP).to(torch.int64) + offset
        seen[q[:, 0] * size + q[:, 1]] = True
    cells = seen.nonzero()[:, 0]  # row-major order = sorted by (a, b)
    return torch.stack((cells // size - offset, cells % size - offset), 1).numpy().astype(np.float32) * GRID_STEP


def _cached_srgb_bins() -> np.ndarray:
    """The derived bins, computed once per machine (about 5 s) and kept in the cache folder."""
    path = cache_dir() / "srgb_bins_v1.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    bins = _srgb_bins()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, bins)
    os.replace(tmp, path)  # atomic: concurrent runs never read a half-written file
    return bins


def ab_bins(source: str | Path = "srgb", download: bool = True) -> torch.Tensor:
    """Bin centres, float32 (Q, 2), rows sorted by (a, b). ``source``: "srgb", "official" or a path."""
    if str(source) == "srgb":
        return torch.from_numpy(_cached_srgb_bins().copy())
    pts = load_reference("pts_in_hull.npy", None if str(source) == "official" else source, download)
    return torch.from_numpy(pts.astype(np.float32))


def resolve_bins(cfg) -> torch.Tensor:
    """The bins of a run's config: ``color.bins`` (srgb | official | a path)."""
    source = cfg.color.bins
    bins = ab_bins(source if source in ("srgb", "official") else Path(source).expanduser(), download=cfg.color.download)
    return bins
