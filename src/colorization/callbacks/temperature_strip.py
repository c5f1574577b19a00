"""The temperature strip: one validation image decoded at several T, from the mean (T = 1, desaturated)
through the paper's 0.38 to the mode (T -> 0, vivid and patchy), then the truth."""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw

from colorization.callbacks.media import save_and_log
from colorization.color import annealed_mean, lightness_and_ab_to_rgb
from colorization.color.decode import STRIP_TEMPERATURES

log = logging.getLogger(__name__)

TEMPERATURES = STRIP_TEMPERATURES


def decode_at_temperatures(logits: torch.Tensor, bins: torch.Tensor, temperatures=TEMPERATURES) -> torch.Tensor:
    """logits (B, Q, h, w) -> ab (len(temperatures), B, 2, h, w): annealed mean at each T; T = 0 is the mode."""
    return torch.stack([annealed_mean(logits, bins, T) for T in temperatures])


def temperature_strip(
    L_full: torch.Tensor, logits: torch.Tensor, bins: torch.Tensor, truth: torch.Tensor, temperatures=TEMPERATURES
):
    """One image: L (1, 1, H, W), logits (1, Q, h, w), truth RGB (1, 3, H, W) in [0, 1] -> RGB (3, H, W * (n + 1))."""
    ab = decode_at_temperatures(logits, bins, temperatures)[:, 0]  # (n, 2, h, w)
    rgb = lightness_and_ab_to_rgb(L_full.expand(len(temperatures), -1, -1, -1), ab)
    return torch.cat((*rgb, truth[0].float()), dim=2).clamp(0, 1)


def with_labels(image: torch.Tensor, labels: list[str], height: int = 12) -> torch.Tensor:
    """(3, H, W) frames side by side, in [0, 1] -> (3, H + height, W) with each label centred under its frame."""
    frame = image.shape[2] // len(labels)
    band = Image.new("RGB", (image.shape[2], height), "white")
    draw = ImageDraw.Draw(band)
    for i, text in enumerate(labels):
        draw.text((i * frame + max(0.0, (frame - draw.textlength(text)) / 2), 0), text, fill="black")
    band = torch.from_numpy(np.asarray(band).copy()).permute(2, 0, 1).to(image.device, image.dtype) / 255
    return torch.cat((image, band), dim=1)


class TemperatureStrip(L.Callback):
    """Each validation: the first validation image at T = ``temperatures`` (classification losses only)."""

    def __init__(self, temperatures=TEMPERATURES, index: int = 0):
        self.temperatures, self.index = tuple(temperatures), index
        self._strip: torch.Tensor | None = None

    @torch.no_grad()
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx != 0 or trainer.sanity_checking or self.index >= len(batch["L"]):
            return
        if not pl_module.criterion.classification:
            return  # L2 regression has one answer, no distribution to anneal
        L_full = batch["L"][self.index : self.index + 1]
        truth = batch["image"][self.index : self.index + 1].float() / 255
        logits = outputs["output"][self.index : self.index + 1]  # validation_step's: no second forward pass
        self._strip = temperature_strip(L_full, logits, pl_module.bins, truth, self.temperatures)

    def on_validation_epoch_end(self, trainer, pl_module):
        if self._strip is None or not trainer.is_global_zero:
            return
        labels = [f"T={T:g}" if T > 0 else "mode" for T in self.temperatures] + ["truth"]
        strip = with_labels(self._strip.cpu(), labels)  # the figure's one host copy
        save_and_log(trainer, strip, "val/temperature_strip", "temperature_strip", " | ".join(labels))
        self._strip = None
