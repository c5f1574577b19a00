"""One listing of an image folder per run: an index file that every rank (and later runs) read instead of walking.

Walking ImageNet's 1.28 M files costs minutes on a cluster file system, times every rank. The index is keyed by
the folder's path and the modification times of the folder and of its sub-folders (ImageNet's class folders: a
file added or removed there changes its folder's time), so a changed folder is listed again. Changes deeper
down (a file replaced in a sub-sub-folder) are not seen: delete the index, or pass another ``data.index``.

``data.index=PATH`` keeps the index where you say (to reuse it across runs and machines); by default it goes
to the cache (``$COLORIZATION_CACHE/index``). Rank 0 lists and writes; the other ranks wait for its file.
The validation hold-out of a folder without ``data.val_root`` is stored beside it (its files were decoded once
to keep unreadable ones out).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from colorization.color.reference import cache_dir

log = logging.getLogger(__name__)

VERSION = 1
WAIT_FOR_RANK_0_S = 600.0


def folder_key(root: Path) -> str:
    """The folder's path and the modification times of it and its sub-folders: cheap (one stat per class)."""
    root = root.resolve()
    stamps = [(".", root.stat().st_mtime_ns)]
    with os.scandir(root) as entries:
        stamps += sorted((e.name, e.stat().st_mtime_ns) for e in entries if e.is_dir(follow_symlinks=True))
    text = json.dumps({"version": VERSION, "root": str(root), "folders": stamps})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def default_index_path(root: Path) -> Path:
    name = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "index" / f"{name}.json"


def _rank() -> int:
    """This process's rank as the launchers (torchrun, Lightning's DDP, SLURM) export it; 0 outside DDP."""
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _read(path: Path, key: str) -> dict | None:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return index if index.get("key") == key else None


def _write(path: Path, index: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index))
    os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one


def indexed_files(root: Path, list_files: Callable[[Path], list[Path]], index_path: str | Path | None = None):
    """The files under ``root`` (sorted), from the index when it matches the folder, else listed (and written,
    by rank 0). Returns (files, index path, key)."""
    start = time.monotonic()
    path = Path(index_path).expanduser() if index_path else default_index_path(root)
    key = folder_key(root)
    index = _read(path, key)
    if index is None and _rank() > 0:  # rank 0 is listing: wait for its file rather than walk the folder again
        deadline = time.monotonic() + WAIT_FOR_RANK_0_S
        while index is None and time.monotonic() < deadline:
            time.sleep(0.5)
            index = _read(path, key)
        if index is None:
            log.warning(
                "data.index: no index from rank 0 after %.0f s (%s): listing the folder", WAIT_FOR_RANK_0_S, path
            )
    if index is not None:
        files = [root / f for f in index["files"]]
        seconds = time.monotonic() - start
        log.info("data.index: rank %d read %d files of %s in %.2f s from %s", _rank(), len(files), root, seconds, path)
        return files, path, key
    files = list_files(root)
    if _rank() == 0:
        _write(path, {"key": key, "root": str(root.resolve()), "files": [str(f.relative_to(root)) for f in files]})
    seconds = time.monotonic() - start
    log.info("data.index: rank %d listed %d files of %s in %.2f s (index %s)", _rank(), len(files), root, seconds, path)
    return files, path, key


def stored_holdout(index_path: Path, key: str, name: str, choose: Callable[[], list[Path]], root: Path) -> list[Path]:
    """The validation hold-out ``name`` (its seed, size, check), stored beside the index: chosen once (``choose``
    may decode files), read back by every later rank and run."""
    path = index_path.with_name(f"{index_path.stem}.holdout-{name}.json")
    held = _read(path, key)
    if held is None and _rank() > 0:
        deadline = time.monotonic() + WAIT_FOR_RANK_0_S
        while held is None and time.monotonic() < deadline:
            time.sleep(0.5)
            held = _read(path, key)
    if held is not None:
        return [root / f for f in held["files"]]
    val = choose()
    if _rank() == 0:
        _write(path, {"key": key, "files": [str(f.relative_to(root)) for f in val]})
    return val
