"""Shared by the recipes: run the project's entry points, read their JSON outputs whatever their nesting."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("recipes")


def run_entry_point(module: str, args: Sequence[str], log_file: Path | None = None) -> int:
    """``python -m <module> <args>`` with this interpreter; output also goes to log_file. Returns the exit code."""
    cmd = [sys.executable, "-m", module, *args]
    log.info("$ %s", " ".join(cmd))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if log_file is None:
        return subprocess.run(cmd, env=env).returncode
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as f:
        code = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = log_file.read_text().strip().splitlines()[-5:]
        log.error("%s exited with %d (%s):\n  %s", module, code, log_file, "\n  ".join(tail))
    return code


def write_report(out: Path, name: str, table: str, measured: Any, notes: Sequence[str]) -> Path:
    """<out>/<name>.md (the table, also printed) and <name>.json (the measured numbers and the notes)."""
    (out / f"{name}.md").write_text(table)
    (out / f"{name}.json").write_text(json.dumps({"measured": measured, "notes": list(notes)}, indent=2) + "\n")
    print(table)
    log.info("wrote %s", out / f"{name}.md")
    return out / f"{name}.md"


def read_json(path: Path) -> Any | None:
    """The parsed file, or None (logged) when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        log.warning("%s: missing", path)
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable (%s)", path, err)
    return None


def forms(text: str) -> set[str]:
    """Spellings a key is matched by: 'Ground truth' -> {'ground_truth', 'groundtruth'}; 'top-1' -> {'top_1', 'top1'}."""
    norm = re.sub(r"[\s\-./@]+", "_", str(text).strip().lower())
    return {norm, norm.replace("_", "")}


def numeric_leaves(obj: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], float]]:
    """Every finite number in nested dicts / lists with the keys leading to it. In a list of records, the
    record's string fields (e.g. ``{"layer": "conv1", "top1": 0.2}``) join the path, so rows can be found by name."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        if math.isfinite(obj):
            yield path, float(obj)
    elif isinstance(obj, dict):
        labels = tuple(str(v) for v in obj.values() if isinstance(v, str))
        for key, value in obj.items():
            yield from numeric_leaves(value, (*path, *labels, str(key)))
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from numeric_leaves(value, path)


def find_value(leaves, required: Sequence[set[str]], metric: set[str], exclude: set[str] = frozenset()) -> float | None:
    """The first leaf whose path names one of each ``required`` set, whose last key is one of ``metric``,
    and whose path names nothing in ``exclude`` (names compared as ``forms``)."""
    for path, value in leaves:
        if path and path[-1].lower() in ("value", "mean") and len(path) > 1:
            path = path[:-1]  # {"auc": {"value": 0.9, "std": ...}}
        if not path:
            continue
        seen = set().union(*(forms(p) for p in path[:-1]))
        if forms(path[-1]) & metric and all(seen & r for r in required) and not seen & exclude:
            return value
    return None
