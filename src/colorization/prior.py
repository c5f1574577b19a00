"""python -m colorization.prior [data=...] [color.bins=...] [out=PATH]: estimate a dataset's ab prior once, save it.

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

import logging
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from colorization.color.prior_source import estimate_prior_from_data, save_prior
from colorization.runs.entry import command

log = logging.getLogger(__name__)


def estimate_and_save(cfg: DictConfig) -> Path:
    """Build the data source of ``cfg.data``, estimate its prior over ``cfg.color.bins``, write ``cfg.out``."""
    from colorization.color.bins import resolve_bins

    bins = resolve_bins(cfg)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    images = cfg.color.prior_images
    prior, counts, record = estimate_prior_from_data(
        datamodule, bins, images, cfg.color.prior_seed, cfg.stride, cfg.color.prior_buffer, cfg.loss.lam
    )
    meta = {
        **record,
        "bins": str(cfg.color.bins),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "written": datetime.now().isoformat(timespec="seconds"),
        "by": "python -m colorization.prior",
    }
    path = save_prior(cfg.out, bins, prior, counts, meta)
    log.info("prior: written %s (use it with color.prior=%s)", path, path)
    return path


@command("prior")
def main(cfg: DictConfig) -> None:
    print(f"written: {estimate_and_save(cfg)}")


if __name__ == "__main__":
    main()
