"""A run's trainer and module, built from the config; the checkpoint it resumes; its loggers closed whatever happens."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def build_trainer(cfg: DictConfig, extra_callbacks=(), **options):
    """The Trainer of ``cfg.trainer`` with the callbacks of ``cfg.callbacks`` (then ``extra_callbacks``) and the
    loggers of ``cfg.logger``; ``options`` go to the Trainer."""
    from lightning.pytorch.callbacks import ProgressBar

    def built(group: str) -> list:
        return [hydra.utils.instantiate(c) for c in (cfg.get(group) or {}).values() if c is not None]

    callbacks = [*built("callbacks"), *extra_callbacks]
    wants_bar = cfg.trainer.get("enable_progress_bar", True) is not False
    # Lightning's rich bar without "Epoch 0/-2", where Lightning would pick its rich bar itself (rich installed)
    if wants_bar and not any(isinstance(c, ProgressBar) for c in callbacks) and importlib.util.find_spec("rich"):
        from colorization.callbacks.progress_bar import StepsProgressBar

        callbacks.append(StepsProgressBar())
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=built("logger") or False, **options)


@contextlib.contextmanager
def logged_run(trainer, cfg: DictConfig):
    """The body of a run (train, evaluate, probe): the whole config goes to the loggers first, and the W&B run
    is closed when the body ends, whatever happens (a multirun starts a fresh one per job); marked failed
    (exit code 1) when the body raised."""
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    failed = True
    try:
        yield trainer
        failed = False
    finally:
        for logger in trainer.loggers:
            finish = getattr(getattr(logger, "experiment", None), "finish", None)  # W&B's; CSV has none
            if finish is not None:
                finish(exit_code=1 if failed else 0)


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """ckpt_path=last: the newest <log_dir>/<task_name>/runs/*/checkpoints/last.ckpt (or a SLURM requeue
    checkpoint, runs/*/hpc_ckpt_*.ckpt). None, with a warning, when there is none yet: a requeued job can
    always pass ckpt_path=last."""
    if cfg.ckpt_path != "last":
        return cfg.ckpt_path
    runs = Path(cfg.paths.log_dir).expanduser() / cfg.task_name / "runs"
    found = [*runs.glob("*/checkpoints/last.ckpt"), *runs.glob("*/hpc_ckpt_*.ckpt")]
    if not found:
        log.warning("ckpt_path=last: no checkpoint under %s/*/checkpoints/last.ckpt; starting from scratch", runs)
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    log.info("ckpt_path=last: resuming from %s", newest)
    return str(newest)


def build_model(cfg: DictConfig, bins: torch.Tensor, prior: torch.Tensor | None, **overrides) -> L.LightningModule:
    """The LightningModule of cfg.model, with plain containers in its hyperparameters (so checkpoints load
    with weights_only=True); ``model.init_from`` is a run option, not a hyperparameter."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    for run_option in ("init_from", "init_batches"):
        model_cfg.pop(run_option, None)
    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    # _recursive_=False: model.optimizer and model.scheduler stay configs (the module instantiates them itself)
    model = hydra.utils.instantiate(
        model_cfg, loss=loss, bins=bins, prior=prior, _convert_="all", _recursive_=False, **overrides
    )
    if not cfg.model.get("compile"):  # Lightning's model summary: sizes and FLOPs at the crop (one forward)
        model.example_input_array = torch.zeros(1, 1, cfg.data.crop_size, cfg.data.crop_size)
    return model
