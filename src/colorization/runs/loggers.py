"""Lightning's W&B logger without the "anonymous setting has no effect" warning that wandb >= 0.19 prints on every
run: Lightning passes ``anonymous=None`` to ``wandb.init`` whether or not it was asked for."""

from __future__ import annotations

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    def __init__(self, *args, anonymous: bool | None = None, **kwargs):
        super().__init__(*args, anonymous=anonymous, **kwargs)
        if anonymous is None:
            self._wandb_init.pop("anonymous", None)
