"""End every run with a validation, also when ``trainer.max_steps`` ends it in the middle of an epoch.

Lightning validates at ``val_check_interval`` and at epoch ends, so a run stopped by max_steps between two
checks leaves no validation metrics, no images and no metric for a sweeper. Asking the trainer to stop at
the last step (``trainer.should_stop``, as EarlyStopping does) makes the fit loop log that step and run one
last validation (with its checkpoint) before it ends.
"""

from __future__ import annotations

import lightning as L


class FinalValidation(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True
