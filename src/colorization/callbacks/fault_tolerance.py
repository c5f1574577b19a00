"""Keeps a long run's progress safe: non-finite losses, SIGTERM / SIGINT.

- A non-finite loss: ``ColorizationModule`` skips its optimizer step on the device (``models.nonfinite``); this
  callback puts back the BatchNorm running statistics that the bad forward pass updated (``torch.where`` from a
  stash made once) and counts on the device, reading the counts at the logging interval: it warns, and
  ``max_nonfinite`` in a row stop the run with a checkpoint and a one-line error.
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
    """Where ``ckpt_path=last`` looks: the LastCheckpoint's last.ckpt, or <run>/checkpoints/last.ckpt."""
    callback = next((c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)), None)
    if callback is not None and callback.dirpath:
        return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class LastCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt``, the newest state of the run: every ``every_n_train_steps`` training steps, after each
    validation and when training ends. (Lightning's ``save_last`` only follows its own top-k saves: with a monitored
    metric that stops improving, last.ckpt would stay behind.) ``options`` go to ModelCheckpoint
    (e.g. ``save_weights_only``)."""

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int | None = 1000, **options):
        if every_n_train_steps is not None and (not isinstance(every_n_train_steps, int) or every_n_train_steps < 1):
            raise ConfigError(
                f"callbacks.last_checkpoint.every_n_train_steps={every_n_train_steps} must be an integer >= 1 or null"
            )
        super().__init__(
            dirpath=dirpath,
            every_n_train_steps=every_n_train_steps,
            save_top_k=0,
            save_last=True,
            enable_version_counter=False,
            **options,
        )

    def on_validation_end(self, trainer, pl_module):
        self._save_newest(trainer)

    def on_train_end(self, trainer, pl_module):
        self._save_newest(trainer)

    def _save_newest(self, trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # sanity checks, or this step already saved
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class FaultTolerance(L.Callback):
    def __init__(self, max_nonfinite: int = 10, check_every_n_steps: int | None = None):
        """``max_nonfinite`` non-finite steps in a row stop the run with a checkpoint. The counts live on the device
        and are read every ``check_every_n_steps`` optimizer steps (None: the trainer's ``log_every_n_steps``, when
        Lightning syncs for its logging anyway) and at the end of training."""
        if not isinstance(max_nonfinite, int) or max_nonfinite < 1:
            raise ConfigError(f"callbacks.fault_tolerance.max_nonfinite={max_nonfinite} must be an integer >= 1")
        if check_every_n_steps is not None and (not isinstance(check_every_n_steps, int) or check_every_n_steps < 1):
            raise ConfigError(
                f"callbacks.fault_tolerance.check_every_n_steps={check_every_n_steps} must be an integer >= 1"
            )
        self.max_nonfinite = max_nonfinite
        self.check_every_n_steps = check_every_n_steps
        self.nonfinite_total = 0  # as last read from the device
        self.failure: str | None = None
        self._previous_sigint = None
        self._buffers: list[torch.Tensor] = []
        self._stash: list[torch.Tensor] = []
        self._stash_due = True
        self._counts: torch.Tensor | None = None  # on the device: total, in a row, longest run in a row

    @staticmethod
    def _norm_buffers(pl_module) -> list[torch.Tensor]:
        """BatchNorm running statistics: a forward pass changes them, so a skipped step must put them back."""
        norms = (m for m in pl_module.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase))
        return [b for m in norms for b in m.buffers()]

    # ---- non-finite losses: the step is skipped on the device (ColorizationModule.on_before_optimizer_step) -------
    def on_train_start(self, trainer, pl_module):
        self._buffers = self._norm_buffers(pl_module)
        self._stash = [b.detach().clone() for b in self._buffers]  # made once; copied into before each step
        self._counts = torch.tensor([self.nonfinite_total, 0, 0], device=pl_module.device, dtype=torch.float32)
        # Lightning registered its SIGTERM handler just before; Ctrl+C takes the same graceful path
        self._previous_sigint = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._stash_due:  # the first batch of an optimizer step (all of its accumulated batches update them)
            with torch.no_grad():
                for copy, buffer in zip(self._stash, self._buffers, strict=True):
                    copy.copy_(buffer)
            self._stash_due = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        found = getattr(pl_module, "nonfinite_step", None)
        if found is None or self._counts is None:
            return  # no optimizer step after this batch (gradient accumulation), or not a ColorizationModule
        pl_module.nonfinite_step, self._stash_due = None, True
        with torch.no_grad():
            skipped = found.bool()
            for buffer, copy in zip(self._buffers, self._stash, strict=True):
                buffer.copy_(torch.where(skipped, copy, buffer))
            total, in_a_row, longest = self._counts.unbind()
            in_a_row = (in_a_row + found) * found
            self._counts = torch.stack((total + found, in_a_row, torch.maximum(longest, in_a_row)))
        every = self.check_every_n_steps or trainer.log_every_n_steps
        if trainer.global_step % every == 0:
            self._check(trainer)

    def _check(self, trainer) -> None:
        """Read the device counts (one sync), warn about new non-finite steps, stop after a run of them."""
        if self._counts is None:
            return
        total, in_a_row, longest = (int(v) for v in self._counts.tolist())
        if total > self.nonfinite_total:
            log.warning(
                "non-finite loss: %d optimizer steps skipped by step %d (%d in total, %d in a row now)",
                total - self.nonfinite_total,
                trainer.global_step,
                total,
                in_a_row,
            )
        self.nonfinite_total = total
        if longest >= self.max_nonfinite and self.failure is None:
            path = self.save(trainer)
            self.failure = (
                f"{longest} non-finite losses in a row by step {trainer.global_step}: stopped, "
                f"checkpoint {path} (lower model.optimizer.lr, or raise callbacks.fault_tolerance.max_nonfinite)"
            )
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        self._check(trainer)
        if self.failure is not None:
            raise NonFiniteLossError(self.failure)

    # ---- signals ----------------------------------------------------------------------------------
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
        total = int(self._counts[0].item()) if self._counts is not None else self.nonfinite_total  # at checkpoints
        return {"nonfinite_total": total}

    def load_state_dict(self, state_dict: dict) -> None:
        self.nonfinite_total = state_dict.get("nonfinite_total", 0)  # a resumed run starts a fresh count in a row
