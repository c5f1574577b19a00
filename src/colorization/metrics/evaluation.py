"""The evaluation's loop and report: the colorizer and the paper's baselines on each test batch, every row's metrics,
then metrics.json, metrics.md and examples.png (one column per row) and the loggers."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from torchvision.utils import make_grid

from colorization.color import lab_to_rgb, rgb_to_lab
from colorization.metrics import AuC, Colorfulness, psnr, ssim, topk_accuracy

log = logging.getLogger(__name__)

ROWS = ("model", "gray", "random", "ground_truth")
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


def labeled_columns(grid: torch.Tensor, names: list[str]) -> Image.Image:
    """The example grid (3, H, W) in [0, 1] with a white band on top naming each column."""
    image = Image.fromarray((grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    band = 20
    out = Image.new("RGB", (image.width, image.height + band), "white")
    out.paste(image, (0, band))
    draw, width = ImageDraw.Draw(out), image.width / len(names)
    for i, name in enumerate(names):
        draw.text((i * width + width / 2, band / 2), name.replace("_", " "), fill="black", anchor="mm")
    return out


def write_report(out_dir: Path, results: dict, examples: dict, title: str, loggers: list, context: dict) -> None:
    """metrics.json (the table), evaluation.json (``context``: which model, data, image count, protocol, T and
    command made it), metrics.md, examples.png, and the loggers."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = {row: {k: _number(v) for k, v in values.items()} for row, values in results.items()}
    (out_dir / "metrics.json").write_text(json.dumps(clean, indent=2) + "\n")
    (out_dir / "evaluation.json").write_text(json.dumps(context, indent=2) + "\n")
    table = markdown_table(results, title)
    (out_dir / "metrics.md").write_text(table)
    grid = None
    if examples:
        columns = [examples[row] for row in ROWS if row in examples]  # one image per row of the grid
        grid = make_grid(torch.stack(columns, 1).flatten(0, 1), nrow=len(columns), padding=2, pad_value=1.0)
        labeled_columns(grid, [row for row in ROWS if row in examples]).save(out_dir / "examples.png")
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
    log.info("written: %s (metrics.json, metrics.md, evaluation.json%s)", out_dir, ", examples.png" if examples else "")
