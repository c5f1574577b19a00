"""python -m colorization.train [experiment=rebalanced] [key=value ...]: the training recipe.

Instantiate the data, the model, the trainer with its callbacks and loggers; fit. What each step needs lives
with what it builds: ``runs/checks.py`` (the keys, early), ``models/initialize.py`` (first weights and bins),
``color/prior_source.py`` (the prior), ``runs/trainer.py`` (trainer, module, resume).
"""

from __future__ import annotations

import hydra
import lightning as L
from omegaconf import DictConfig

from colorization.checkpoints import load_checkpoint
from colorization.color.encode import check_soft_encoding
from colorization.color.prior_source import resolve_prior
from colorization.models.initialize import initialize, read_start
from colorization.models.module import network_class
from colorization.runs.checks import check_train_config, check_trainer
from colorization.runs.entry import command
from colorization.runs.sweeps import job_guard
from colorization.runs.trainer import build_model, build_trainer, logged_run, resolve_ckpt_path


def train(cfg: DictConfig) -> L.Trainer:
    """Build everything from the config and fit; returns the trainer (metrics, model, checkpoints)."""
    check_train_config(cfg)
    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path:
        load_checkpoint(ckpt_path, "ckpt_path", mmap=True)  # refuse a file that would run code, before any work
    init_state, bins = read_start(cfg)
    check_soft_encoding(cfg.loss.k, cfg.loss.sigma, len(bins))  # k against Q, before any data is read
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    trainer: L.Trainer = build_trainer(cfg)
    check_trainer(cfg, trainer, datamodule)
    with logged_run(trainer, cfg):  # the config to W&B first; the W&B run closed whatever happens
        L.seed_everything(cfg.seed, workers=True)
        stride = network_class(cfg.model.arch).target_stride
        prior = resolve_prior(cfg, datamodule, bins, stride, trainer.global_rank)
        # seed again: whether the prior was estimated (drawing random crops) or read from the cache, the
        # network starts from the same weights, so a resumed run and a fresh one agree
        L.seed_everything(cfg.seed, workers=True)
        model = build_model(cfg, bins, prior)
        initialize(cfg, model, init_state, datamodule, trainer, ckpt_path)
        del init_state  # copied into the network: free the file's tensors before training
        # in a multirun, sweeps.job_guard (on main) makes DDP ranks > 0 rerun this one job, not the sweep
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return trainer


@command("train")
@job_guard  # multiruns: a failing job is recorded (error.txt, result.json) and the sweep goes on
def main(cfg: DictConfig) -> float | None:
    trainer = train(cfg)
    metric = trainer.callback_metrics.get(cfg.get("optimized_metric") or "")
    return None if metric is None else float(metric)


if __name__ == "__main__":
    main()
