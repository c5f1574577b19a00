"""python -m colorization.colorize ckpt_path=CKPT | model.weights=PATH input=PATH output=DIR  (Hydra main).

A thin command over the Python API (``colorization.Colorizer``): it finds the files, reads them in loader workers,
and writes the results.

Photos in (files, folders searched recursively, globs; JPEG, PNG 8/16-bit, alpha, grayscale, CMYK,
EXIF-rotated), colorized photos out at the input's full resolution: the network sees the photo resized
to size x size, its ab (annealed mean at T) is upsampled to the photo's size and joined with the
photo's own L, as the authors' demo does. Outputs keep the input's relative path under its folder
(or glob root), as PNG by default; an input is never overwritten and nothing is written outside
``output``. Unreadable files are listed and skipped; the exit status is 1 only when no image was
colorized. ``strip=true`` also writes the paper's temperature strip: the photo at each T of
``strip_temperatures`` side by side (T = 0 is the mode).
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from colorization.api import Colorizer, shrink, to_uint8
from colorization.data.datasets import load_image
from colorization.data.image_files import set_max_pixels
from colorization.data.safety import OutputPaths, OutputRecord
from colorization.data.sources import IMAGE_EXTENSIONS
from colorization.errors import ConfigError
from colorization.models.pretrained import load_model
from colorization.runs.entry import command

log = logging.getLogger(__name__)

FORMATS = ("png", "jpg")
STRIP_MAX_SIDE = 512  # each frame of a temperature strip is at most this long: 7 full-size photos side by side are huge


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


def _write(rgb: torch.Tensor, target: Path, fmt: str, source: Path, skipped: list, record: OutputRecord) -> bool:
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


def validate(cfg: DictConfig) -> None:
    if not cfg.input:
        raise ConfigError("input is not set: pass input=PATH (an image, a folder or a glob; or a list [A,B])")
    if not isinstance(cfg.input, str | ListConfig | list):
        raise ConfigError(f"input={cfg.input}: expected a path, a glob or a list of them")
    if not cfg.output:
        raise ConfigError("output is not set: pass output=DIR")
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format!r} is not one of {FORMATS}")
    if cfg.temperature is not None and not cfg.temperature >= 0:
        raise ConfigError(f"temperature={cfg.temperature} must be >= 0 (0: the mode, as in the API and the strip)")
    if not isinstance(cfg.size, int) or cfg.size < 8:
        raise ConfigError(f"size={cfg.size} must be an integer >= 8")
    if cfg.strip and (not cfg.strip_temperatures or any(t < 0 for t in cfg.strip_temperatures)):
        raise ConfigError(f"strip_temperatures={cfg.strip_temperatures} must be a non-empty list of T >= 0")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size={cfg.batch_size} must be >= 1")
    set_max_pixels(cfg.max_pixels)


@torch.no_grad()
def colorize(cfg: DictConfig) -> Result:
    """Colorize every input; returns the files written and the inputs skipped, with the reason."""
    validate(cfg)
    suffix = "." + cfg.format
    output_dir = Path(cfg.output).expanduser()
    todo = plan(cfg.input, output_dir, suffix, strip=bool(cfg.strip))
    module = load_model(cfg.ckpt_path, cfg.model.weights, download=cfg.color.download)
    if cfg.strip and not module.criterion.classification:
        raise ConfigError("strip=true needs a classification model: this one regresses ab (loss l2), it has no T")
    colorizer = Colorizer.from_module(module, cfg.device, size=cfg.size, batch_size=cfg.batch_size)
    temperature = cfg.temperature if cfg.temperature is not None else colorizer.temperature
    temperatures = [temperature, *(cfg.strip_temperatures if cfg.strip else [])]

    loader = DataLoader(Photos(todo.jobs), batch_size=cfg.batch_size, num_workers=cfg.num_workers, collate_fn=list)
    result = Result([], [], list(todo.missing))
    with tqdm(total=len(todo.jobs), desc="colorize", unit="image", disable=None) as progress:
        for items in loader:
            good = [it for it in items if "error" not in it]
            result.skipped += [(str(todo.jobs[it["index"]].source), it["error"]) for it in items if "error" in it]
            if good:
                ab, *strips = colorizer.predict_ab([it["image"] for it in good], temperatures)
                for k, item in enumerate(good):
                    job = todo.jobs[item["index"]]
                    rgb = colorizer.join(item["image"], ab[k : k + 1], torch.uint8)  # a few rows at a time
                    if not _write(rgb, job.target, cfg.format, job.source, result.skipped, todo.record):
                        continue
                    result.images.append(job.target)
                    if cfg.strip:
                        image = shrink(item["image"], STRIP_MAX_SIDE)
                        frames = [colorizer.join(image, s[k : k + 1], torch.uint8) for s in strips]
                        strip_rgb = torch.cat(frames, dim=-1)
                        if _write(strip_rgb, job.strip_target, cfg.format, job.source, result.skipped, todo.record):
                            result.strips.append(job.strip_target)
            progress.update(len(items))
    return result


@command("colorize")
def main(cfg: DictConfig) -> None:
    result = colorize(cfg)
    print(f"colorized {len(result.images)} image(s) into {Path(cfg.output).expanduser()}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} input(s):")
        for source, reason in result.skipped:
            print(f"  {source}: {reason}")
    if not result.images:
        sys.exit(1)


if __name__ == "__main__":
    main()
