"""Lightning's W&B logger, quiet: wandb's own console lines (start, end-of-run history and summary) are off, and one
line says where the run is (its URL, or the offline folder and how to upload it); ``hydra.verbose=true`` gives
wandb's lines back. Also without the "anonymous setting has no effect" warning that wandb >= 0.19 prints on every
run (Lightning passes ``anonymous=None`` to ``wandb.init`` whether or not it was asked for)."""

from __future__ import annotations

import logging

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

log = logging.getLogger(__name__)


class WandbLogger(LightningWandbLogger):
    def __init__(self, *args, anonymous: bool | None = None, **kwargs):
        from colorization.runs.entry import verbose

        self._quiet = not verbose()
        if "settings" not in kwargs:
            import wandb

            kwargs["settings"] = wandb.Settings(silent=self._quiet)
        super().__init__(*args, anonymous=anonymous, **kwargs)
        if anonymous is None:
            self._wandb_init.pop("anonymous", None)

    @property
    def experiment(self):
        started = self._experiment is None
        run = super().experiment
        if started and self._quiet and getattr(run, "settings", None) is not None:  # rank 0's real run only
            if run.settings._offline:
                log.info("W&B: offline run in %s (`wandb sync` that folder to upload it)", run.settings.sync_dir)
            else:
                log.info("W&B: %s", run.url)
        return run
