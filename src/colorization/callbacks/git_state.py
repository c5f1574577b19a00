"""The code's git commit and dirty state, added to every logger's hyperparameters (W&B config: ``git``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import lightning as L


def git_state(path: str | Path | None = None) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the repository holding ``path`` (default: this code).

    Dirty means tracked files differ from the commit (as ``git describe --dirty``); None outside a repository.
    """
    path = Path(path or Path(__file__).parent)

    def git(*args):
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


class GitState(L.Callback):
    def __init__(self, path: str | None = None):
        self.path = path

    def on_fit_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            state = git_state(self.path)
            for logger in trainer.loggers:
                logger.log_hyperparams({"git": state})
