"""Linear probes: frozen backbones, one linear classifier per (backbone, layer), all trained jointly.

Protocol (PAPER.md, the authors' ``feature_learning_tests/linear``): each layer's post-ReLU activation is resized
to about 9k values (bilinear; or average pooling, as Goyal et al. 2019), passed through a BatchNorm without
parameters (Caffe's), then a linear layer trained with softmax cross-entropy. One pass over the data trains every
head of every backbone: the backbones run once per batch, the heads' losses are summed (their gradients do not
interact, as the authors' eight loss layers of weight 1).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from colorization.checkpoints import checked_settings, instantiate_setting
from colorization.color import rgb_to_lightness
from colorization.models.batchnorm import CaffeBatchNorm2d
from colorization.models.module import caffe_param_groups

REDUCE_MODES = ("bilinear", "avgpool")
IGNORE_LABEL = -1  # a validation image whose class the training set does not have


def reduce_features(x: torch.Tensor, size: tuple[int, int] | None, mode: str = "bilinear") -> torch.Tensor:
    """(B, C, h, w) -> (B, C, *size): bilinear resize (half-pixel centres) or adaptive average pooling; as it is
    when ``size`` is None."""
    if size is None:
        return x
    if mode == "bilinear":
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    if mode == "avgpool":
        return F.adaptive_avg_pool2d(x, tuple(size))
    raise ValueError(f"probe.reduce={mode!r} is not one of {REDUCE_MODES}")


class Frozen(nn.Module):
    """A backbone that stays in eval mode (BatchNorm statistics fixed) and gets no gradients. ``classic``: its
    features in AlexNet's classic geometry (the authors' probes), or in the geometry it was trained in."""

    def __init__(self, net: nn.Module, classic: bool = True):
        super().__init__()
        self.net, self.classic = net.requires_grad_(False).eval(), classic

    def train(self, mode: bool = True) -> Frozen:
        return super().train(False)  # Lightning calls model.train() each epoch: ignore it

    @torch.no_grad()
    def forward(self, L_full: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net.features(L_full, classic=self.classic)


class LinearHead(nn.Module):
    """Resize to (C, h, w) (or keep the layer's own size), parameter-free BatchNorm, flatten, linear.

    ``in_size``: the layer's own (h, w), which fixes the linear layer's width when ``size`` is None."""

    def __init__(self, channels: int, size, num_classes: int, mode: str, in_size=None):
        super().__init__()
        self.size, self.mode = (tuple(size) if size is not None else None), mode
        h, w = self.out_size = self.size or tuple(in_size)
        self.norm = CaffeBatchNorm2d(channels)
        self.linear = nn.Linear(channels * h * w, num_classes)
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(reduce_features(x.float(), self.size, self.mode)).flatten(1))


class LinearProbes(L.LightningModule):
    """``backbones``: name -> network with ``features(L)`` and ``feature_channels``; ``layers``: name -> (h, w)."""

    def __init__(
        self,
        backbones: dict[str, nn.Module],
        num_classes: int,
        layers: dict[str, tuple[int, int] | None],
        reduce: str = "bilinear",
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        bias_lr_mult: float = 1.0,
        bias_decay_mult: float = 1.0,
        classic: bool = True,
        input_size: int = 227,
    ):
        """``layers``: layer -> [h, w] its activation is resized to, or None (as it is at ``input_size`` crops).
        ``optimizer``, ``scheduler``: Hydra configs (``_target_``, ``_partial_``; the scheduler's ``interval``:
        step or epoch); biases get ``bias_lr_mult`` x lr and ``bias_decay_mult`` x weight decay (Caffe's
        lr_mult / decay_mult). ``classic``: probe in AlexNet's classic geometry (the authors')."""
        super().__init__()
        checked_settings(optimizer, "probe.optimizer")  # a probe checkpoint's settings are data, not code
        checked_settings(scheduler, "probe.scheduler")
        self.save_hyperparameters(ignore=["backbones"])
        self.strict_loading = False  # probe checkpoints hold the heads only (see on_save_checkpoint)
        if reduce not in REDUCE_MODES:
            raise ValueError(f"probe.reduce={reduce!r} is not one of {REDUCE_MODES}")
        if num_classes < 2:
            raise ValueError(f"probe.num_classes={num_classes} must be >= 2")
        self.backbones = nn.ModuleDict({name: Frozen(net, classic) for name, net in backbones.items()})
        self.heads = nn.ModuleDict()
        for name, net in backbones.items():
            native = {}
            if any(size is None for size in layers.values()):
                with torch.no_grad():  # the layers' own sizes at the probe's crops
                    probe_input = torch.zeros(1, 1, input_size, input_size)
                    native = {k: v.shape[-2:] for k, v in Frozen(net, classic)(probe_input).items()}
            for layer, size in layers.items():
                if layer not in net.feature_channels:
                    raise ValueError(f"probe.layers: {layer!r} is not one of {list(net.feature_channels)}")
                channels = net.feature_channels[layer]
                head = LinearHead(channels, size, num_classes, reduce, native.get(layer))
                self.heads[self.key(name, layer)] = head
        top5 = min(5, num_classes)  # with fewer than 5 classes "top5" is trivially 1
        metrics = MetricCollection(
            {
                "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro", ignore_index=IGNORE_LABEL),
                "top5": MulticlassAccuracy(num_classes, top_k=top5, average="micro", ignore_index=IGNORE_LABEL),
            }
        )
        self.train_metrics = nn.ModuleDict({k: metrics.clone() for k in self.heads})
        self.val_metrics = nn.ModuleDict({k: metrics.clone() for k in self.heads})

    @staticmethod
    def key(backbone: str, layer: str) -> str:
        return f"{backbone}_{layer}"

    def names(self):
        """(backbone, layer, head key) for every head."""
        return [(b, layer, self.key(b, layer)) for b in self.backbones for layer in self.hparams.layers]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the heads only: the backbones come back from ckpt_path and the seed when a probe resumes."""
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if not k.startswith("backbones.")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Loading is not strict (no backbones in the file), so check that every head is there."""
        missing = [f"heads.{k}" for k in self.heads.state_dict() if f"heads.{k}" not in checkpoint["state_dict"]]
        if missing:
            raise ValueError(
                f"resume: the probe checkpoint lacks {missing[0]} (and {len(missing) - 1} more): "
                "resume with the same probe.layers and probe.baselines"
            )

    def on_before_batch_transfer(self, batch, dataloader_idx: int = 0) -> dict:
        """Check the labels on the host (no device sync; a bad label would otherwise fail on the device)."""
        if "label" not in batch:
            raise ValueError("probing needs labels: data.labels=true (folder) or data.label_column=NAME (hf)")
        label = torch.as_tensor(batch["label"])
        if label.numel() and not (IGNORE_LABEL <= int(label.min()) and int(label.max()) < self.hparams.num_classes):
            raise ValueError(
                f"labels {int(label.min())}..{int(label.max())} are out of range for "
                f"probe.num_classes={self.hparams.num_classes}"
            )
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0) -> dict:
        return {"L": rgb_to_lightness(batch["image"].float() / 255), "label": batch["label"].long()}

    def forward(self, L_full: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head, keyed by ``key(backbone, layer)``."""
        logits = {}
        for name, backbone in self.backbones.items():
            feats = backbone(L_full)
            for layer in self.hparams.layers:
                logits[self.key(name, layer)] = self.heads[self.key(name, layer)](feats[layer])
        return logits

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        label = batch["label"]
        metrics = self.train_metrics if stage == "train" else self.val_metrics
        logits = self(batch["L"])
        total, n, on_step = 0.0, len(label), stage == "train"
        for backbone, layer, key in self.names():
            loss = F.cross_entropy(logits[key], label, ignore_index=IGNORE_LABEL)
            total = total + loss
            metrics[key].update(logits[key], label)
            self.log(
                f"{stage}/{backbone}/{layer}/loss",
                loss,
                on_step=on_step,
                on_epoch=not on_step,
                batch_size=n,
                sync_dist=not on_step,
            )
            for metric_name, metric in metrics[key].items():
                self.log(f"{stage}/{backbone}/{layer}/{metric_name}", metric, on_step=False, on_epoch=True)
        self.log(
            f"{stage}/loss",
            total,
            on_step=on_step,
            on_epoch=not on_step,
            prog_bar=True,
            batch_size=n,
            sync_dist=not on_step,
        )
        return total

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self):
        hp = self.hparams
        optimizer_cfg = dict(hp.optimizer or DEFAULT_PROBE_OPTIMIZER)
        lr, decay = optimizer_cfg.get("lr", 0.01), optimizer_cfg.get("weight_decay", 0.0)
        groups = caffe_param_groups(self.heads, lr, decay, hp.bias_lr_mult, hp.bias_decay_mult)
        optimizer = instantiate_setting(optimizer_cfg, "probe.optimizer")(groups)
        if not hp.scheduler:
            return optimizer
        scheduler_cfg = dict(hp.scheduler)
        interval = scheduler_cfg.pop("interval", "step")
        scheduler = instantiate_setting(scheduler_cfg, "probe.scheduler")(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


# The authors' probe solver (plain momentum SGD), used when none is configured
DEFAULT_PROBE_OPTIMIZER = {
    "_target_": "torch.optim.SGD",
    "_partial_": True,
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 5e-4,
}
