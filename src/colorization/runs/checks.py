"""The training command's keys checked before any data is read: each check lives with what it checks (the loss, the
encoding, the network); here they run early, so a bad value fails in one line, not deep inside a run."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from colorization.color.encode import check_soft_encoding
from colorization.color.prior import check_lam
from colorization.errors import ConfigError, check_number
from colorization.models.batchnorm import check_kind
from colorization.models.data_init import INIT_METHODS
from colorization.models.losses import check_variant
from colorization.models.module import check_temperature, network_class


def check_train_config(cfg: DictConfig) -> None:
    """Cheap checks of the values that would otherwise fail deep inside a run."""
    for key in ("data.crop_size", "data.batch_size", "trainer.max_steps", "model.init_batches"):
        check_number(OmegaConf.select(cfg, key), key, integer=True)
    for key in ("data.resize", "data.num_workers", "color.prior_images"):
        if OmegaConf.select(cfg, key) is not None:
            check_number(OmegaConf.select(cfg, key), key, integer=True)
    if (cfg.data.get("num_workers") or 0) < 0:
        raise ConfigError(f"data.num_workers={cfg.data.num_workers} must be >= 0")
    check_variant(cfg.loss.name)
    check_lam(cfg.loss.lam)
    check_soft_encoding(cfg.loss.k, cfg.loss.sigma)
    check_temperature(cfg.model.temperature)
    model = cfg.model
    try:
        net = network_class(model.arch)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if cfg.data.crop_size % net.crop_multiple:
        raise ConfigError(
            f"data.crop_size={cfg.data.crop_size}: model.arch={model.arch} needs a multiple of {net.crop_multiple}"
        )
    check_kind(model.get("batchnorm", "caffe"))
    if model.get("init", "default") not in INIT_METHODS:
        raise ConfigError(f"model.init={model.init!r} is not one of {INIT_METHODS}")
    if (cfg.color.get("prior_images") or 1) < 1:
        raise ConfigError(f"color.prior_images={cfg.color.prior_images} must be >= 1 (or null: every image)")
    if cfg.ckpt_path and cfg.ckpt_path != "last" and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such file")


def check_trainer(cfg: DictConfig, trainer, datamodule) -> None:
    """The data against the processes (before the prior: fail in one line, early), and SyncBatchNorm's needs."""
    datamodule.check_world_size(trainer.world_size)
    datamodule.check_not_empty(trainer.world_size)
    if cfg.trainer.get("sync_batchnorm") and trainer.strategy.root_device.type != "cuda":
        raise ConfigError("trainer.sync_batchnorm=true needs CUDA devices (torch's SyncBatchNorm is GPU-only)")
    if cfg.trainer.get("sync_batchnorm") and cfg.model.get("batchnorm") == "caffe":
        raise ConfigError(
            "trainer.sync_batchnorm=true would replace model.batchnorm=caffe by torch's SyncBatchNorm, which has "
            "another moving average: use model.batchnorm=affine, or trainer.sync_batchnorm=false"
        )
