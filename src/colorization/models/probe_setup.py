"""Around the probes (``models/probe.py``), what the probe command prepares and reports: the frozen backbone of a
checkpoint, post-processed as the authors did (BatchNorm folded, gradient ratios calibrated), the class names, the
validation labels checked, and the Markdown table of the results."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from colorization.color import uint8_to_lightness
from colorization.errors import ConfigError
from colorization.models.batchnorm import fold_batchnorm
from colorization.models.data_init import calibrate_gradient_ratio
from colorization.models.eccv16 import PORT_LAYOUT
from colorization.models.module import build_network
from colorization.models.pretrained import load_module
from colorization.models.probe import IGNORE_LABEL

log = logging.getLogger(__name__)


def load_backbone(ckpt_path: str) -> tuple[torch.nn.Module, dict]:
    """The colorization network of a training checkpoint (eval mode), and the checkpoint's hyperparameters."""
    module = load_module(ckpt_path)
    net = module.net
    if not hasattr(net, "features"):
        raise ConfigError(
            f"ckpt_path={ckpt_path}: model.arch={module.hparams.arch!r} exposes no per-layer features; "
            "linear probes need a model=alexnet checkpoint"
        )
    return net.eval(), dict(module.hparams)


class _ProbedTrunk(torch.nn.Module):
    """A backbone as a function of L to its last probed activation (pool5), for the gradient-ratio calibration."""

    def __init__(self, net: torch.nn.Module, classic: bool):
        super().__init__()
        self.net, self.classic = net, classic

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.net.features(L, classic=self.classic)["pool5"]


def baseline_backbones(net: torch.nn.Module, hparams: dict, names: list[str]) -> dict[str, torch.nn.Module]:
    """probe.baselines: "random" is the same architecture and options, freshly initialized (seeded)."""
    options = {key: hparams.get(key, default) for key, default in {**PORT_LAYOUT, "width": 1.0}.items()}
    return {
        name: build_network(hparams["arch"], net.out_channels, **options).eval() for name in names if name == "random"
    }


def prepare_backbone(net: torch.nn.Module, cfg: DictConfig, datamodule) -> torch.nn.Module:
    """The authors' post-processing of the probed net: BatchNorm folded into the convolutions (probe.fold_batchnorm),
    then magic init's between-layer calibration on one training batch (probe.rescale)."""
    if cfg.probe.fold_batchnorm:
        log.info("probe: folded %d BatchNorm layers into their convolutions", fold_batchnorm(net))
    if cfg.probe.rescale:
        batch = next(iter(datamodule.sample_batches(cfg.data.batch_size, cfg.seed, 0)))
        L_batch = uint8_to_lightness(batch)
        ratios = calibrate_gradient_ratio(_ProbedTrunk(net, cfg.probe.classic), L_batch, seed=cfg.seed)
        log.info("probe: rescaled (gradient / weight ratios now %s)", ", ".join(f"{r:.3g}" for r in ratios))
    return net


def class_names(datamodule, label_column: str | None) -> list[str] | None:
    """The sorted sub-folder names (folder), or the names of a ClassLabel column (hf)."""
    if getattr(datamodule, "classes", None):
        return list(datamodule.classes)
    features = getattr(getattr(datamodule.train_set, "dataset", None), "features", None) or {}
    feature = features.get(label_column) if label_column else None
    return list(feature.names) if hasattr(feature, "names") else None


def check_validation_labels(datamodule, num_classes: int, label_column: str | None) -> int | None:
    """Warn (counted) about validation images without a known class and classes the split lacks."""
    val = datamodule.val_set
    labels = getattr(val, "labels", None)  # folder source
    if labels is None and hasattr(getattr(val, "dataset", None), "column_names") and label_column:
        labels = list(val.dataset[label_column])  # map-style hf: reads one column only
    if labels is None:
        return None  # streaming: unknown until read
    unknown = sum(1 for y in labels if y == IGNORE_LABEL)
    if unknown:
        log.warning("probe: %d validation images have a class not in the training set; they are ignored", unknown)
    covered = len({y for y in labels if y != IGNORE_LABEL})
    if covered < num_classes:
        log.warning(
            "probe: the validation split covers %d of %d classes (for hf, set data.val_split)", covered, num_classes
        )
    return len(labels) - unknown


def markdown_table(report: dict) -> str:
    backbones = list(report["results"])
    header = "| layer | features | " + " | ".join(f"{b} top-1 | {b} top-5" for b in backbones) + " |"
    lines = [header, "|" + "---|" * (2 + 2 * len(backbones))]
    for layer, size in report["layers"].items():
        dims = f"{report['feature_channels'][layer]}x{size[0]}x{size[1]}"
        cells = [f"{100 * report['results'][b][layer][k]:.1f}" for b in backbones for k in ("top1", "top5")]
        lines.append(f"| {layer} | {dims} | " + " | ".join(cells) + " |")
    top5 = min(5, report["num_classes"])
    return (
        f"Linear probes on `{report['ckpt_path']}` (arch {report['arch']}), accuracy in % on "
        f"{report['val_images']} validation images, {report['num_classes']} classes (chance "
        f"{100 / report['num_classes']:.1f} %; top-5 is top-{top5}). Features reduced by {report['reduce']}, "
        f"{report['train_steps']} training steps.\n\n" + "\n".join(lines) + "\n"
    )
