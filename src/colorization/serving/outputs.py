"""Which files colorize reads and writes: the plan (inputs found, outputs named under ``output`` through the safe
paths of ``serving/safety.py``), the photos decoded in loader workers, and each result written through the record."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from colorization.api import to_uint8
from colorization.data.datasets import load_image
from colorization.data.sources import IMAGE_EXTENSIONS
from colorization.serving.safety import OutputPaths, OutputRecord


@dataclass
class Job:
    source: Path
    target: Path  # inside the output directory, never an input
    strip_target: Path | None = None  # the temperature strip (strip=true), likewise


@dataclass
class Result:
    images: list[Path]  # one colorized image per readable input
    strips: list[Path]  # temperature strips (strip=true)
    skipped: list[tuple[str, str]]  # (input, why)


@dataclass
class Plan:
    jobs: list[Job]
    missing: list[tuple[str, str]]  # (input as given, why nothing was found)
    record: OutputRecord  # what we wrote in the output folder (written through, and kept up to date)


def _is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def _glob_root(spec: str) -> Path:
    """The folder a glob's matches are named relative to: its leading parts without wildcards."""
    parts = Path(spec).expanduser().parts
    fixed = parts[: next(i for i, p in enumerate(parts) if _is_glob(p))]
    return Path(*fixed) if fixed else Path(".")


def plan(inputs: str | list[str], output_dir: Path, suffix: str, strip: bool = False) -> Plan:
    """Map every input image to its output file(s): same relative path under output_dir, new suffix.

    Two inputs that would share an output name, or an output name (or its ``_strip`` twin) that is an input
    itself, an existing symbolic link or a file we did not write, get ``_1``, ``_2``, ... appended
    (``data.safety.OutputPaths``). Files of output_dir that we wrote earlier (its ``OutputRecord``) are not inputs.
    """
    output_dir = output_dir.expanduser().resolve()
    record = OutputRecord(output_dir)
    found: list[tuple[Path, Path]] = []  # (file, the folder its output path is relative to)
    missing = []

    def add(files: list[Path], root: Path) -> None:
        inner = output_dir != root.resolve() and output_dir.is_relative_to(root.resolve())
        # an output folder inside the scanned one holds our earlier outputs, not inputs; so do our recorded files
        found.extend(
            (f, root) for f in files if not (inner and f.resolve().is_relative_to(output_dir)) and not record.is_ours(f)
        )

    for spec in [inputs] if isinstance(inputs, str) else list(inputs):
        spec = str(spec)
        path = Path(spec).expanduser()
        if path.is_dir():
            before = len(found)
            add([f for f in sorted(path.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS], path)
            if len(found) == before:
                missing.append((spec, "no image files in this folder"))
        elif path.is_file():
            found.append((path, path.parent))
        elif _is_glob(spec):
            before = len(found)
            add([Path(f) for f in sorted(glob.glob(str(path), recursive=True)) if Path(f).is_file()], _glob_root(spec))
            if len(found) == before:
                missing.append((spec, "the pattern matches no file"))
        else:
            missing.append((spec, "no such file or folder"))

    sources, jobs = set(), []
    outputs = OutputPaths(output_dir, [f for f, _ in found], record)
    twins = (f"_strip{suffix}",) if strip else ()
    for file, root in found:
        if file.resolve() in sources:
            continue  # the same file named twice
        sources.add(file.resolve())
        try:  # abspath folds "a/../b" without following links
            relative = Path(os.path.abspath(file)).relative_to(os.path.abspath(root))
        except ValueError:
            relative = Path(file.name)
        target, *strip_target = outputs.new(file, suffix, subdir=relative.parent, twins=twins)
        jobs.append(Job(file, target, strip_target[0] if strip else None))
    return Plan(jobs, missing, record)


class Photos(Dataset):
    """Each photo decoded (any mode, EXIF orientation applied) at full size, in loader workers."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict:
        try:
            image = load_image(self.jobs[i].source)
        except Exception as err:  # a corrupt or foreign file: listed and skipped, the others go on
            return {"index": i, "error": f"{type(err).__name__}: {err}"}
        return {"index": i, "image": image}


def write_image(rgb: torch.Tensor, target: Path, fmt: str, source: Path, skipped: list, record: OutputRecord) -> bool:
    """Save RGB in [0, 1] (3, H, W), through ``record`` (a new file, or one we wrote before); a failure (disk full,
    no permission, the name taken meanwhile) is listed like an unreadable input."""
    try:
        image = Image.fromarray(to_uint8(rgb).permute(1, 2, 0).cpu().numpy())
        options = {"format": "JPEG", "quality": 95} if fmt == "jpg" else {"format": "PNG"}
        record.write(target, lambda f: image.save(f, **options))
    except OSError as err:
        skipped.append((str(source), f"could not write {target}: {err}"))
        return False
    return True
