"""Output paths that must not escape (``OutputPaths``, ``safe_output_path``): an output file for an input, always
inside the output directory, whatever the input's name (``../../x.jpg``, an absolute path, control characters), never
over an input, an output already handed out, or a file this project did not write, never through a link.

``OutputRecord`` is what ``colorize`` wrote in a folder (``.colorize-outputs.jsonl``: path, device, inode, size,
modification time per file): only a file that still matches its line is ours to replace, and with ``output`` equal to
``input`` our earlier outputs are not taken for inputs. ``OutputRecord.write`` creates a file exclusively (a temporary
opened with O_EXCL | O_NOFOLLOW, then hard-linked to its name, which fails if the name was taken meanwhile), so it
never writes through a symbolic or hard link and never replaces a file it did not write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath

MAX_NAME_BYTES = 200  # leaves room for a suffix and a counter under the usual 255-byte limit


def safe_name(name: str, default: str = "image") -> str:
    """A bare file name from any string: the last path component (either slash), no control characters,
    no leading dots (so never '.', '..' or hidden), at most MAX_NAME_BYTES bytes of UTF-8."""
    name = unicodedata.normalize("NFC", re.split(r"[/\\]", name)[-1])
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")  # control, format, surrogate, unassigned
    name = name.strip().lstrip(".").strip()
    while len(name.encode()) > MAX_NAME_BYTES:
        name = name[:-1]
    return name or default


class OutputPaths:
    """Output files for inputs, handed out one by one inside ``output_dir`` (used by ``colorize``).

    - Only the input's bare, cleaned name is used (``../../etc/passwd.jpg`` -> ``passwd``); ``subdir`` (a folder
      under ``output_dir``, for outputs that mirror the inputs' folders) is cleaned component by component, and
      a folder that resolves outside ``output_dir`` (a planted symbolic link) is not used.
    - Never an input (``inputs``; hard links to one count as it), an output handed out before, or an existing
      symbolic link: ``<stem><suffix>``, then ``<stem>_1<suffix>``, ``_2`` ... ``twins`` are other endings that
      must be free under the same stem (colorize's ``_strip.png``).
    Nothing is created; the caller writes the files.
    """

    def __init__(
        self, output_dir: str | Path, inputs: Iterable[str | PurePath] = (), record: OutputRecord | None = None
    ):
        self.output_dir = Path(output_dir).expanduser().resolve()
        inputs = list(inputs)
        self.taken = {_resolved(p) for p in inputs}
        self.inodes = {_inode(p) for p in inputs} - {None}
        self.record = record  # an existing file is free only when this record says we wrote it

    def new(self, input_path, suffix: str = "_color.png", subdir: str | PurePath = "", twins=()) -> list[Path]:
        """[the output file, then one file per twin ending], reserved."""
        for ending in (suffix, *twins):
            if not ending or ending != safe_name("x" + ending)[1:] or ending.strip(".") == "":
                raise ValueError(f"suffix={ending!r} must be a plain file-name ending, such as '_color.png'")
        folder = self.output_dir.joinpath(*(part for p in PurePath(subdir).parts if (part := safe_name(p, ""))))
        if not folder.resolve().is_relative_to(self.output_dir):
            folder = self.output_dir
        stem = safe_name(PurePath(safe_name(str(input_path))).stem)
        for n in range(100_000):
            paths = [folder / f"{stem}{f'_{n}' if n else ''}{ending}" for ending in (suffix, *twins)]
            if any(p.is_symlink() or _resolved(p) in self.taken or _inode(p) in self.inodes for p in paths):
                continue
            if any(os.path.lexists(p) and not (self.record and self.record.is_ours(p)) for p in paths):
                continue  # a file we did not write (a user's, a hard link to one elsewhere): never replaced
            if any(not p.resolve().is_relative_to(self.output_dir) for p in paths):  # cannot happen: the invariant
                raise ValueError(f"{paths[0]} is outside {self.output_dir}")
            self.taken.update(_resolved(p) for p in paths)
            return paths
        raise FileExistsError(f"no free output name for {input_path} in {folder}")


def safe_output_path(
    input_path: str | PurePath, output_dir: str | Path, suffix: str = "_color.png", avoid: Iterable = ()
) -> Path:
    """One output file for ``input_path`` directly in ``output_dir``, never over ``input_path`` or a path in
    ``avoid`` (``OutputPaths``' rules)."""
    return OutputPaths(output_dir, [input_path, *avoid]).new(input_path, suffix)[0]


class OutputRecord:
    """The files ``colorize`` wrote under ``folder``, one JSON line each (appended as each is written, so a run killed
    midway keeps what it finished)."""

    NAME = ".colorize-outputs.jsonl"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser().resolve()
        self.path = self.folder / self.NAME
        self.files: dict[str, list[int]] = {}
        if self.path.is_file() and not self.path.is_symlink():
            for line in self.path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    entry = json.loads(line)
                    self.files[str(entry["path"])] = [int(v) for v in entry["stat"]]

    @staticmethod
    def _stat(path: Path) -> list[int] | None:
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]

    def _key(self, path: Path) -> str:
        return os.path.relpath(os.path.abspath(path), self.folder)

    def is_ours(self, path: str | Path) -> bool:
        """Whether ``path`` is a file we wrote and nobody changed since (same inode, size and time)."""
        stat = self._stat(Path(path))
        return stat is not None and self.files.get(self._key(Path(path))) == stat

    def write(self, path: str | Path, save: Callable) -> None:
        """Create ``path`` with ``save(file)``, or replace it when it is ours; FileExistsError when it is not."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                save(f)
            if self.is_ours(path):
                os.replace(tmp, path)  # a new directory entry: a link to our old file elsewhere keeps its content
            else:
                os.link(tmp, path)  # fails if the name exists: nothing is ever written through it
                os.unlink(tmp)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.files[self._key(path)] = self._stat(path)
        line = json.dumps({"path": self._key(path), "stat": self.files[self._key(path)]}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "a") as f:
            if os.fstat(f.fileno()).st_nlink > 1:  # a planted hard link: write nothing through it
                raise FileExistsError(f"{self.path} is a hard link to another file: remove it")
            f.write(line)


def _inode(path: str | PurePath) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


def _resolved(path: str | PurePath) -> str:
    try:
        return os.path.normcase(str(Path(path).expanduser().resolve()))
    except (OSError, RuntimeError, ValueError):  # a name with NUL, a symlink loop: it cannot be a real input
        return str(path)
