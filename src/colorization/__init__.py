"""Colorful Image Colorization (Zhang, Isola & Efros, ECCV 2016).

The Python API: ``from colorization import Colorizer`` (see ``colorization.api``). The commands are
``python -m colorization.train | evaluate | colorize | export | demo``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for IDEs and type checkers; at run time the import waits until first use (keeps commands light)
    from colorization.api import Colorizer

__all__ = ["Colorizer"]


def __getattr__(name: str):
    if name == "Colorizer":
        from colorization.api import Colorizer

        return Colorizer
    raise AttributeError(f"module 'colorization' has no attribute {name!r}")
