"""Keeps a long run's progress safe: non-finite losses, SIGTERM / SIGINT.

- A non-finite loss: ``ColorizationModule.training_step`` returns None (every rank agrees), so Lightning
  skips backward and the optimizer step; this callback also puts back the BatchNorm running statistics
  that the bad forward pass updated, warns and counts. ``max_nonfinite`` in a row stop the run with a
  checkpoint and a one-line error.
- SIGTERM (pre-emption, ``scancel``, SLURM's end of time): Lightning's own handler stops after the
  current batch by raising SIGTERMException; this callback then writes ``checkpoints/last.ckpt`` and the
  process exits with status 0. SIGINT (Ctrl+C) is turned into the same path; a second Ctrl+C interrupts
  at once. Resume with ``ckpt_path=last``. (SLURM's auto-requeue signal, SIGUSR1, stays Lightning's.)
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from colorization.errors import ConfigError

log = logging.getLogger(__name__)


class NonFiniteLossError(ConfigError):
    """Training diverged: too many non-finite losses in a row (the message names the keys to change)."""


def last_checkpoint_path(trainer) -> Path:
    """Where ``ckpt_path=last`` looks: the ModelCheckpoint's last.ckpt, or <run>/checkpoints/last.ckpt."""
    callback = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    if callback is not None and callback.dirpath:
        return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class FaultTolerance(L.Callback):
    def __init__(self, max_nonfinite: int = 10):
        if not isinstance(max_nonfinite, int) or max_nonfinite < 1:
            raise ConfigError(f"callbacks.fault_tolerance.max_nonfinite={max_nonfinite} must be an integer >= 1")
        self.max_nonfinite = max_nonfinite
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.failure: str | None = None
        self._previous_sigint = None
        self._norm_state: list[tuple[torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def _norm_buffers(pl_module) -> list[torch.Tensor]:
        """BatchNorm running statistics: a forward pass changes them, so a skipped step must put them back."""
        norms = (m for m in pl_module.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase))
        return [b for m in norms for b in m.buffers()]

    # ---- non-finite losses ------------------------------------------------------------------------
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._norm_state = [(b, b.detach().clone()) for b in self._norm_buffers(pl_module)]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        saved, self._norm_state = self._norm_state, []
        if outputs:  # training_step returned its loss: the step happened
            self.nonfinite_in_a_row = 0
            return
        with torch.no_grad():
            for buffer, copy in saved:
                buffer.copy_(copy)
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        log.warning(
            "step %d: non-finite loss, optimizer step skipped (%d in a row, %d in total)",
            trainer.global_step,
            self.nonfinite_in_a_row,
            self.nonfinite_total,
        )
        if self.nonfinite_in_a_row >= self.max_nonfinite and self.failure is None:
            path = self.save(trainer)
            self.failure = (
                f"{self.nonfinite_in_a_row} non-finite losses in a row at step {trainer.global_step}: stopped, "
                f"checkpoint {path} (lower model.optimizer.lr, or raise callbacks.fault_tolerance.max_nonfinite)"
            )
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        if self.failure is not None:
            raise NonFiniteLossError(self.failure)

    # ---- signals ----------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module):
        # Lightning registered its SIGTERM handler just before; Ctrl+C takes the same graceful path
        self._previous_sigint = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame):
        log.warning("SIGINT: stopping after this batch with a checkpoint (Ctrl+C again to interrupt at once)")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            handler(signum, frame)  # Lightning's SIGTERM notifier: stop at the next safe point

    def teardown(self, trainer, pl_module, stage):
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, SIGTERMException):  # raised by Lightning between batches, after a signal
            path = self.save(trainer)
            log.warning(
                "stopped by a signal at step %d; checkpoint %s (resume: ckpt_path=last)", trainer.global_step, path
            )

    def save(self, trainer) -> Path:
        """Write last.ckpt through a temporary file: a kill during the write leaves the previous one intact."""
        path = last_checkpoint_path(trainer)
        tmp = path.with_name(f"{path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state; every rank calls it, rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, path)
        return path

    # ---- resumable counters -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"nonfinite_total": self.nonfinite_total}

    def load_state_dict(self, state_dict: dict) -> None:
        self.nonfinite_total = state_dict.get("nonfinite_total", 0)  # a resumed run starts a fresh count in a row
