"""The project's errors, in one place: each names what to change, in one line."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key. Raised before any heavy work."""
