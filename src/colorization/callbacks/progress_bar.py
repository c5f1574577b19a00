"""Lightning's rich progress bar, reading "Epoch 3" in a run bounded by steps, where Lightning's reads "Epoch 3/-2"."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class StepsProgressBar(RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        description = super()._get_train_description(current_epoch)
        if self.trainer.max_epochs is not None and self.trainer.max_epochs < 0:  # max_steps bounds the run
            description = description.replace(f"/{self.trainer.max_epochs - 1}", "", 1)
        return description
