"""python -m colorization.evaluate ckpt_path=CKPT | model.weights=PATH [data=...] [protocol.name=...]  (Hydra main).

One table, four rows: the model, and the paper's baselines ``gray`` (ab = 0), ``random`` (the ab of
another image: the previous one in loading order) and ``ground_truth`` (the photo itself). Columns:
AuC and rebalanced AuC of the per-pixel ab error (full resolution: the prediction upsampled
bilinearly), colorfulness and its gap to the photos, PSNR and SSIM of the RGB images, and the top-1 /
top-5 accuracy of an ImageNet VGG-16 on the images when weights and labels are available, and the perceptual
metrics later colorization papers report: FID of each row's images against the photos (torchmetrics with
torch-fidelity's Inception-v3) and LPIPS to the photo (torchmetrics, AlexNet), when their weights are on disk.
Written as metrics.json and metrics.md in the run directory, and to the loggers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from colorization.color import ab_bins, load_reference
from colorization.errors import ConfigError
from colorization.metrics.evaluation import Evaluation, write_report
from colorization.metrics.protocol import PROTOCOLS, describe_data, evaluation_dataset, load_indices, protocol_transform
from colorization.metrics.reference_nets import fid_metric, load_vgg16, lpips_metric
from colorization.runs.entry import command, command_line
from colorization.runs.trainer import build_trainer, logged_run
from colorization.serving.model_choice import chosen_model, load_chosen

log = logging.getLogger(__name__)


def validate(cfg: DictConfig) -> None:
    if cfg.protocol.name not in PROTOCOLS:
        raise ConfigError(f"protocol.name={cfg.protocol.name!r} is not one of {PROTOCOLS}")
    if not isinstance(cfg.protocol.size, int) or cfg.protocol.size < 8 or cfg.protocol.size % 8:
        raise ConfigError(f"protocol.size={cfg.protocol.size} must be a positive multiple of 8 (the network's stride)")
    if cfg.temperature is not None and cfg.temperature <= 0:
        raise ConfigError(f"temperature={cfg.temperature} must be > 0")
    if cfg.color.prior not in ("model", "official"):
        raise ConfigError(f"color.prior={cfg.color.prior!r} is not one of ('model', 'official')")
    if cfg.num_examples < 0:
        raise ConfigError(f"num_examples={cfg.num_examples} must be >= 0")


def auc_bins_and_prior(cfg: DictConfig, module) -> tuple[torch.Tensor, torch.Tensor]:
    """The prior that weights the rebalanced AuC: the model's own, or the authors' ImageNet one (the paper's).

    The authors' released weights come without a prior of their own: theirs is the ImageNet one.
    """
    if cfg.color.prior == "official" or cfg.model.weights:
        prior = torch.from_numpy(load_reference("prior_probs.npy", download=cfg.color.download))
        bins = module.bins.cpu() if cfg.model.weights else ab_bins("official", download=cfg.color.download)
        return bins, prior
    return module.bins.cpu(), module.prior.cpu()


def has_labels(data: DictConfig) -> bool:
    return bool((data.source == "folder" and data.get("labels")) or (data.source == "hf" and data.get("label_column")))


def perceptual_metrics(cfg: DictConfig, fid_feature: nn.Module | None) -> dict:
    """The FID and LPIPS factories whose weights are there; a one-line skip for each that is not."""
    metrics = {}
    for name, (make, source) in {
        "fid": fid_metric(cfg.fid.weights, cfg.fid.download, fid_feature),
        "lpips": lpips_metric(cfg.lpips.weights, cfg.lpips.download),
    }.items():
        if make is None:
            print(f"{name.upper()} skipped: {source}; see {name}.weights in conf/evaluate.yaml")
        else:
            log.info("%s: %s", name.upper(), source)
            metrics[name] = make
    return metrics


def evaluate(cfg: DictConfig, fid_feature: nn.Module | None = None) -> dict[str, dict[str, float]]:
    """Build everything from the config, run the evaluation, write the report; returns the table.

    ``fid_feature``: a feature extractor of one's own for FID, instead of fid.weights' Inception-v3."""
    validate(cfg)
    if cfg.data.source == "shards":
        raise ConfigError(
            "data=shards: evaluate measures whole photos at full resolution, shards hold copies resized to "
            f"data.resize={cfg.data.resize}: evaluate the source they were made from (data=folder data.root=DIR, data=hf)"
        )
    L.seed_everything(cfg.seed, workers=True)
    size = cfg.protocol.size
    datamodule = hydra.utils.instantiate(cfg.data, crop_size=size, resize=size)  # checks every data key
    data = OmegaConf.create(dict(datamodule.hparams))
    indices = load_indices(cfg.protocol.indices, cfg.color.download)
    split = getattr(datamodule, "file_split", None)  # a folder's listing, reused
    dataset, classes = evaluation_dataset(data, protocol_transform(cfg.protocol.name, size), indices, split)
    module = load_chosen(cfg)
    bins, prior = auc_bins_and_prior(cfg, module)

    classifier = None
    if not has_labels(data):
        print("VGG-16 classification skipped: the data source has no labels (data.labels / data.label_column)")
    else:
        classifier, source = load_vgg16(cfg.vgg.weights, cfg.vgg.download)
        if classifier is None:
            print(f"VGG-16 classification skipped: {source}; pass vgg.weights=PATH to a torchvision VGG-16 state dict")
        else:
            log.info("VGG-16: %s", source)
            if classes is not None and len(classes) != 1000:
                n = len(classes)
                log.warning("labels: %d class folders, not ImageNet's 1000: VGG-16 accuracy assumes sorted wnids", n)

    perceptual = perceptual_metrics(cfg, fid_feature)
    evaluation = Evaluation(module, cfg.temperature, bins, prior, classifier, cfg.num_examples, perceptual)
    loader = DataLoader(dataset, batch_size=data.batch_size, num_workers=data.num_workers, shuffle=False)
    trainer: L.Trainer = build_trainer(cfg)
    with logged_run(trainer, cfg):
        trainer.test(evaluation, dataloaders=loader, verbose=False)
        if trainer.is_global_zero:
            what = "=".join(chosen_model(cfg))
            subset = f", indices {cfg.protocol.indices}" if indices is not None else ""
            protocol = f"{cfg.protocol.name} {size}{subset}"
            temperature = cfg.temperature if cfg.temperature is not None else float(module.hparams.temperature)
            title = f"Evaluation of {what}: {evaluation.count} images ({protocol}), T = {temperature:g}"
            dataset_id = data.path if data.source == "hf" else data.source  # the Hub's dataset id where there is one
            context = {"model": what, "images": evaluation.count, "data": describe_data(data), "dataset": dataset_id,
                       "protocol": protocol, "temperature": temperature, "command": command_line("evaluate")}  # fmt: skip
            out = Path(cfg.paths.output_dir)
            write_report(out, evaluation.results, evaluation.examples, title, trainer.loggers, context)
    return evaluation.results


@command("evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
