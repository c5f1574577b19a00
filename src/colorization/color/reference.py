"""The authors' released data files, found locally or downloaded on demand, always checksum-verified.

The project never ships these files. Lookup order for a file NAME:
1. an explicit path (the file itself, or a folder holding NAME);
2. the folder in ``$COLORIZATION_REFERENCE_DIR``;
3. the cache folder (``$COLORIZATION_CACHE``, default ``~/.cache/colorization``);
4. a download from the authors' GitHub repository into the cache (by git blob id, so the
   content cannot drift), only if ``download=True``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ReferenceFile:
    sha256: str
    url: str


_BLOB_API = "https://api.github.com/repos/richzhang/{repo}/git/blobs/{blob}"

REFERENCE_FILES = {
    "pts_in_hull.npy": ReferenceFile(
        "b5dec01315c34f43f1c8c089e84c45ae35d1838d8e77ed0e7ca930f79ffa450e",
        _BLOB_API.format(repo="colorization", blob="239ff11dac3399654841927ba691b7b392d4d608"),
    ),
    "prior_probs.npy": ReferenceFile(
        "19d00659c7d6f6ee47456fd2c19c86a073f7124875e3d5ab9d601864e062b56c",
        _BLOB_API.format(repo="colorization", blob="296a0177848bd9e989cd6d935fe4d7effdd4d235"),
    ),
    "ilsvrclin12_val_inds.npy": ReferenceFile(
        "6248c4325a0676cb6168a1d65603002e70be48b082e04744574d0f109add0bc3",
        _BLOB_API.format(repo="colorization-pytorch", blob="c2f7e9dc235b24167e3cb50ed29ea0c0ebfbcda5"),
    ),
}


class ReferenceError(RuntimeError):
    """A reference file is missing, unreachable, or not the expected bytes."""


def cache_dir() -> Path:
    return Path(os.environ.get("COLORIZATION_CACHE", Path.home() / ".cache" / "colorization"))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _verified(path: Path, name: str) -> Path:
    expected = REFERENCE_FILES[name].sha256
    if (got := sha256_of(path)) != expected:
        raise ReferenceError(f"{path}: sha256 {got[:12]}... is not the authors' {name} ({expected[:12]}...)")
    return path


def _download(name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(REFERENCE_FILES[name].url, headers={"Accept": "application/vnd.github.raw"})
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                shutil.copyfileobj(response, tmp)
        except OSError as err:
            os.unlink(tmp.name)
            raise ReferenceError(f"could not download {name}: {err}; pass its path instead") from err
    try:
        _verified(Path(tmp.name), name)
    except ReferenceError:
        os.unlink(tmp.name)
        raise
    os.replace(tmp.name, dest)
    return dest


def reference_path(name: str, path: str | Path | None = None, download: bool = True) -> Path:
    """Path of the verified reference file ``name`` (see the module docstring for the lookup)."""
    if name not in REFERENCE_FILES:
        raise ReferenceError(f"unknown reference file {name!r}; known: {sorted(REFERENCE_FILES)}")
    if path is not None:
        p = Path(path).expanduser()
        p = p / name if p.is_dir() else p
        if not p.is_file():
            raise ReferenceError(f"{p}: no such file (expected the authors' {name})")
        return _verified(p, name)
    candidates = (
        [Path(os.environ["COLORIZATION_REFERENCE_DIR"]) / name] if "COLORIZATION_REFERENCE_DIR" in os.environ else []
    )
    candidates.append(cache_dir() / name)
    for p in candidates:
        if p.is_file():
            return _verified(p, name)
    if not download:
        raise ReferenceError(f"{name} not found in {[str(c.parent) for c in candidates]} and download is off")
    return _download(name, cache_dir() / name)


def load_reference(name: str, path: str | Path | None = None, download: bool = True) -> np.ndarray:
    return np.load(reference_path(name, path, download), allow_pickle=False)
