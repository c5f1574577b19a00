"""Rebuild a colorizer for inference: from one of our training checkpoints, or from the authors' released weights
(``models/authors.py``)."""

from __future__ import annotations

import logging
from pathlib import Path

from colorization.checkpoints import check_finite, load_checkpoint, one_line
from colorization.errors import ConfigError
from colorization.models.module import ColorizationModule

log = logging.getLogger(__name__)


def load_module(path: str | Path, key: str = "ckpt_path") -> ColorizationModule:
    """A ColorizationModule from one of our Lightning checkpoints (bins and prior included), on the CPU.

    Tensors and plain containers only (weights_only=True): a file that would run code is refused in one line.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}={path}: no such file")
    load_checkpoint(p, key, mmap=True)
    try:
        module = ColorizationModule.load_from_checkpoint(p, map_location="cpu")
    except ConfigError as err:  # its settings were refused: the message says which
        raise ConfigError(f"{key}={path}: {err}") from err
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(f"{key}={path}: not a colorization.train checkpoint ({one_line(err)})") from err
    return check_finite(module, f"{key}={path}")
