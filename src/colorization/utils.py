"""Small helpers shared by the entry points: config location, resolvers, one-line errors."""

from __future__ import annotations

import functools
import netrc
import os
import sys
import uuid
from datetime import datetime
from pathlib import Path

from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from colorization.color.reference import ReferenceError
from colorization.data.sources import ConfigError
from colorization.sweeps import sweep_group, sweep_job_name

# One id per process: every run directory is unique, even for runs started in the same second.
RUN_ID = f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{uuid.uuid4().hex[:6]}"


def config_dir() -> str:
    """The Hydra configs: shipped inside the wheel, or the repository's conf/ in an editable install."""
    packaged = Path(__file__).parent / "conf"
    return str(packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf")


def wandb_offline() -> bool:
    """Offline unless credentials exist, so W&B never prompts; WANDB_MODE still wins."""
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return os.environ["WANDB_MODE"] != "online"
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def register_resolvers() -> None:
    resolvers = {
        "run_id": lambda: RUN_ID,
        "wandb_offline": wandb_offline,
        "sweep_group": sweep_group,  # W&B group / name of a multirun job (None outside multiruns)
        "sweep_job_name": sweep_job_name,
        "negate": lambda value: not value,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def one_line_errors(fn):
    """Configuration and reference-file errors end the program with one line naming the key."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, ReferenceError, InstantiationException) as err:
            cause = err
            while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
                cause = cause.__cause__  # hydra.utils.instantiate wraps what the constructor raised
            if not isinstance(cause, ConfigError | ReferenceError | ValueError):
                raise
            print(f"error: {cause}", file=sys.stderr)
            sys.exit(2)

    return wrapper
