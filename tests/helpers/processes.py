"""A training command in a real child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers.config import REPO


def run_train(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
        "COLORIZATION_LOG_DIR": str(tmp_path / "logs"),
        "WANDB_MODE": "offline",
    }
    env.pop("LOCAL_RANK", None)
    return subprocess.run(
        [sys.executable, "-m", "colorization.train", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


