"""Counts and logs the image files the datasets skipped (corrupt, not images, too large).

The datasets run in loader workers, so they cannot count for the run: each item names the files
skipped while producing it (``colorization.data.datasets.SKIPPED``), the default collate gathers those
names into the batch, and this callback counts them in the main process of every rank. Per epoch it
logs ``data/skipped_train`` and ``data/skipped_val`` (summed over ranks); at the end, one summary line.
"""

from __future__ import annotations

import logging
from collections import Counter

import lightning as L

from colorization.data.datasets import skipped_files

log = logging.getLogger(__name__)


class SkippedImages(L.Callback):
    def __init__(self, max_names: int = 20):
        self.max_names = max_names  # names listed in the final summary (each is also logged when skipped)
        self.epoch: Counter[str] = Counter()  # stage -> skips this epoch
        self.total: Counter[str] = Counter()  # stage -> skips in the whole run
        self.files: Counter[str] = Counter()  # file -> times skipped

    def _count(self, trainer, batch, stage: str) -> None:
        if trainer.sanity_checking or not isinstance(batch, dict):
            return
        names = skipped_files(batch)
        self.epoch[stage] += len(names)
        self.total[stage] += len(names)
        self.files.update(names)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._count(trainer, batch, "train")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._count(trainer, batch, "val")

    def _log_epoch(self, trainer, pl_module, stage: str) -> None:
        if trainer.sanity_checking:
            return
        count = self.epoch.pop(stage, 0)
        pl_module.log(f"data/skipped_{stage}", float(count), reduce_fx="sum", sync_dist=True)
        if count:
            log.warning("epoch %d: skipped %d unreadable %s images", trainer.current_epoch, count, stage)

    def on_train_epoch_end(self, trainer, pl_module):
        self._log_epoch(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer, pl_module):
        self._log_epoch(trainer, pl_module, "val")

    def on_fit_end(self, trainer, pl_module):
        total = sum(self.total.values())
        names = ", ".join(f"{name} (x{n})" for name, n in self.files.most_common(self.max_names))
        more = len(self.files) - self.max_names
        log.log(
            logging.WARNING if total else logging.INFO,
            "skipped %d unreadable images in total (train %d, val %d; %d distinct files%s)%s%s",
            total,
            self.total["train"],
            self.total["val"],
            len(self.files),
            f" on rank {trainer.global_rank}" if trainer.world_size > 1 else "",
            f": {names}" if names else "",
            f" and {more} more" if more > 0 else "",
        )
