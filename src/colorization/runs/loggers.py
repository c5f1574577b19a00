"""Lightning's W&B logger without the "anonymous setting has no effect" warning that wandb >= 0.19 prints on every
run (Lightning passes ``anonymous=None`` to ``wandb.init`` whether or not it was asked for), and quiet: no run
history and summary on the console at the end (``hydra.verbose=true`` shows them)."""

from __future__ import annotations

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    def __init__(self, *args, anonymous: bool | None = None, **kwargs):
        if "settings" not in kwargs:
            import wandb

            from colorization.runs.entry import verbose

            kwargs["settings"] = wandb.Settings(quiet=not verbose())
        super().__init__(*args, anonymous=anonymous, **kwargs)
        if anonymous is None:
            self._wandb_init.pop("anonymous", None)
