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
        raise UnsafeFileError(f"{key}={path}: not a readable checkpoint ({one_line(err)})") from err


def _weights_only_reason(err: Exception) -> str:
    """The one informative line of torch's long weights_only message (e.g. the global it refused)."""
    text = str(err)
    for line in text.splitlines():
        if "GLOBAL" in line:
            return line.split("WeightsUnpickler error:")[-1].strip()
    detail = text.split("WeightsUnpickler error:", 1)[-1]
    return next((line.strip() for line in detail.splitlines() if line.strip()), one_line(err))[:300]


def one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]


# ---- settings that name a callable ---------------------------------------------------------------------------------
# A checkpoint's hyperparameters and an exported model's config are data from strangers. The only settings that name
# a callable are model.optimizer and model.scheduler (Hydra _target_): their target must be one of torch's optimizers
# or schedulers (or this project's schedules), named at the top, and nothing nested may name another. Hydra's own
# blocklist stops a few functions (os.system, ...) and differs between versions; open, shutil.copyfile, os.makedirs
# and the like pass it.
ALLOWED_MODULES = ("torch.optim", "colorization.models.schedules")


def _allowed_class(target) -> bool:
    import importlib

    if not isinstance(target, str):
        return False
    module, _, name = target.rpartition(".")
    if not any(module == m or module.startswith(m + ".") for m in ALLOWED_MODULES):
        return False  # nothing else is imported: importing a module can run code
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    return isinstance(found, type) and issubclass(found, torch.optim.Optimizer | torch.optim.lr_scheduler.LRScheduler)


def _nested_targets(value, path: str):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "_target_":
                yield path
            yield from _nested_targets(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _nested_targets(v, f"{path}[{i}]")


def checked_settings(settings: dict | None, key: str) -> dict | None:
    """``settings`` (a dict with ``_target_``, e.g. model.optimizer) if it names an allowed optimizer or scheduler
    class and nothing nested names another callable; else a one-line ConfigError naming the key."""
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise ConfigError(f"{key}: expected a mapping with _target_, got {type(settings).__name__}")
    target = settings.get("_target_")
    if not _allowed_class(target):
        raise ConfigError(
            f"{key}._target_={target!r}: refused (a setting may only name an optimizer of torch.optim or a scheduler "
            "of torch.optim.lr_scheduler / colorization.models.schedules)"
        )
    nested = [p for k, v in settings.items() if k != "_target_" for p in _nested_targets(v, f"{key}.{k}")]
    if nested:
        raise ConfigError(f"{nested[0]}._target_: refused (only {key}._target_ may name a callable)")
    return settings


def instantiate_setting(settings: dict, key: str):
    """``hydra.utils.instantiate`` of a checked setting (``checked_settings``)."""
    import hydra

    return hydra.utils.instantiate(checked_settings(settings, key), _convert_="all")


def check_finite(module: torch.nn.Module, what: str) -> torch.nn.Module:
    """``module``, or a one-line ConfigError when a weight or buffer holds NaN or infinity (a diverged or damaged
    file would colorize every photo black)."""
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ConfigError(f"{what}: refused: its weights hold NaN or infinite values ({name})")
    return module
