"""Where a run's first weights come from (``model.init_from``, ``model.init``): the authors' released file (their
layout and bins adopted), another run's checkpoint (all but the head), the authors' k-means init on training
batches, or the network's default init. A resumed run takes its weights from its checkpoint instead."""

from __future__ import annotations

import logging
import time

import torch
from omegaconf import DictConfig

from colorization.color import uint8_to_lightness
from colorization.color.bins import resolve_bins
from colorization.models.authors import adopt_authors_weights, is_authors_state, load_authors_weights_into
from colorization.models.data_init import kmeans_init
from colorization.models.init_from import load_body_weights, network_tensors, read_init_state

log = logging.getLogger(__name__)


def read_start(cfg: DictConfig) -> tuple[dict | None, torch.Tensor]:
    """``model.init_from``'s tensors (checked now, before any data is read) and the run's bins: the authors' 313
    when the file is theirs, else ``color.bins``."""
    state = read_init_state(cfg.model.init_from) if cfg.model.get("init_from") else None
    if state is not None and is_authors_state(state):
        return state, adopt_authors_weights(cfg, state)
    if state is not None:
        network_tensors(state, cfg.model.init_from)  # one of our checkpoints, or a one-line error now
    return state, resolve_bins(cfg)


def initialize(cfg: DictConfig, model, state: dict | None, datamodule, trainer, ckpt_path: str | None) -> None:
    """The module's first weights: ``state`` (from ``read_start``) takes precedence over ``model.init``."""
    init = cfg.model.get("init", "default")
    if state is not None and is_authors_state(state):
        tensors = load_authors_weights_into(model, state, cfg.model.init_from)
        what = "every layer, their head included" if model.criterion.classification else "all but the head"
        log.info("model.init_from: %d tensors of the authors' ECCV16 (%s; model.init not run)", len(tensors), what)
    elif state is not None:
        tensors = load_body_weights(model, cfg.model.init_from, state=state)
        log.info(
            "model.init_from: %d tensors from %s (all but the head; model.init not run)",
            len(tensors),
            cfg.model.init_from,
        )
    elif init == "kmeans" and ckpt_path:
        log.info("model.init=kmeans: not rerun, the weights come from ckpt_path=%s", ckpt_path)
    elif init == "kmeans" and trainer.global_rank == 0:  # DDP broadcasts rank 0's weights when it wraps the model
        kmeans_init_from_data(cfg, model, datamodule, trainer.strategy.root_device)


def kmeans_init_from_data(cfg: DictConfig, model, datamodule, device: torch.device) -> None:
    """model.init=kmeans: the authors' within-layer k-means init on ``model.init_batches`` training batches
    (a seeded uniform sample), on ``device``. Recorded in the run's log; a resumed run skips it."""
    images = cfg.model.init_batches * cfg.data.batch_size
    start = time.monotonic()
    datamodule.setup("fit")
    batches = [
        uint8_to_lightness(b.to(device))
        for b in datamodule.sample_batches(images, cfg.seed + 1, cfg.color.prior_buffer)
    ]
    net = model.net.to(device)
    records = kmeans_init(net, batches, seed=cfg.seed)
    model.net.cpu()
    log.info(
        "model.init=kmeans: %d layers initialized on %d training images in %.0f s",
        len(records),
        sum(len(b) for b in batches),
        time.monotonic() - start,
    )
