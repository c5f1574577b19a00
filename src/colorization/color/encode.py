"""Soft encoding of ab values over the bins (the paper's Z = H_gt^{-1}(Y)), and the gray-image mask.

Each ab value becomes a distribution over its k nearest bin centres, weighted by a Gaussian of the
distance (sigma = 5), normalized to sum 1. The training path keeps it sparse, as (bin indices,
weights) of shape (B, k, h, w); ``soft_encode`` scatters that into the dense (B, Q, h, w) form.

Exact k-NN without comparing against every bin: for each cell of a fine grid over the ab plane
(2.5 x 2.5, a quarter of the bin spacing) we precompute every bin that can be among the k nearest
of *any* point of the cell. For a point p in a cell with centre c and half-diagonal r, its k-th
neighbour distance is at most d_k(c) + r, so its k nearest all lie within d_k(c) + 2r of c. Those
bins are the cell's candidates (at most 12 for k = 5 on the sRGB bins, against Q = 261 or 313).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from colorization.color.bins import GRID_STEP
from colorization.errors import ConfigError, check_number

_TABLE_LIMIT = 140.0  # the table covers |a|, |b| <= 140: every sRGB color (|ab| < 128) is inside
_FAR = 1e4  # the padding candidate: a bin so far away that it is never among the k nearest
_CELL = GRID_STEP / 4  # table cells: finer cells, fewer candidates per cell (32 at 10, 12 at 2.5 for k = 5)


def neighbour_table(bins: torch.Tensor, k: int, cell: float = _CELL) -> torch.Tensor:
    """(n * n, C) long: for each cell of the ab grid, the bins that can be among its points' k nearest.

    Rows are padded with index Q, which ``_padded`` maps to a far-away centre.
    """
    n = int(2 * _TABLE_LIMIT / cell)
    axis = -_TABLE_LIMIT + (torch.arange(n, dtype=torch.float64) + 0.5) * cell
    centres = torch.cartesian_prod(axis, axis)  # cell (i, j) at row i * n + j
    d = torch.cdist(centres, bins.double())
    radius = d.kthvalue(k, dim=1).values + math.sqrt(2) * cell + 1e-6  # d_k(c) + 2 * half-diagonal
    keep = d <= radius[:, None]
    width = int(keep.sum(1).max())
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :width]
    return torch.where(keep.gather(1, order), order, torch.full_like(order, len(bins)))


def _padded(bins: torch.Tensor) -> torch.Tensor:
    return torch.cat((bins, bins.new_full((1, 2), _FAR)))


def candidate_planes(bins: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(2, n * n, C): the a and b of each cell's candidate bins (``neighbour_table``), one plane each."""
    return _padded(bins)[table].permute(2, 0, 1).contiguous()


def nearest_bins(ab: torch.Tensor, bins: torch.Tensor, k: int, table: torch.Tensor | None = None, centres=None):
    """ab (N, 2) -> squared distances and indices of the k nearest bins, each (N, k), nearest first.

    ``table`` from ``neighbour_table``; ``centres`` (optional) = ``candidate_planes(bins, table)``, precomputed.
    """
    if table is None:
        d2 = (ab[:, None, :] - bins[None]).square().sum(-1)
        d2k, idx = d2.topk(k, dim=1, largest=False)
        return d2k, idx
    n, width = math.isqrt(len(table)), table.shape[1]  # the table's cells: n x n over [-_TABLE_LIMIT, _TABLE_LIMIT]^2
    ij = ((ab + _TABLE_LIMIT) * (n / (2 * _TABLE_LIMIT))).floor_().long().clamp_(0, n - 1)
    cell = ij[:, 0] * n + ij[:, 1]
    if centres is None:
        centres = candidate_planes(bins, table)
    # one contiguous plane per coordinate, updated in place: on a CPU, a third faster than (N, C, 2) slices
    d2 = centres[0].index_select(0, cell).sub_(ab[:, :1]).square_()  # index_select: far faster than [] on CPU
    d2.add_(centres[1].index_select(0, cell).sub_(ab[:, 1:]).square_())
    d2k, j = d2.topk(k, dim=1, largest=False)
    return d2k, table.view(-1).index_select(0, (cell[:, None] * width + j).view(-1)).view(-1, k)


def soft_encode_sparse(ab: torch.Tensor, bins: torch.Tensor, k: int = 5, sigma: float = 5.0, table=None, centres=None):
    """ab (B, 2, h, w) -> (indices, weights), each (B, k, h, w); index [:, 0] is the nearest bin."""
    B, _, h, w = ab.shape
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2).to(bins.dtype)
    d2, idx = nearest_bins(flat, bins, k, table, centres)
    wts = torch.exp((d2[:, :1] - d2) / (2 * sigma**2))  # exp(-d^2 / 2 sigma^2) over its nearest's (no overflow)
    wts = wts / wts.sum(1, keepdim=True)  # normalized (a softmax; written out, it is 3x faster for k = 5)
    unflat = lambda t: t.reshape(B, h, w, k).permute(0, 3, 1, 2)  # noqa: E731
    return unflat(idx), unflat(wts)


def soft_encode(ab: torch.Tensor, bins: torch.Tensor, k: int = 5, sigma: float = 5.0) -> torch.Tensor:
    """ab (B, 2, h, w) -> dense soft targets (B, Q, h, w), each pixel summing to 1."""
    idx, wts = soft_encode_sparse(ab, bins, k, sigma)
    z = wts.new_zeros(ab.shape[0], len(bins), *ab.shape[2:])
    return z.scatter_(1, idx, wts)


def check_soft_encoding(k: int, sigma: float, bins: int | None = None) -> None:
    """``loss.k`` nearest bins (at least 1, at most Q) and the Gaussian's ``loss.sigma`` (> 0), or a ConfigError."""
    if check_number(k, "loss.k", integer=True) < 1:
        raise ConfigError(f"loss.k={k} must be >= 1")
    if bins is not None and k > bins:
        raise ConfigError(f"loss.k={k} is larger than the number of bins Q={bins}")
    if check_number(sigma, "loss.sigma") <= 0:
        raise ConfigError(f"loss.sigma={sigma} must be > 0")


class SoftEncoder(nn.Module):
    """Soft encoding with the neighbour table built once; bins travel with the module (and checkpoint)."""

    def __init__(self, bins: torch.Tensor, k: int = 5, sigma: float = 5.0):
        super().__init__()
        check_soft_encoding(k, sigma, len(bins))
        self.k, self.sigma = k, sigma
        self.register_buffer("bins", bins.float())
        self.register_buffer("table", neighbour_table(bins, k), persistent=False)
        self.register_buffer("centres", candidate_planes(self.bins, self.table), persistent=False)
        # the tables are derived, not saved: rebuild them when a checkpoint brings its bins
        self.register_load_state_dict_post_hook(lambda module, _: module._rebuild_tables())

    def _rebuild_tables(self) -> None:
        self.table = neighbour_table(self.bins.cpu(), self.k).to(self.bins.device)
        self.centres = candidate_planes(self.bins, self.table)

    def forward(self, ab: torch.Tensor):
        return soft_encode_sparse(ab, self.bins, self.k, self.sigma, self.table, self.centres)


def gray_mask(ab: torch.Tensor, threshold: float = 5.0) -> torch.Tensor:
    """(B, 2, h, w) -> (B,) float: 0 for an image whose |a| and |b| never exceed ``threshold``."""
    return (ab.abs() > threshold).flatten(1).any(1).to(ab.dtype)
