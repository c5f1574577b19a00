"""python -m colorization.prior [data=...] [color.bins=...] [out=PATH]: estimate a dataset's ab prior once, save it.

The estimate (a seeded uniform sample of the training images, as training sees them) and the file it writes, which
``color.prior=PATH`` reads back checked against ``color.bins``: ``color/prior_source.py``.
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
