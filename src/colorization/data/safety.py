"""Output paths that must not escape: ``safe_output_path``, an output file for an input, always inside the output
directory, whatever the input's name (``../../x.jpg``, an absolute path, control characters), never over an input or
over an output already handed out, never through a symbolic link.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
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


def safe_output_path(
    input_path: str | PurePath,
    output_dir: str | Path,
    suffix: str = "_color.png",
    avoid: Iterable[str | Path] = (),
) -> Path:
    """The output file for ``input_path``: ``output_dir/<input stem><suffix>``, made safe.

    - Only the input's bare name is used (``../../etc/passwd`` -> ``passwd``), so the result is always a
      direct child of ``output_dir`` (checked after resolving it).
    - Never an existing input or a path in ``avoid`` (pass every input and every output handed out so
      far), never an existing symbolic link: ``<stem><suffix>``, then ``<stem>-1<suffix>``, ``-2`` ...
    Nothing is created; the caller writes the file (and adds the result to ``avoid``).
    """
    out_dir = Path(output_dir).expanduser().resolve()
    if not suffix or suffix != safe_name("x" + suffix)[1:] or suffix.strip(".") == "":
        raise ValueError(f"suffix={suffix!r} must be a plain file-name ending, such as '_color.png'")
    stem = safe_name(PurePath(safe_name(str(input_path))).stem)
    others = [input_path, *avoid]
    taken = {_resolved(p) for p in others}
    inodes = {_inode(p) for p in others} - {None}  # hard links to an input count as the input
    for n in range(100_000):
        candidate = out_dir / f"{stem}{f'-{n}' if n else ''}{suffix}"
        if candidate.parent != out_dir:  # cannot happen with a bare name; kept as the invariant it relies on
            raise ValueError(f"{candidate} is outside {out_dir}")
        if candidate.is_symlink() or _resolved(candidate) in taken or _inode(candidate) in inodes:
            continue
        return candidate
    raise FileExistsError(f"no free output name for {input_path} in {out_dir}")


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
