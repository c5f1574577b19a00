"""The LightningModule: uint8 RGB batches in, Lab targets made on the device, one of the three losses.

The module owns the bins and the prior (as buffers), so a checkpoint alone is enough to colorize.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch
from torch import nn

from colorization.checkpoints import checked_settings, instantiate_setting
from colorization.color import (
    SoftEncoder,
    annealed_mean,
    rebalance_weights,
)
from colorization.color.targets import AB_SCALE, make_targets
from colorization.errors import ConfigError, check_number
from colorization.models.alexnet import AlexNetColorization
from colorization.models.eccv16 import ECCV16, PORT_LAYOUT
from colorization.models.losses import ColorizationLoss
from colorization.models.nonfinite import nonfinite_gradients, skip_if_nonfinite

# By design: the DataModule decodes (on_before_batch_transfer, data.gpu_decode), this module makes the targets on the
# device (on_after_batch_transfer). Lightning warns on every run that it uses the module's hook, which is the point.
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule` but")
# Lightning 2.6's own pytree code on torch >= 2.10, once per run; nothing to do on our side.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

ARCHITECTURES: dict[str, type[nn.Module]] = {"eccv16": ECCV16, "alexnet": AlexNetColorization}


def check_temperature(temperature: float) -> float:
    """``model.temperature``, the annealed mean's default T: > 0 (T = 0, the mode, is a decoding choice, not a model's)."""
    if check_number(temperature, "model.temperature") <= 0:
        raise ConfigError(f"model.temperature={temperature} must be > 0")
    return temperature


def network_class(arch: str) -> type[nn.Module]:
    if arch not in ARCHITECTURES:
        raise ValueError(f"model.arch={arch!r} is not one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def build_network(arch: str, out_channels: int, **options) -> nn.Module:
    """The network of ``model.arch`` with ``options`` (batchnorm, input_scale, width)."""
    return network_class(arch)(out_channels=out_channels, **options)


class ColorizationModule(L.LightningModule):
    def __init__(
        self,
        arch: str = "eccv16",
        loss: dict | None = None,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        bias_lr_mult: float = 1.0,
        bias_decay_mult: float = 1.0,
        temperature: float = 0.38,
        gray_threshold: float = 5.0,
        channels_last: bool = False,
        bins: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
        num_bins: int | None = None,
        compile: bool = False,
        batchnorm: str = PORT_LAYOUT["batchnorm"],
        input_scale: float = PORT_LAYOUT["input_scale"],
        width: float = 1.0,
        init: str = "default",
    ):
        """``batchnorm``, ``input_scale``, ``width``: the network's options (``model.*``; their defaults here are the
        PyTorch port's layout, as in checkpoints written before they existed). ``init``: how ``colorization.train``
        initialized the weights ("default": PyTorch's, "kmeans": ``models.data_init``), kept as a record."""
        super().__init__()
        checked_settings(optimizer, "model.optimizer")  # a checkpoint's settings are a stranger's: data, not code
        checked_settings(scheduler, "model.scheduler")
        self.save_hyperparameters(ignore=["bins", "prior"])
        loss = {"name": "rebalanced", "k": 5, "sigma": 5.0, "lam": 0.5, **(loss or {})}
        if bins is None:  # restored from a checkpoint: the buffers below are overwritten by its state dict
            if num_bins is None:
                raise ValueError("ColorizationModule needs bins (training) or num_bins (loading)")
            bins, prior = torch.zeros(num_bins, 2), torch.ones(num_bins) / num_bins
        if prior is None:
            prior = torch.ones(len(bins)) / len(bins)
        check_temperature(temperature)
        self.hparams.num_bins = len(bins)
        self.hparams.loss = loss
        self.criterion = ColorizationLoss(loss["name"])
        out_channels = len(bins) if self.criterion.classification else 2
        self.net = build_network(arch, out_channels, batchnorm=batchnorm, input_scale=input_scale, width=width)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
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

    def configure_model(self) -> None:
        """torch.compile the network in place (parameter names, and so checkpoints, stay the same). Here rather than
        in __init__, so that a data-dependent initialization (model.init) runs on the plain network before."""
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.net.compile()
            self._compiled = True

    # ---- data on the device -------------------------------------------------------------------
    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0) -> dict:
        if not isinstance(batch, dict) and batch.dtype != torch.uint8:
            return batch  # the network's input as it is: example_input_array (L), for Lightning's model summary
        images = batch["image"] if isinstance(batch, dict) else batch
        encoding = (self.encoder, self.class_weights) if self.criterion.classification else ()
        out = {"image": images, **make_targets(images, self.net.target_stride, self.hparams.gray_threshold, *encoding)}
        for key in ("label", "skipped"):  # skipped: files the datasets replaced (callbacks.SkippedImages counts)
            if isinstance(batch, dict) and key in batch:
                out[key] = batch[key]
        return out

    # ---- forward and decoding -----------------------------------------------------------------
    def forward(self, L_full: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            L_full = L_full.contiguous(memory_format=torch.channels_last)
        return self.net(L_full)

    def predict_ab(self, L_full: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """L (B, 1, H, W) -> predicted ab at the targets' resolution: annealed mean, or the regression output."""
        return self.decode_ab(self(L_full), temperature)

    def decode_ab(self, output: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """The network's output -> ab (B, 2, h, w): the annealed mean at T (the model's by default), or
        the regression output in ab units."""
        if not self.criterion.classification:
            return AB_SCALE * output.float()
        return annealed_mean(output, self.bins, self.hparams.temperature if temperature is None else temperature)

    # ---- steps --------------------------------------------------------------------------------
    def _step(self, batch: dict, stage: str) -> dict[str, torch.Tensor]:
        output = self(batch["L"])
        losses = self.criterion(output, batch)
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
        return {"loss": losses["loss"], "output": output.detach()}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")["loss"]

    def on_before_optimizer_step(self, optimizer) -> None:
        """A non-finite loss skips its optimizer step on the device (models.nonfinite; no host sync with a fused
        optimizer); ``nonfinite_step`` keeps the flag for callbacks.FaultTolerance, which puts back the BatchNorm
        statistics, counts, and stops a run of them. Under fp16 GradScaler does this itself."""
        self.nonfinite_step = None
        if self._trainer is not None and getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return
        found = nonfinite_gradients(self.net.parameters())
        if found is not None:
            skip_if_nonfinite(optimizer, found)
            self.nonfinite_step = found

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """The loss and the network's output: the validation figures (callbacks) decode it, no second forward."""
        return self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "test")

    def configure_optimizers(self):
        """``model.optimizer`` and ``model.scheduler`` (Hydra ``_target_`` + ``_partial_``), with Caffe's per-blob
        multipliers as parameter groups: biases get ``bias_lr_mult`` x lr and ``bias_decay_mult`` x weight decay."""
        # note: reading self.trainer.estimated_stepping_batches here would drop the loader's resumed position
        # (Lightning issue 20550): schedules are in steps of the config, not of the data
        optimizer_cfg = dict(self.hparams.optimizer or DEFAULT_OPTIMIZER)
        lr, decay = optimizer_cfg.get("lr", 1e-3), optimizer_cfg.get("weight_decay", 0.0)
        groups = caffe_param_groups(self.net, lr, decay, self.hparams.bias_lr_mult, self.hparams.bias_decay_mult)
        optimizer = instantiate_setting(optimizer_cfg, "model.optimizer")(groups)
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate_setting(dict(self.hparams.scheduler), "model.scheduler")(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# The paper's Adam (used when a module is built without an optimizer config)
DEFAULT_OPTIMIZER = {
    "_target_": "torch.optim.Adam",
    "_partial_": True,
    "lr": 3.16e-5,
    "betas": [0.9, 0.99],
    "fused": True,
}


def caffe_param_groups(net: nn.Module, lr: float, decay: float, bias_lr_mult=1.0, bias_decay_mult=1.0) -> list[dict]:
    """Caffe's ``param { lr_mult decay_mult }`` as torch parameter groups: weights x1, biases x the multipliers.

    Weight decay is coupled (added to the gradient), in Caffe and in torch's Adam and SGD alike."""
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    weights = [p for n, p in named if not n.endswith(".bias")]
    biases = [p for n, p in named if n.endswith(".bias")]
    groups = [
        {"params": weights, "lr": lr, "weight_decay": decay},
        {"params": biases, "lr": lr * bias_lr_mult, "weight_decay": decay * bias_decay_mult},
    ]
    return [g for g in groups if g["params"]]
