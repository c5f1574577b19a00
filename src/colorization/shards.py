"""python -m colorization.shards output=DIR [data=folder data.root=DIR ...]  (Hydra main).

Converts any data source (the same ``data`` keys as training) into pre-resized shards for ``data=shards``: the
training split in a seeded random order, the validation split in the source's order, class labels kept, bad files
skipped and named here (never met at training). Rerun after an interruption, it finishes what is left.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from colorization.data.shard_sources import check_output, settings, source_refs
from colorization.data.shards import FORMATS, SPLITS, Encoding, shuffled, write_split
from colorization.errors import ConfigError
from colorization.runs.entry import command

log = logging.getLogger(__name__)

CHROMA = {444: 0, 420: 2}  # subsampling= -> PIL's

def convert(cfg: DictConfig) -> dict:
    """Write the shards of ``cfg.data`` to ``cfg.output``; returns each split's record (images, skipped, ...)."""
    from tqdm import tqdm

    if not cfg.output:
        raise ConfigError("output is not set: output=DIR, where the shards go")
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format!r} is not one of {FORMATS}")
    if not (isinstance(cfg.quality, int) and 1 <= cfg.quality <= 100):
        raise ConfigError(f"quality={cfg.quality} must be an integer in 1..100")
    if cfg.subsampling not in CHROMA:
        raise ConfigError(f"subsampling={cfg.subsampling} is not one of {sorted(CHROMA)}")
    if not (isinstance(cfg.part_size, int) and cfg.part_size >= 1):
        raise ConfigError(f"part_size={cfg.part_size} must be an integer >= 1")
    out = Path(cfg.output).expanduser()
    refs, classes = source_refs(cfg)
    check_output(out, settings(cfg, refs), cfg.overwrite)
    encoding = Encoding(cfg.data.resize, cfg.format, cfg.quality, CHROMA[cfg.subsampling])
    meta = {
        "resize": cfg.data.resize,
        "format": cfg.format,
        "quality": cfg.quality if cfg.format == "jpeg" else None,
        "subsampling": cfg.subsampling if cfg.format == "jpeg" else None,
        "classes": classes,
        "source": OmegaConf.to_container(cfg.data, resolve=True),
        "seed": cfg.seed,
    }
    workers = cfg.workers or os.cpu_count() or 1
    started = time.monotonic()
    records = {}
    with tqdm(total=sum(len(r) for r in refs.values()), unit="img", desc="shards") as progress:
        for split in SPLITS:
            order = shuffled(refs[split], cfg.seed) if split == "train" else refs[split]
            records[split] = write_split(
                order, out, split, encoding, meta, workers, cfg.part_size, cfg.chunk_bytes, progress
            )
    for split, record in records.items():
        size = sum(f.stat().st_size for f in (out / split).glob("*.bin"))
        print(f"{split}: {record['images']} images, {size / 1e6:.1f} MB in {out / split}")
        for bad in record["skipped"]:
            print(f"  skipped {bad['reason']}")
        if record["skipped"]:
            print(f"  {len(record['skipped'])} unreadable files skipped (listed in {out / split / 'index.json'})")
    print(f"done in {time.monotonic() - started:.0f} s: train with data=shards data.root={out}")
    return records


@command("shards")
def main(cfg: DictConfig) -> None:
    convert(cfg)


if __name__ == "__main__":
    main()
