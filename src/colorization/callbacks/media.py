"""Save a figure (an RGB tensor) in the run directory and send it to the image-capable loggers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torchvision.utils import save_image


def save_and_log(trainer: L.Trainer, image: torch.Tensor, key: str, stem: str, caption: str, dirname="images") -> Path:
    """image (3, H, W) in [0, 1] -> <run dir>/<dirname>/<stem>_step<N>.png, and W&B / TensorBoard under ``key``."""
    out_dir = Path(trainer.default_root_dir) / dirname
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}_step{trainer.global_step:07d}.png"
    image = image.cpu()  # the figure's one host copy (it was made on the device)
    save_image(image, path)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key, [image], step=trainer.global_step, caption=[caption])
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, trainer.global_step)
    return path
