"""Checkpoints and weights files, loaded without running anything they contain.

``load_checkpoint``: ``torch.load(weights_only=True)``: tensors and plain containers only. A pickle that would call
a function (``os.system``, ...) is refused with a one-line ConfigError naming the key.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from colorization.errors import ConfigError


class UnsafeFileError(ConfigError):
    """A file that would execute code when loaded, or is no checkpoint at all; the message names the key."""


def load_checkpoint(path: str | Path, key: str = "ckpt_path", map_location="cpu", mmap: bool = False) -> dict:
    """A checkpoint or weights file, loaded without executing anything it contains.

    ``mmap=True`` maps the tensors instead of reading them: a cheap check of a large file before use.
    """
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not mmap or "mmap" not in str(err):
                raise
            return torch.load(path, map_location=map_location, weights_only=True)  # an old, non-zip file
    except pickle.UnpicklingError as err:
        reason = _weights_only_reason(err)
        if "GLOBAL" not in reason:  # a broken or foreign file rather than one that imports things
            raise UnsafeFileError(f"{key}={path}: not a readable checkpoint ({reason})") from err
        raise UnsafeFileError(
            f"{key}={path}: refused: it holds pickled objects beyond tensors and plain containers, which could "
            f"run code when loaded ({reason})"
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise UnsafeFileError(f"{key}={path}: not a readable checkpoint ({_one_line(err)})") from err


def _weights_only_reason(err: Exception) -> str:
    """The one informative line of torch's long weights_only message (e.g. the global it refused)."""
    text = str(err)
    for line in text.splitlines():
        if "GLOBAL" in line:
            return line.split("WeightsUnpickler error:")[-1].strip()
    detail = text.split("WeightsUnpickler error:", 1)[-1]
    return next((line.strip() for line in detail.splitlines() if line.strip()), _one_line(err))[:300]


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]
