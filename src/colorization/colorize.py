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

import logging
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from colorization.api import Colorizer, shrink
from colorization.data.image_files import set_max_pixels
from colorization.errors import ConfigError
from colorization.runs.entry import command
from colorization.serving.model_choice import load_chosen
from colorization.serving.outputs import Photos, Result, plan, write_image

log = logging.getLogger(__name__)

FORMATS = ("png", "jpg")
STRIP_MAX_SIDE = 512  # each frame of a temperature strip is at most this long: 7 full-size photos side by side are huge


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
    module = load_chosen(cfg)
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
                    if not write_image(rgb, job.target, cfg.format, job.source, result.skipped, todo.record):
                        continue
                    result.images.append(job.target)
                    if cfg.strip:
                        image = shrink(item["image"], STRIP_MAX_SIDE)
                        frames = [colorizer.join(image, s[k : k + 1], torch.uint8) for s in strips]
                        strip_rgb = torch.cat(frames, dim=-1)
                        if write_image(strip_rgb, job.strip_target, cfg.format, job.source, result.skipped, todo.record):
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
