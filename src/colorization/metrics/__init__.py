"""Colorization metrics as torchmetrics Metrics (their states reduce across DDP ranks)."""

from __future__ import annotations

from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from colorization.metrics.auc import AuC
from colorization.metrics.colorfulness import Colorfulness, colorfulness


def psnr() -> PeakSignalNoiseRatio:
    """PSNR in dB of RGB in [0, 1], computed per image and averaged over images."""
    return PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))


def ssim() -> StructuralSimilarityIndexMeasure:
    """SSIM of RGB in [0, 1]: Gaussian window 11, sigma 1.5 (Wang et al. 2004), averaged over images."""
    return StructuralSimilarityIndexMeasure(data_range=1.0, gaussian_kernel=True, sigma=1.5, kernel_size=11)


def topk_accuracy(k: int, num_classes: int = 1000) -> MulticlassAccuracy:
    """Fraction of images whose label is among the k highest logits; label -1 means unknown and is ignored."""
    return MulticlassAccuracy(num_classes=num_classes, top_k=k, average="micro", ignore_index=-1)


__all__ = ["AuC", "Colorfulness", "colorfulness", "psnr", "ssim", "topk_accuracy"]
