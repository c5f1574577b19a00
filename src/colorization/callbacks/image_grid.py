"""Each validation epoch: a grid of gray input | prediction at T | truth, as a PNG and to the logger."""

from __future__ import annotations

import lightning as L
import torch
from torchvision.utils import make_grid

from colorization.callbacks.media import save_and_log
from colorization.color import lightness_and_ab_to_rgb


class ColorizationGrid(L.Callback):
    def __init__(self, num_images: int = 8, dirname: str = "images", temperature: float | None = None):
        self.num_images, self.dirname, self.temperature = num_images, dirname, temperature
        self._grid: torch.Tensor | None = None

    # outputs: validation_step's {"loss", "output"}: the network's output is decoded, not recomputed
    @torch.no_grad()
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx != 0 or trainer.sanity_checking:
            return
        n = min(self.num_images, len(batch["L"]))
        L_full = batch["L"][:n]
        pred = lightness_and_ab_to_rgb(L_full, pl_module.decode_ab(outputs["output"][:n], self.temperature))
        gray = lightness_and_ab_to_rgb(L_full, torch.zeros_like(pred[:, :2]))
        truth = batch["image"][:n].float() / 255
        columns = torch.stack((gray, pred, truth), dim=1).flatten(0, 1)  # row i: gray_i, pred_i, truth_i
        self._grid = make_grid(columns, nrow=3, padding=2, pad_value=1.0)  # on the device until it is saved

    def on_validation_epoch_end(self, trainer, pl_module):
        if self._grid is None or not trainer.is_global_zero:
            return
        save_and_log(trainer, self._grid, "val/colorizations", "val", "gray | prediction | truth", self.dirname)
        self._grid = None
