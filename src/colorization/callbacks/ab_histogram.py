"""The predicted against the true ab distribution, each validation: desaturation made visible.

A colorization that plays safe predicts colors near the gray axis (a, b) = (0, 0); its histogram is a
tight blob where the truth spreads out. Two panels (prediction | truth), one cell per 10 x 10 ab
square centred on the bin grid, a on the horizontal axis (green -> red), b vertical (blue -> yellow),
density on a log scale, each cell drawn in its own color. Also logged: the mean chroma sqrt(a^2 + b^2)
of both (``val/chroma_pred``, ``val/chroma_true``).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from colorization.callbacks.media import save_and_log
from colorization.color import lab_to_rgb

AB_EDGES = torch.arange(-115.0, 116.0, 10.0)  # 23 cells of 10, centred on the bin grid's multiples of 10


def ab_histogram(ab: torch.Tensor, edges: torch.Tensor = AB_EDGES) -> torch.Tensor:
    """ab (B, 2, h, w) -> counts (n, n) over the cells [edges[i], edges[i+1]): rows a, columns b.

    Values outside the edges are not counted.
    """
    points = ab.detach().float().movedim(1, -1).reshape(-1, 2).cpu()
    edges = edges.float().cpu()
    return torch.histogramdd(points, bins=[edges, edges]).hist


def histogram_image(counts: torch.Tensor, edges: torch.Tensor = AB_EDGES, cell: int = 8, lightness=65.0):
    """counts (n, n) (rows a, columns b) -> RGB (3, n * cell, n * cell): +b up, +a right, log density.

    Each cell is its ab color at ``lightness``, blended over white by log(1 + count) / log(1 + max).
    """
    centres = (edges[:-1] + edges[1:]) / 2
    a, b = torch.meshgrid(centres, centres, indexing="ij")
    lab = torch.stack((torch.full_like(a, lightness), a, b))  # (3, n_a, n_b)
    color = lab_to_rgb(lab[None].float())[0].clamp(0, 1)
    density = torch.log1p(counts.float()) / torch.log1p(counts.float().max()).clamp(min=1e-12)
    image = 1 - density * (1 - color)  # white where empty, the cell's color where densest
    image = image.transpose(1, 2).flip(1)  # (3, b, a) with +b at the top
    image = F.interpolate(image[None], scale_factor=cell, mode="nearest")[0]
    zero = image.shape[-1] // 2  # the gray axis a = 0, b = 0: thin lines for orientation
    image[:, zero, :] = image[:, :, zero] = 0.5
    return image


class AbHistogram(L.Callback):
    """Each validation: ab histograms of the prediction (at the model's T) and the truth over the first
    ``max_batches`` batches (with DDP: rank 0's batches; the chroma means are averaged over the ranks)."""

    def __init__(self, max_batches: int = 4, temperature: float | None = None, cell: int = 8):
        self.max_batches, self.temperature, self.cell = max_batches, temperature, cell
        self._reset()

    def _reset(self):
        self._pred = self._true = None
        self._chroma = torch.zeros(3, dtype=torch.float64)  # predicted sum, true sum, count

    def on_validation_epoch_start(self, trainer, pl_module):
        self._reset()

    @torch.no_grad()
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx >= self.max_batches or trainer.sanity_checking:
            return
        pred = pl_module.predict_ab(batch["L"], self.temperature)
        true = batch["ab"]
        hist_pred, hist_true = ab_histogram(pred), ab_histogram(true)
        self._pred = hist_pred if self._pred is None else self._pred + hist_pred
        self._true = hist_true if self._true is None else self._true + hist_true
        self._chroma += torch.tensor(
            [pred.float().norm(dim=1).sum().item(), true.float().norm(dim=1).sum().item(), true[:, 0].numel()],
            dtype=torch.float64,
        )

    def on_validation_epoch_end(self, trainer, pl_module):
        if self._pred is None:
            return
        # every rank saw as many batches: the ranks' means are averaged
        pl_module.log("val/chroma_pred", float(self._chroma[0] / self._chroma[2]), sync_dist=True)
        pl_module.log("val/chroma_true", float(self._chroma[1] / self._chroma[2]), sync_dist=True)
        if trainer.is_global_zero:
            panels = [histogram_image(h, cell=self.cell) for h in (self._pred, self._true)]
            gap = torch.ones(3, panels[0].shape[1], self.cell)
            image = torch.cat((panels[0], gap, panels[1]), dim=2)
            save_and_log(trainer, image, "val/ab_histogram", "ab_histogram", "ab: prediction | truth (a right, b up)")
        self._reset()
