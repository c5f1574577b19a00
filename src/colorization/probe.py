"""python -m colorization.probe ckpt_path=CKPT data.root=DIR [key=value ...]  (Hydra main).

Linear probes on the frozen features of a colorization checkpoint (model=alexnet), and on the same
network randomly initialized (the floor that shows what colorization pre-training adds). Writes
``probe.json`` and ``probe.md`` (top-1 / top-5 per layer and backbone) to the run directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from colorization.checkpoints import load_checkpoint
from colorization.errors import ConfigError
from colorization.models.alexnet import MIN_SIZE_FEATURES
from colorization.models.probe import REDUCE_MODES, LinearProbes
from colorization.models.probe_setup import (
    baseline_backbones,
    check_validation_labels,
    class_names,
    load_backbone,
    markdown_table,
    prepare_backbone,
)
from colorization.runs.entry import command
from colorization.runs.trainer import build_trainer, logged_run

log = logging.getLogger(__name__)

BASELINES = ("random",)
CHECKPOINT = "checkpoint"  # the name of the probed checkpoint's backbone in metrics and reports


def validate(cfg: DictConfig) -> None:
    """Cheap checks of the values that would otherwise fail deep inside a run."""
    if not cfg.ckpt_path:
        raise ConfigError(
            "ckpt_path is not set: pass ckpt_path=CKPT (a checkpoint of colorization.train model=alexnet)"
        )
    if not Path(cfg.ckpt_path).expanduser().is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such file")
    if cfg.resume and not Path(cfg.resume).expanduser().is_file():
        raise ConfigError(f"resume={cfg.resume}: no such file")
    probe = cfg.probe
    if probe.reduce not in REDUCE_MODES:
        raise ConfigError(f"probe.reduce={probe.reduce!r} is not one of {REDUCE_MODES}")
    for name in probe.baselines or []:
        if name not in BASELINES:
            raise ConfigError(f"probe.baselines: {name!r} is not one of {BASELINES}")
    if not probe.layers:
        raise ConfigError("probe.layers is empty: give at least one layer and its size, e.g. {conv5: [6, 6]}")
    for layer, size in probe.layers.items():
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ConfigError(f"probe.layers.{layer}={list(size)}: give a positive [height, width] (or null: as it is)")
    if probe.num_classes is not None and probe.num_classes < 2:
        raise ConfigError(f"probe.num_classes={probe.num_classes} must be >= 2")
    data = cfg.data
    if data.source == "samples":
        raise ConfigError("data=samples has no labels: probe a labeled folder (data.root=DIR) or data=hf")
    if data.source == "folder" and not data.get("labels"):
        raise ConfigError("data.labels=false: probing needs the class sub-folders of data.root (data.labels=true)")
    if data.source == "hf" and not data.get("label_column"):
        raise ConfigError("data.label_column is not set: probing needs labels (e.g. data.label_column=label)")
    if probe.classic and data.crop_size < MIN_SIZE_FEATURES:
        raise ConfigError(
            f"data.crop_size={data.crop_size}: AlexNet's pool5 needs crops of at least {MIN_SIZE_FEATURES}"
        )


def probe(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> tuple[L.Trainer, dict]:
    """Build everything from the config, train the probes, validate; returns the trainer and the report.

    ``callbacks``: extra Lightning callbacks, for programmatic use, after the configured ones.
    """
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True)
    net, hparams = load_backbone(cfg.ckpt_path)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    backbones = {CHECKPOINT: net, **baseline_backbones(net, hparams, cfg.probe.baselines or [])}
    for backbone in backbones.values():
        prepare_backbone(backbone, cfg, datamodule)
    n_train = len(datamodule.train_set) if hasattr(datamodule.train_set, "__len__") else None
    if n_train is not None and n_train < cfg.data.batch_size:  # the training loader drops the last partial batch
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is larger than the {n_train} training images")
    label_column = cfg.data.get("label_column")
    classes = class_names(datamodule, label_column)
    num_classes = cfg.probe.num_classes or (len(classes) if classes else None)
    if num_classes is None:
        raise ConfigError("probe.num_classes is not set and cannot be read from the data: pass probe.num_classes=N")
    val_images = check_validation_labels(datamodule, num_classes, label_column)
    layers = {k: (list(v) if v is not None else None) for k, v in cfg.probe.layers.items()}
    model = LinearProbes(
        backbones,
        num_classes=num_classes,
        layers=layers,
        reduce=cfg.probe.reduce,
        optimizer=OmegaConf.to_container(cfg.probe.optimizer),
        scheduler=OmegaConf.to_container(cfg.probe.scheduler) if cfg.probe.scheduler else None,
        bias_lr_mult=cfg.probe.bias_lr_mult,
        bias_decay_mult=cfg.probe.bias_decay_mult,
        classic=cfg.probe.classic,
        input_size=cfg.data.crop_size,
    )
    trainer: L.Trainer = build_trainer(cfg, extra_callbacks=callbacks or ())
    with logged_run(trainer, cfg):
        if cfg.resume:
            load_checkpoint(cfg.resume, "resume", mmap=True)  # refuse a file that would run code, before any work
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.resume, weights_only=True)
        metrics = trainer.validate(model, datamodule=datamodule, verbose=False)[0]  # the reported numbers
    report = {
        "ckpt_path": str(cfg.ckpt_path),
        "arch": hparams["arch"],
        "loss": (hparams.get("loss") or {}).get("name"),
        "num_classes": num_classes,
        "classes": classes,
        "chance_top1": 1 / num_classes,
        "val_images": val_images,
        "train_steps": trainer.global_step,
        "reduce": cfg.probe.reduce,
        "layers": {layer: list(model.heads[model.key(CHECKPOINT, layer)].out_size) for layer in layers},
        "feature_channels": {layer: net.feature_channels[layer] for layer in layers},
        "results": {
            b: {layer: {k: float(metrics[f"val/{b}/{layer}/{k}"]) for k in ("top1", "top5")} for layer in layers}
            for b in backbones
        },
    }
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "probe.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "probe.md").write_text(markdown_table(report))
        log.info("probe: results in %s\n%s", out / "probe.json", markdown_table(report))
    return trainer, report


@command("probe")
def main(cfg: DictConfig) -> None:
    probe(cfg)


if __name__ == "__main__":
    main()
