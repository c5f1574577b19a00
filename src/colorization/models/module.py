"""The LightningModule: uint8 RGB batches in, Lab targets made on the device, one of the three losses.

The module owns the bins and the prior (as buffers), so a checkpoint alone is enough to colorize.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from colorization.color import (
    SoftEncoder,
    annealed_mean,
    gray_mask,
    rebalance_weights,
    rgb_to_lab,
    rgb_to_lightness,
    uint8_to_lab,
    uint8_to_lightness,
)
from colorization.models.alexnet import AlexNetColorization
from colorization.models.eccv16 import AB_SCALE, ECCV16
from colorization.models.losses import ColorizationLoss

TARGET_STRIDE = 4  # targets and outputs live at 1/4 of the input resolution

ARCHITECTURES: dict[str, type[nn.Module]] = {"eccv16": ECCV16, "alexnet": AlexNetColorization}


def build_network(arch: str, out_channels: int) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ValueError(f"model.arch={arch!r} is not one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](out_channels=out_channels)


def lab_inputs(images: torch.Tensor, stride: int = TARGET_STRIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB (B, 3, H, W) -> L (B, 1, H, W) and ab at 1/stride resolution (stride pick, as the authors).

    Only the picked pixels are converted to float for ab; L comes from a lookup table for uint8 input."""
    picked = images[..., ::stride, ::stride]
    if images.dtype != torch.uint8:
        return rgb_to_lightness(images.float() / 255), rgb_to_lab(picked.float() / 255)[:, 1:]
    return uint8_to_lightness(images), uint8_to_lab(picked)[:, 1:]


class ColorizationModule(L.LightningModule):
    def __init__(
        self,
        arch: str = "eccv16",
        loss: dict | None = None,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        temperature: float = 0.38,
        gray_threshold: float = 5.0,
        channels_last: bool = False,
        bins: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
        num_bins: int | None = None,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["bins", "prior"])
        loss = {"name": "rebalanced", "k": 5, "sigma": 5.0, "lam": 0.5, **(loss or {})}
        if bins is None:  # restored from a checkpoint: the buffers below are overwritten by its state dict
            if num_bins is None:
                raise ValueError("ColorizationModule needs bins (training) or num_bins (loading)")
            bins, prior = torch.zeros(num_bins, 2), torch.ones(num_bins) / num_bins
        if prior is None:
            prior = torch.ones(len(bins)) / len(bins)
        if temperature <= 0:
            raise ValueError(f"model.temperature={temperature} must be > 0")
        self.hparams.num_bins = len(bins)
        self.hparams.loss = loss
        self.criterion = ColorizationLoss(loss["name"])
        self.net = build_network(arch, len(bins) if self.criterion.classification else 2)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if compile:  # in place, so parameter names (and checkpoints) stay the same
            self.net.compile()
        self.encoder = SoftEncoder(bins, k=loss["k"], sigma=loss["sigma"])
        self.register_buffer("prior", prior.float())
        self.register_buffer("class_weights", rebalance_weights(prior, loss["lam"]))

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, weights_only: bool = True, **kwargs):
        """Checkpoints may come from strangers: load tensors and plain containers only (weights_only=True),
        never pickled code. (Lightning's own default defers to torch, which an environment variable can flip.)"""
        return super().load_from_checkpoint(checkpoint_path, *args, weights_only=weights_only, **kwargs)

    @property
    def bins(self) -> torch.Tensor:
        return self.encoder.bins

    # ---- data on the device -------------------------------------------------------------------
    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0) -> dict:
        images = batch["image"] if isinstance(batch, dict) else batch
        L_full, ab = lab_inputs(images)
        out = {"image": images, "L": L_full, "ab": ab, "mask": gray_mask(ab, self.hparams.gray_threshold)}
        for key in ("label", "skipped"):  # skipped: files the datasets replaced (callbacks.SkippedImages counts)
            if isinstance(batch, dict) and key in batch:
                out[key] = batch[key]
        if self.criterion.classification:
            out["idx"], out["wts"] = self.encoder(ab)
            out["pixel_weight"] = self.class_weights.take(out["idx"][:, 0])  # take: fast gather on a CPU too
        return out

    # ---- forward and decoding -----------------------------------------------------------------
    def forward(self, L_full: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            L_full = L_full.contiguous(memory_format=torch.channels_last)
        return self.net(L_full)

    def predict_ab(self, L_full: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """L (B, 1, H, W) -> predicted ab (B, 2, H/4, W/4): annealed mean, or the regression output."""
        output = self(L_full)
        if not self.criterion.classification:
            return AB_SCALE * output.float()
        return annealed_mean(output, self.bins, self.hparams.temperature if temperature is None else temperature)

    # ---- steps --------------------------------------------------------------------------------
    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        losses = self.criterion(self(batch["L"]), batch)
        on_step = stage == "train"
        for name, value in losses.items():
            self.log(
                f"{stage}/{name}",
                value,
                on_step=on_step,
                on_epoch=not on_step,
                prog_bar=name == "loss",
                batch_size=len(batch["L"]),
                sync_dist=not on_step,
            )
        return losses["loss"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        loss = self._step(batch, "train")
        # a non-finite loss skips the step (None: no backward, no update) on every rank at once;
        # callbacks.FaultTolerance warns, counts, and stops a run of them
        finite = bool(torch.isfinite(loss))
        if self._trainer is not None:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        return loss if finite else None

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    def configure_optimizers(self):
        cfg = {"name": "adam", "lr": 3e-5, "betas": (0.9, 0.99), "weight_decay": 1e-3, **(self.hparams.optimizer or {})}
        name = cfg.pop("name")
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
        if name not in optimizers:
            raise ValueError(f"model.optimizer.name={name!r} is not one of {sorted(optimizers)}")
        if name == "sgd":
            cfg.pop("betas", None)
        optimizer = optimizers[name](self.parameters(), **cfg)
        if not self.hparams.scheduler:
            return optimizer
        # the authors' schedule: lr x gamma every step_size iterations
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, **self.hparams.scheduler)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
