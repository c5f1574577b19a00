"""The predicted against the true ab distribution, each validation: desaturation made visible.

A colorization that plays safe predicts colors near the gray axis (a, b) = (0, 0); its histogram is a
tight blob where the truth spreads out. Two panels (prediction | truth), one cell per 10 x 10 ab
square centred on the bin grid, a on the horizontal axis (green -> red), b vertical (blue -> yellow),
density on a log scale, each cell drawn in its own color. Also logged: the mean chroma sqrt(a^2 + b^2)
of both (``val/chroma_pred``, ``val/chroma_true``).
"""

from __future__ import annotations

import functools

import lightning as L
import torch
import torch.nn.functional as F

from colorization.callbacks.media import save_and_log
from colorization.color import lab_to_rgb

AB_EDGES = torch.arange(-115.0, 116.0, 10.0)  # 23 cells of 10, centred on the bin grid's multiples of 10


@functools.lru_cache(maxsize=8)
@torch.inference_mode(False)
def _edges_on(device: torch.device, edges: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(edges, device=device)


def ab_histogram(ab: torch.Tensor, edges: torch.Tensor = AB_EDGES) -> torch.Tensor:
    """ab (B, 2, h, w) -> counts (n, n) over the cells [edges[i], edges[i+1]) (the last one closed, as numpy's
    histogram2d): rows a, columns b. Values outside the edges are not counted. On ab's device, with no host sync
    (a scatter into a fixed-size histogram: bincount and histogramdd read the data's range on the host)."""
    e = _edges_on(ab.device, tuple(edges.tolist()))
    n = len(e) - 1
    a, b = ab.detach().float().unbind(1)

    def cell(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous().view(-1)  # one channel of (B, 2, h, w): bucketize wants contiguous values
        i = torch.bucketize(x, e, right=True) - 1
        i = torch.where(x == e[-1], n - 1, i)  # the last cell includes its right edge
        return i, (i >= 0) & (i < n)

    ia, inside_a = cell(a)
    ib, inside_b = cell(b)
    flat = torch.where(inside_a & inside_b, ia * n + ib, n * n)  # outside: an overflow cell, dropped
    counts = torch.zeros(n * n + 1, device=ab.device).index_add_(0, flat, torch.ones_like(flat, dtype=torch.float32))
    return counts[: n * n].view(n, n)


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
        self._pred = self._true = None  # histograms, on the device
        self._chroma = None  # predicted sum, true sum, count, on the device

    def on_validation_epoch_start(self, trainer, pl_module):
        self._reset()

    @torch.no_grad()
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx >= self.max_batches or trainer.sanity_checking:
            return
        pred = pl_module.decode_ab(outputs["output"], self.temperature)  # validation_step's output: no forward
        true = batch["ab"]
        hist_pred, hist_true = ab_histogram(pred), ab_histogram(true)
        self._pred = hist_pred if self._pred is None else self._pred + hist_pred
        self._true = hist_true if self._true is None else self._true + hist_true
        count = torch.full((), true[:, 0].numel(), dtype=torch.float64, device=true.device)
        chroma = torch.stack((pred.norm(dim=1).sum().double(), true.float().norm(dim=1).sum().double(), count))
        self._chroma = chroma if self._chroma is None else self._chroma + chroma

    def on_validation_epoch_end(self, trainer, pl_module):
        if self._pred is None:
            return
        # every rank saw as many batches: the ranks' means are averaged
        pl_module.log("val/chroma_pred", (self._chroma[0] / self._chroma[2]).float(), sync_dist=True)
        pl_module.log("val/chroma_true", (self._chroma[1] / self._chroma[2]).float(), sync_dist=True)
        if trainer.is_global_zero:
            panels = [histogram_image(h.cpu(), cell=self.cell) for h in (self._pred, self._true)]
            gap = torch.ones(3, panels[0].shape[1], self.cell)
            image = torch.cat((panels[0], gap, panels[1]), dim=2)
            save_and_log(trainer, image, "val/ab_histogram", "ab_histogram", "ab: prediction | truth (a right, b up)")
        self._reset()
