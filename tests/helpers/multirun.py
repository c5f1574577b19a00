"""Run ``python -m colorization.train`` in this process (Hydra, multiruns and callbacks included), so tests
skip the interpreter start-up; Hydra's global state and the logging setup are restored afterwards."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig


def run_train(args: list[str], monkeypatch) -> int:
    """The exit status of ``python -m colorization.train ARGS``."""
    from colorization.train import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "argv", [str(Path(sys.modules[main.__module__].__file__)), *args])
    try:
        main()
        return 0
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def sweep_dir(log_dir: Path, task: str = "train") -> Path:
    (sweep,) = list((log_dir / task / "multiruns").iterdir())
    return sweep


def job_dirs(sweep: Path) -> list[Path]:
    """The sweep's job directories, by job number."""
    return sorted(
        (p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: int(p.name.split("_")[0]),
    )
