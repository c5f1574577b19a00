"""A callback that kills its own run with SIGKILL (the whole process group: loader workers and DDP ranks too), as the
out-of-memory killer or a node failure would: nothing is flushed, no handler runs."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAt(L.Callback):
    """SIGKILL to this run's process group at the end of training step ``step`` (on rank 0). The test starts the run
    in a session of its own, so the group is the run: its loader workers and, under DDP, the other ranks."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and trainer.is_global_zero:
            os.killpg(os.getpgid(0), signal.SIGKILL)


class BatchDigests(L.Callback):
    """Appends "<step> <digest of the batch's images>" per training batch to ``path`` (a run's data, step by step)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import hashlib

        digest = hashlib.sha256(batch["image"].cpu().numpy().tobytes()).hexdigest()[:12]
        weights = hashlib.sha256()
        for value in pl_module.state_dict().values():
            weights.update(value.detach().cpu().contiguous().numpy().tobytes())
        with open(self.path, "a") as f:
            f.write(f"{trainer.global_step + 1} {trainer.current_epoch} {digest} {weights.hexdigest()[:12]}\n")
