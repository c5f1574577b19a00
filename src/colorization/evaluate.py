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

import json
import logging
import math
import re
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.utils import make_grid, save_image

from colorization.color import ab_bins, lab_to_rgb, load_reference, rgb_to_lab
from colorization.data.crops import ResizeTo
from colorization.data.datasets import HFImages, HFImageStream, ImageFiles, val_transform
from colorization.data.sources import class_labels, class_of, list_images, load_hf_split, sample_split
from colorization.errors import ConfigError
from colorization.metrics import AuC, Colorfulness, psnr, ssim, topk_accuracy
from colorization.models.pretrained import load_model
from colorization.utils import build_trainer, command, logged_run

log = logging.getLogger(__name__)

ROWS = ("model", "gray", "random", "ground_truth")
PROTOCOLS = ("center_crop", "resize")
COLUMNS = {  # key in metrics.json -> Markdown heading
    "auc": "AuC",
    "auc_rebalanced": "AuC rebal.",
    "colorfulness": "colorfulness",
    "colorfulness_gap": "colorfulness - truth",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "vgg_top1": "VGG-16 top-1 (%)",
    "vgg_top5": "VGG-16 top-5 (%)",
    "fid": "FID",
    "lpips": "LPIPS",
}
OFFICIAL_INDICES = "ilsvrclin12_val_inds"  # the authors' 10k ImageNet-val test indices (colorization-pytorch)
_IMAGENET_VAL = re.compile(r"ILSVRC2012_val_(\d{8})")


# ---- the images ------------------------------------------------------------------------------
def protocol_transform(name: str, size: int):
    """center_crop: shorter side to size, then the central size x size (the paper's); resize: the whole photo."""
    if name == "center_crop":
        return val_transform(size, size)
    return ResizeTo(size)


def load_indices(spec: str | None, download: bool) -> np.ndarray | None:
    """protocol.indices: null, ilsvrclin12_val_inds (the authors' file), or a .npy / text file of integers."""
    if not spec:
        return None
    if str(spec) == OFFICIAL_INDICES:
        indices = load_reference(f"{OFFICIAL_INDICES}.npy", download=download)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"protocol.indices={spec}: no such file")
        try:
            indices = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path, dtype=np.int64)
        except ValueError as err:
            raise ConfigError(f"protocol.indices={spec}: not a list of integers ({err})") from err
    indices = np.asarray(indices).ravel()
    if not np.issubdtype(indices.dtype, np.integer) or (indices < 0).any() or len(np.unique(indices)) != len(indices):
        raise ConfigError(f"protocol.indices={spec}: expected distinct non-negative integers")
    return np.sort(indices)


def _select_files(files: list[Path], indices: np.ndarray | None, where: str) -> list[int]:
    """Positions of the indexed files: ImageNet-val names give their own index (val_N is index N - 1)."""
    if indices is None:
        return list(range(len(files)))
    numbers = [_IMAGENET_VAL.search(f.name) for f in files]
    if all(numbers):
        position = {int(m.group(1)) - 1: i for i, m in enumerate(numbers)}
        missing = [int(i) for i in indices if int(i) not in position]
        if missing:
            name = f"ILSVRC2012_val_{missing[0] + 1:08d}"
            raise ConfigError(f"protocol.indices: {len(missing)} indexed images are not in {where} (e.g. {name})")
        return [position[int(i)] for i in indices]
    if indices[-1] >= len(files):
        raise ConfigError(f"protocol.indices: index {indices[-1]} is out of range ({len(files)} images in {where})")
    return [int(i) for i in indices]


def evaluation_dataset(
    data: DictConfig, transform, indices: np.ndarray | None, split=None
) -> tuple[Dataset, list[str] | None]:
    """All validation images of the data source (whole photos, not training crops), and the class names.

    samples: the held-out photos; folder: every image under data.val_root (or data.root); hf: data.val_split
    (or data.split). Labels: folder sub-folder names in sorted order (data.labels), or data.label_column.
    ``split``: the DataModule's folder split, whose listing of data.val_root is reused (no second walk; data.root
    is read back from its index file).
    """
    if data.source == "shards":  # the study's photos (evaluate refuses shards: they are resized copies)
        from colorization.data.shards import ShardImages, split_url

        if indices is not None:
            raise ConfigError("protocol.indices: shards are stored in their own order; use the source they came from")
        store = dict(storage_options=data.storage_options, cache_dir=data.cache_dir, max_cache_size=data.max_cache_size)
        return ShardImages(split_url(data.root, "val"), transform, data.seed, **store), None
    if data.source == "samples":
        files = sample_split().val
        return ImageFiles([files[i] for i in _select_files(files, indices, "the sample photos")], transform), None
    if data.source == "folder":
        key = "data.val_root" if data.val_root else "data.root"
        root = Path(data.val_root or data.root).expanduser()
        files = split.val if split is not None and data.val_root else list_images(root, key, data.get("index"))
        listed = files
        files = [files[i] for i in _select_files(files, indices, f"{key}={root}")]
        classes = labels = None
        if data.labels:
            classes = sorted({class_of(f, root) for f in listed})  # from the same listing
            labels = class_labels(files, root, classes)
        return ImageFiles(files, transform, labels), classes
    examples = load_hf_split(data.path, data.name, data.data_dir, data.val_split or data.split, data.streaming)
    if indices is not None:
        keep = set(indices.tolist())
        if data.streaming:
            examples = examples.filter(lambda _, i: i in keep, with_indices=True)
        elif indices[-1] >= len(examples):
            raise ConfigError(f"protocol.indices: index {indices[-1]} is out of range for {len(examples)} examples")
        else:
            examples = examples.select(indices.tolist())
    wrap = HFImageStream if data.streaming else HFImages
    return wrap(examples, transform, data.image_column, data.label_column), None


# ---- the classifier --------------------------------------------------------------------------
def load_vgg16(weights: str | None, download: bool) -> tuple[nn.Module | None, str]:
    """torchvision's VGG-16 with ImageNet weights, or None and the reason. Never random weights.

    vgg.weights: imagenet (torchvision's cache, else a download when vgg.download), a local state dict
    file, or null (off).
    """
    from torchvision.models import VGG16_Weights, vgg16

    if not weights:
        return None, "vgg.weights is null"
    if str(weights) == "imagenet":
        url = VGG16_Weights.IMAGENET1K_V1.url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if not cached.is_file() and not download:
            return None, f"no ImageNet weights in {cached.parent} and vgg.download=false"
        try:
            state = torch.hub.load_state_dict_from_url(
                url, map_location="cpu", progress=False, check_hash=True, weights_only=True
            )
        except Exception as err:  # no network, a proxy, a partial file: say so and go on without it
            if cached.is_file():
                return None, f"the cached ImageNet weights {cached} could not be read ({type(err).__name__})"
            return None, f"no ImageNet weights in {cached.parent} and the download failed ({type(err).__name__})"
        source = f"torchvision ImageNet weights ({cached})"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"vgg.weights={weights}: no such file (or use vgg.weights=imagenet)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(f"vgg.weights={weights}: not a PyTorch state dict ({type(err).__name__})") from err
        source = str(path)
    model = vgg16(weights=None)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()
        raise ConfigError(f"vgg.weights={weights}: not a torchvision VGG-16 state dict ({first[-1].strip()})") from err
    return model.eval().requires_grad_(False), source


# ---- the perceptual metrics ------------------------------------------------------------------
def _cached(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def _fetch(url: str, what: str, key: str, download: bool) -> tuple[Path | None, str]:
    """A weight file in torch's hub cache (downloaded when ``download``), or None and the reason."""
    cached = _cached(url)
    if cached.is_file():
        return cached, str(cached)
    if not download:
        return None, f"no {what} weights in {cached.parent} and {key}.download=false"
    try:
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    except Exception as err:  # no network, a proxy: say so and go on without it
        return None, f"no {what} weights in {cached.parent} and the download failed ({type(err).__name__})"
    return cached, str(cached)


def fid_metric(weights: str | None, download: bool, feature: nn.Module | None = None):
    """A factory of torchmetrics FIDs (one per row) and its source, or None and the reason. Never random weights.

    fid.weights: inception (torch-fidelity's Inception-v3 file from torch's hub cache, $TORCH_HOME), a PATH to that
    file, or null (off). ``feature``: a feature extractor of one's own instead (Python API; images in [0, 1]).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    if feature is not None:
        return (lambda: FrechetInceptionDistance(feature=feature, normalize=True)), f"{type(feature).__name__} features"
    if not weights:
        return None, "fid.weights is null"
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    except ImportError:
        return None, "torch-fidelity is not installed"
    if str(weights) == "inception":
        path, source = _fetch(URL_INCEPTION_V3, "Inception-v3 (FID)", "fid", download)
        if path is None:
            return None, source
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"fid.weights={weights}: no such file (or use fid.weights=inception)")
        source = str(path)
    make = lambda: FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(path))  # noqa: E731
    try:
        make()
    except Exception as err:
        raise ConfigError(
            f"fid.weights={weights}: not torch-fidelity's Inception-v3 weights ({type(err).__name__})"
        ) from err
    return make, source


def lpips_metric(weights: str | None, download: bool):
    """A factory of torchmetrics LPIPS (AlexNet, the LPIPS paper's default) and its source, or None and the reason.

    lpips.weights: alexnet (torchvision's ImageNet AlexNet from torch's hub cache, $TORCH_HOME; LPIPS's own linear
    layers ship with torchmetrics) or null (off).
    """
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    from torchvision.models import AlexNet_Weights

    if not weights:
        return None, "lpips.weights is null"
    if str(weights) != "alexnet":
        raise ConfigError(f"lpips.weights={weights!r} is not one of ('alexnet', null)")
    path, source = _fetch(AlexNet_Weights.IMAGENET1K_V1.url, "AlexNet (LPIPS)", "lpips", download)
    if path is None:
        return None, source
    make = lambda: LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)  # noqa: E731
    try:
        make()
    except Exception as err:
        return None, f"the cached AlexNet weights {path} could not be read ({type(err).__name__})"
    return make, source


# ---- the evaluation loop ---------------------------------------------------------------------
class Evaluation(L.LightningModule):
    """Runs the colorizer and the baselines on each test batch and feeds every row's metrics."""

    def __init__(
        self,
        colorizer: L.LightningModule,
        temperature: float | None,
        bins: torch.Tensor,
        prior: torch.Tensor,
        classifier: nn.Module | None = None,
        num_examples: int = 8,
        perceptual: dict | None = None,
    ):
        """``perceptual``: name (fid, lpips) -> a factory of its torchmetrics metric, one per row."""
        super().__init__()
        self.colorizer, self.temperature, self.classifier = colorizer, temperature, classifier
        self.perceptual = perceptual or {}
        if classifier is not None:
            from torchvision.models import VGG16_Weights

            self.classifier_input = VGG16_Weights.IMAGENET1K_V1.transforms()  # resize 256, centre 224, normalize
        self.num_examples = num_examples
        self.metrics = nn.ModuleDict({row: self._row_metrics(bins, prior, row) for row in ROWS})
        self.results: dict[str, dict[str, float]] = {}
        self.examples: dict[str, torch.Tensor] = {}
        self.count = 0
        self._previous_ab: torch.Tensor | None = None

    def _row_metrics(self, bins, prior, row: str) -> nn.ModuleDict:
        metrics = {
            "auc": AuC(),
            "auc_rebalanced": AuC(bins=bins, prior=prior),
            "colorfulness": Colorfulness(),
            "psnr": psnr(),
            "ssim": ssim(),
        }
        if self.classifier is not None:
            metrics |= {"vgg_top1": topk_accuracy(1), "vgg_top5": topk_accuracy(5)}
        for name, make in self.perceptual.items():
            if not (
                name == "fid" and row == "ground_truth"
            ):  # the photos against themselves: 0, not worth an Inception pass
                metrics[name] = make()
        return nn.ModuleDict(metrics)

    def _other_ab(self, ab: torch.Tensor) -> torch.Tensor | None:
        """Each image's "random" colors: the ab of the image before it (the first takes the batch's last)."""
        other = torch.roll(ab, 1, dims=0)
        if self._previous_ab is not None:
            other[0] = self._previous_ab
        elif len(ab) == 1:
            other = None  # a lone first image has no other image yet: it is left out of the random row
        self._previous_ab = ab[-1].clone()
        return other

    def test_step(self, batch: dict, batch_idx: int) -> None:
        rgb = batch["image"].float() / 255
        lab = rgb_to_lab(rgb)
        L_full, ab = lab[:, :1], lab[:, 1:]
        pred = self.colorizer.predict_ab(L_full, self.temperature).float()
        pred = F.interpolate(pred, size=ab.shape[-2:], mode="bilinear", align_corners=False)
        with_L = lambda ab_row: lab_to_rgb(torch.cat((L_full, ab_row), 1))  # noqa: E731
        rows = {"model": (pred, with_L(pred)), "gray": (torch.zeros_like(ab), with_L(torch.zeros_like(ab)))}
        other = self._other_ab(ab)
        if other is not None:
            rows["random"] = (other, with_L(other))
        rows["ground_truth"] = (ab, rgb)
        for row, (ab_row, rgb_row) in rows.items():
            metrics = self.metrics[row]
            metrics["auc"].update(ab_row, ab)
            metrics["auc_rebalanced"].update(ab_row, ab)
            metrics["colorfulness"].update(rgb_row)
            metrics["psnr"].update(rgb_row, rgb)
            metrics["ssim"].update(rgb_row, rgb)
            if self.classifier is not None:
                logits = self.classifier(self.classifier_input(rgb_row))
                metrics["vgg_top1"].update(logits, batch["label"])
                metrics["vgg_top5"].update(logits, batch["label"])
            if "fid" in metrics:
                metrics["fid"].update(rgb, real=True)
                metrics["fid"].update(rgb_row.clamp(0, 1), real=False)
            if "lpips" in metrics:
                metrics["lpips"].update(rgb_row.clamp(0, 1), rgb)
        self.count += len(rgb)
        if batch_idx == 0 and self.num_examples:
            self.examples = {row: rgb_row[: self.num_examples].cpu() for row, (_, rgb_row) in rows.items()}

    def on_test_epoch_end(self) -> None:
        self.results = {}
        # a row that some rank never fed (random, with a single image) is NaN: every rank decides alike, so the
        # metrics' collective sync in compute() runs on all ranks or on none
        fed = torch.tensor([float(self.metrics[row]["auc"].update_called) for row in ROWS], device=self.device)
        fed = self.trainer.strategy.reduce(fed, reduce_op="sum") >= self.trainer.world_size
        for row, row_fed in zip(ROWS, fed.tolist(), strict=True):
            metrics = self.metrics[row].items()
            values = {name: _compute(name, m) if row_fed else math.nan for name, m in metrics}
            if "fid" in self.perceptual and "fid" not in values:
                values["fid"] = math.nan
            for name in ("vgg_top1", "vgg_top5"):
                if name in values:
                    values[name] *= 100
            self.results[row] = values
        truth = self.results["ground_truth"]["colorfulness"]
        for values in self.results.values():
            values["colorfulness_gap"] = values["colorfulness"] - truth
        self.count = int(self.trainer.strategy.reduce(torch.tensor(self.count, device=self.device), "sum").item())


def _compute(name: str, metric) -> float:
    if name == "fid" and min(metric.real_features_num_samples, metric.fake_features_num_samples) < 2:
        return math.nan  # FID needs two images of each set (every rank sees the same summed counts)
    return metric.compute().item()


# ---- reports ---------------------------------------------------------------------------------
def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None  # JSON has no inf (PSNR of the truth)


def _cell(value: float) -> str:
    return "inf" if math.isinf(value) else "-" if math.isnan(value) else f"{value:.2f}"


def markdown_table(results: dict[str, dict[str, float]], title: str) -> str:
    columns = [c for c in COLUMNS if c in results["model"]]
    lines = [f"# {title}", "", "| row | " + " | ".join(COLUMNS[c] for c in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for row, values in results.items():
        cells = [_cell(values[c]) for c in columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, results: dict, examples: dict, title: str, loggers: list) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = {row: {k: _number(v) for k, v in values.items()} for row, values in results.items()}
    (out_dir / "metrics.json").write_text(json.dumps(clean, indent=2) + "\n")
    table = markdown_table(results, title)
    (out_dir / "metrics.md").write_text(table)
    grid = None
    if examples:
        columns = [examples[row] for row in ROWS if row in examples]  # one image per row of the grid
        grid = make_grid(torch.stack(columns, 1).flatten(0, 1), nrow=len(columns), padding=2, pad_value=1.0)
        save_image(grid, out_dir / "examples.png")
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            rows = [[row, *map(_number, values.values())] for row, values in results.items()]
            logger.log_table("eval/metrics", columns=["row", *results["model"]], data=rows)
            if examples:
                names = [row for row in ROWS if row in examples]
                picture = lambda t: wandb.Image(t.permute(1, 2, 0).numpy())  # noqa: E731
                pictures = [[picture(examples[row][i]) for row in names] for i in range(len(examples["model"]))]
                logger.log_table("eval/examples", columns=names, data=pictures)
        else:
            flat = {f"eval/{row}/{k}": v for row, values in results.items() for k, v in values.items()}
            logger.log_metrics({k: v for k, v in flat.items() if _number(v) is not None})
        logger.save()
    log.info("\n%s", table)


# ---- the command -----------------------------------------------------------------------------
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
    split = datamodule.file_split
    dataset, classes = evaluation_dataset(data, protocol_transform(cfg.protocol.name, size), indices, split)
    module = load_model(cfg.ckpt_path, cfg.model.weights, download=cfg.color.download)
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
            what = f"ckpt_path={cfg.ckpt_path}" if cfg.ckpt_path else f"model.weights={cfg.model.weights}"
            subset = f", indices {cfg.protocol.indices}" if indices is not None else ""
            protocol = f"{cfg.protocol.name} {size}{subset}"
            title = f"Evaluation of {what}: {evaluation.count} images ({protocol}), T = {cfg.temperature}"
            write_report(Path(cfg.paths.output_dir), evaluation.results, evaluation.examples, title, trainer.loggers)
    return evaluation.results


@command("evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
