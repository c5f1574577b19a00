"""The empirical ab prior p over the bins and the class-rebalancing weights w (paper eq. 3-4).

w is proportional to ((1 - lam) p + lam / Q')^-1, where Q' counts the bins with nonzero prior,
then scaled so that E_p[w] = sum_q p_q w_q = 1. The authors' ``PriorFactor`` does exactly this.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from colorization.color.encode import nearest_bins
from colorization.errors import ConfigError, check_number


def image_bin_counts(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """How many pixels of each image of ab (B, 2, h, w) fall nearest to each bin: (B, Q) float64."""
    B = ab.shape[0]
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2).to(bins.dtype)
    nearest = nearest_bins(flat, bins, 1)[1][:, 0].view(B, -1)
    counts = torch.zeros(B, len(bins), dtype=torch.float64, device=ab.device)
    return counts.scatter_add_(1, nearest, torch.ones_like(nearest, dtype=torch.float64))


def bin_counts(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """How many pixels of ab (B, 2, h, w) fall nearest to each bin: (Q,) float64."""
    return image_bin_counts(ab, bins).sum(0)


def smooth_prior(counts: torch.Tensor, bins: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Gaussian smoothing (sigma in ab units) of a histogram over the bins, renormalized to sum 1.

    Mass is spread only between bins: p_q proportional to sum_r counts_r exp(-|c_q - c_r|^2 / 2 sigma^2).
    """
    kernel = torch.exp(-torch.cdist(bins.double(), bins.double()).square() / (2 * sigma**2))
    p = kernel @ counts.double().to(kernel.device)
    return p / p.sum()


def estimate_prior(ab_batches: Iterable[torch.Tensor], bins: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Empirical ab distribution over the bins of a stream of ab batches (B, 2, h, w), smoothed."""
    counts = torch.zeros(len(bins), dtype=torch.float64)
    for ab in ab_batches:
        counts += bin_counts(ab, bins.to(ab.device)).cpu()
    if counts.sum() == 0:
        raise ValueError("estimate_prior: the data source yielded no pixels")
    return smooth_prior(counts, bins.cpu(), sigma)


def weight_uncertainty(
    image_counts: torch.Tensor, bins: torch.Tensor, lam: float = 0.5, sigma: float = 5.0, resamples=100, seed=0
) -> torch.Tensor:
    """How much the rebalancing weights of a prior estimated from a sample of images would move with another
    sample: the bootstrap (images resampled with replacement) standard deviation of each bin's weight, relative
    to the weight itself. ``image_counts`` (N, Q): each sampled image's pixels per bin. Returns (Q,) float64."""
    counts = image_counts.double().cpu()
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(counts), (resamples, len(counts)), generator=generator)
    multiplicity = torch.zeros(resamples, len(counts), dtype=torch.float64).scatter_add_(
        1, picks, torch.ones(picks.shape, dtype=torch.float64)
    )
    kernel = torch.exp(-torch.cdist(bins.double().cpu(), bins.double().cpu()).square() / (2 * sigma**2))
    priors = (multiplicity @ counts) @ kernel.T  # smooth_prior of each resample, before normalizing
    priors = priors / priors.sum(1, keepdim=True)
    weights = torch.stack([rebalance_weights(p, lam).double() for p in priors])
    return weights.std(0) / weights.mean(0)


def check_lam(lam: float, key: str = "loss.lam") -> float:
    if not 0.0 <= check_number(lam, key) <= 1.0:
        raise ConfigError(f"{key}={lam} must be in [0, 1]")
    return lam


def rebalance_weights(prior: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """Per-bin loss weights w = normalize(1 / ((1 - lam) p + lam * uniform)), with E_p[w] = 1.

    Bins with zero prior never occur in the data the prior was measured on; they get the largest
    weight of the others (the authors' formula would give them infinity).
    """
    check_lam(lam)
    p = prior.double()
    seen = p > 0
    uniform = seen.double() / seen.sum()
    mix = (1 - lam) * p + lam * uniform
    w = torch.where(seen, 1 / mix.clamp(min=1e-300), 0.0)
    w = w / (p * w).sum()
    return torch.where(seen, w, w[seen].max()).float()
