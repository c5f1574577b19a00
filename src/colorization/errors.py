"""The project's errors, in one place: each names what to change, in one line."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key. Raised before any heavy work."""


def check_number(value, key: str, integer: bool = False):
    """``value`` if it is a number (an integer when ``integer``; never a bool), else a one-line ConfigError."""
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ConfigError(f"{key}={value!r} must be {'an integer' if integer else 'a number'}")
    return value


def require_extra(extra: str, *modules: str) -> None:
    """A one-line ConfigError naming the package extra when one of ``modules`` is not installed."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} is not installed: pip install 'colorization[{extra}]' (or colorization[all])"
        )
