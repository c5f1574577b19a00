"""python -m colorization.train [experiment=rebalanced] [key=value ...]  (Hydra main)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from colorization.color import ab_bins, estimate_prior, load_reference
from colorization.data import ConfigError
from colorization.models.losses import VARIANTS
from colorization.models.module import lab_inputs
from colorization.utils import config_dir, one_line_errors, register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


def validate(cfg: DictConfig) -> None:
    """Cheap checks of the values that would otherwise fail deep inside a run."""
    loss = cfg.loss
    if loss.name not in VARIANTS:
        raise ConfigError(f"loss.name={loss.name!r} is not one of {VARIANTS}")
    if not 0 <= loss.lam <= 1:
        raise ConfigError(f"loss.lam={loss.lam} must be in [0, 1]")
    if loss.sigma <= 0:
        raise ConfigError(f"loss.sigma={loss.sigma} must be > 0")
    if loss.k < 1:
        raise ConfigError(f"loss.k={loss.k} must be >= 1")
    if cfg.model.temperature <= 0:
        raise ConfigError(f"model.temperature={cfg.model.temperature} must be > 0")
    if cfg.ckpt_path and cfg.ckpt_path != "last" and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such file")


def resolve_bins(cfg: DictConfig) -> torch.Tensor:
    source = cfg.color.bins
    bins = ab_bins(source if source in ("srgb", "official") else Path(source).expanduser(), download=cfg.color.download)
    if cfg.loss.k > len(bins):
        raise ConfigError(f"loss.k={cfg.loss.k} is larger than the number of bins Q={len(bins)}")
    return bins


def resolve_prior(cfg: DictConfig, datamodule, bins: torch.Tensor) -> torch.Tensor:
    """color.prior: "official" (the authors' ImageNet prior), a .npy path, or "estimate" (cached)."""
    source = str(cfg.color.prior)
    if source != "estimate":
        prior = load_reference("prior_probs.npy", None if source == "official" else source, cfg.color.download)
        if len(prior) != len(bins):
            raise ConfigError(
                f"color.prior={source} has {len(prior)} bins but color.bins={cfg.color.bins} has {len(bins)}"
            )
        return torch.from_numpy(prior)
    key = json.dumps(
        {
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "bins": bins.tolist(),
            "batches": cfg.color.prior_batches,
        },
        sort_keys=True,
        default=str,
    )
    cache = Path(cfg.paths.cache_dir).expanduser() / f"prior_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
    if cache.is_file():
        log.info("prior: cached estimate %s", cache)
        return torch.from_numpy(np.load(cache, allow_pickle=False))
    log.info("prior: estimating from %d training batches", cfg.color.prior_batches)
    datamodule.setup("fit")
    prior = estimate_prior((lab_inputs(images)[1] for images in datamodule.ab_batches(cfg.color.prior_batches)), bins)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, prior.numpy())
    os.replace(tmp, cache)
    return prior


_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextlib.contextmanager
def one_job_per_launch():
    """Lightning starts DDP ranks > 0 by rerunning sys.argv plus hydra.run.dir=<hydra.run.dir>, and leaves
    LOCAL_RANK and its process group behind. In a multirun that would rerun the whole sweep elsewhere, and
    the next job would find stale ranks: rerun this one job in its own directory, then clean up."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    hydra_cfg = HydraConfig.get()
    argv, env = sys.argv, {key: os.environ.get(key) for key in _DDP_ENV}
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def train(cfg: DictConfig) -> L.Trainer:
    """Build everything from the config and fit; returns the trainer (metrics, model, checkpoints)."""
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    datamodule.check_world_size(trainer.world_size)  # before the prior: fail in one line, early
    if cfg.trainer.get("sync_batchnorm") and trainer.strategy.root_device.type != "cuda":
        raise ConfigError("trainer.sync_batchnorm=true needs CUDA devices (torch's SyncBatchNorm is GPU-only)")
    bins = resolve_bins(cfg)
    prior = resolve_prior(cfg, datamodule, bins)
    model = hydra.utils.instantiate(  # plain containers in hparams: checkpoints load with weights_only
        cfg.model, loss=OmegaConf.to_container(cfg.loss), bins=bins, prior=prior, _convert_="all"
    )
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    try:
        with one_job_per_launch():
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    finally:
        for logger in loggers:  # close the W&B run even on failure: multiruns start a fresh one per job
            if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
                logger.experiment.finish()
    return trainer


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    trainer = train(cfg)
    metric = trainer.callback_metrics.get(cfg.get("optimized_metric") or "")
    return None if metric is None else float(metric)


if __name__ == "__main__":
    main()
