"""Independent computations of the metrics (numpy loops and written-out formulas) the tests compare against."""

from __future__ import annotations

import numpy as np


def auc_numpy(pred: np.ndarray, true: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Loop over thresholds 0..150: weighted fraction of pixels with ||pred - true|| <= t; trapezoid area."""
    d = np.sqrt(((pred.astype(np.float64) - true.astype(np.float64)) ** 2).sum(axis=1)).ravel()
    w = np.ones_like(d) if weights is None else weights.ravel()
    accuracy = [w[d <= t].sum() / w.sum() for t in range(151)]
    return float(np.trapezoid(accuracy) / 150 * 100)


def nearest_bin_numpy(ab: np.ndarray, bins: np.ndarray) -> np.ndarray:
    flat = ab.transpose(0, 2, 3, 1).reshape(-1, 2).astype(np.float64)
    return np.argmin(((flat[:, None, :] - bins[None].astype(np.float64)) ** 2).sum(-1), axis=1)


def colorfulness_numpy(image: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003) on one 0-255 RGB image (H, W, 3)."""
    r, g, b = (image[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))


