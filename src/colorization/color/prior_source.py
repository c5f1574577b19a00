"""The prior a run uses: the authors' file, a saved estimate, or an estimate from the training data (cached; under
DDP rank 0 estimates and the other ranks wait for its file).

The prior p over the bins (PAPER.md "Class rebalancing") is the empirical distribution of the training set's
colors: the authors' ``prior_probs.npy`` covers the whole ImageNet training set. An estimate must see the whole
set, not its first files (an ImageNet folder sorted by class starts with fish): ``estimate_prior_from_data``
reads a seeded uniform random sample of the training images (a shuffled stream for streaming sources), at the
targets' resolution, as training sees them (random crops, ab picked at the network's target stride), counts each
pixel's nearest bin, and smooths the histogram with the soft encoding's Gaussian (sigma 5), as the authors'.

The file it writes (``.npz``: ``bins``, ``prior``, ``counts`` and a JSON ``meta``) is what ``color.prior=PATH``
reads back, checked against ``color.bins``: estimate a prior once per dataset, reuse it across runs, share it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from colorization.color.prior import image_bin_counts, smooth_prior, weight_uncertainty
from colorization.color.reference import load_reference
from colorization.color.targets import lab_inputs
from colorization.errors import ConfigError

log = logging.getLogger(__name__)

PRIOR_FILE_KEYS = ("bins", "prior", "counts", "meta")


def estimate_prior_from_data(
    datamodule, bins: torch.Tensor, images: int | None, seed: int, stride: int, buffer: int = 10_000, lam: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The smoothed prior (Q,), the raw counts (Q,) and a record of what was read, from a uniform random sample of
    ``images`` training images of ``datamodule`` (all of them when None)."""

    datamodule.setup("fit")
    per_image = []
    for batch in datamodule.sample_batches(images, seed, buffer):
        ab = lab_inputs(batch, stride)[1]
        per_image.append(image_bin_counts(ab, bins.to(ab.device)).cpu())
    if not per_image:
        raise ConfigError("color.prior=estimate: the training data yielded no image")
    image_counts = torch.cat(per_image)
    counts = image_counts.sum(0)
    prior = smooth_prior(counts, bins.cpu())
    error = weight_uncertainty(image_counts, bins, lam=lam)
    seen = prior > 1e-4  # bins that matter for the weights: the rest get (nearly) the uniform part's weight
    record = {
        "images": len(image_counts),
        "pixels": int(counts.sum()),
        "stride": stride,
        "seed": seed,
        "sample": "seeded uniform sample of the training set" if images else "the whole training set",
        "weight_rse_median": float(error[seen].median()),
        "weight_rse_max": float(error[seen].max()),
    }
    log.info(
        "prior: estimated from %d training images (%s, seed %d), %d pixels at stride %d; bootstrap relative error "
        "of the rebalancing weights: median %.1f %%, max %.1f %% (over the bins with p > 1e-4)",
        record["images"],
        record["sample"],
        seed,
        record["pixels"],
        stride,
        100 * record["weight_rse_median"],
        100 * record["weight_rse_max"],
    )
    return prior, counts, record


def save_prior(path: str | Path, bins: torch.Tensor, prior: torch.Tensor, counts: torch.Tensor, meta: dict) -> Path:
    """Write a prior file (atomically: a concurrent reader never sees half of it)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        bins=bins.cpu().numpy().astype(np.float32),
        prior=prior.cpu().numpy().astype(np.float64),
        counts=counts.cpu().numpy().astype(np.float64),
        meta=np.array(json.dumps(meta, sort_keys=True, default=str)),
    )
    os.replace(tmp, path)
    return path


def load_prior(path: str | Path, bins: torch.Tensor, key: str = "color.prior", download: bool = True) -> torch.Tensor:
    """``color.prior=PATH``: a file written by ``save_prior`` (its bins must equal ``bins``), or the authors'
    ``prior_probs.npy`` (checksum-verified; for their 313 bins). Returns the prior (Q,) float64."""
    p = Path(path).expanduser()
    if p.suffix != ".npz":
        prior = torch.from_numpy(load_reference("prior_probs.npy", p, download))
        if len(prior) != len(bins):
            raise ConfigError(f"{key}={path} is the authors' prior over 313 bins, but color.bins has {len(bins)}")
        return prior
    if not p.is_file():
        raise ConfigError(f"{key}={path}: no such file")
    try:
        with np.load(p, allow_pickle=False) as data:
            missing = [k for k in PRIOR_FILE_KEYS if k not in data]
            if missing:
                raise ConfigError(f"{key}={path}: not a prior file of colorization.prior (no {', '.join(missing)})")
            saved_bins, prior = torch.from_numpy(data["bins"]), torch.from_numpy(data["prior"])
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}={path}: not a readable prior file ({err})") from err
    if saved_bins.shape != bins.shape or not torch.allclose(saved_bins.float(), bins.float().cpu()):
        raise ConfigError(
            f"{key}={path} was estimated over other bins ({len(saved_bins)} bins) than color.bins ({len(bins)} bins): "
            "estimate it again with the same color.bins"
        )
    return prior.double()


def resolve_prior(cfg: DictConfig, datamodule, bins: torch.Tensor, stride: int, rank: int = 0) -> torch.Tensor:
    """color.prior: "official" (the authors' ImageNet prior), a prior file (colorization.prior's .npz, or the
    authors' prior_probs.npy), or "estimate": a seeded uniform sample of the training images, cached per data
    source, bins, sample and the network's target ``stride``. Under DDP, ranks > 0 wait for rank 0's estimate, so all use the same prior."""
    source = str(cfg.color.prior)
    if source == "official":
        prior = torch.from_numpy(load_reference("prior_probs.npy", None, cfg.color.download))
        if len(prior) != len(bins):
            raise ConfigError(
                f"color.prior=official has {len(prior)} bins but color.bins={cfg.color.bins} has {len(bins)}"
            )
        return prior
    if source != "estimate":
        return load_prior(source, bins, download=cfg.color.download)
    color = cfg.color
    key = json.dumps(
        {
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "bins": bins.tolist(),
            "images": color.prior_images,
            "seed": color.prior_seed,
            "buffer": color.prior_buffer,
            "stride": stride,
        },
        sort_keys=True,
        default=str,
    )
    cache = Path(cfg.paths.cache_dir).expanduser() / f"prior_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if rank > 0:
        wait_for_file(cache, "rank 0's prior estimate")
    if cache.is_file():
        log.info("prior: cached estimate %s", cache)
        return load_prior(cache, bins)
    prior, counts, record = estimate_prior_from_data(
        datamodule, bins, color.prior_images, color.prior_seed, stride, color.prior_buffer, cfg.loss.lam
    )
    save_prior(cache, bins, prior, counts, record)
    return prior


def wait_for_file(path: Path, what: str, timeout: float = 3600.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if time.monotonic() > deadline:
            raise ConfigError(f"waited {timeout:.0f} s for {what} ({path}); is rank 0 running?")
        time.sleep(1.0)
