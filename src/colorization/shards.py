"""python -m colorization.shards output=DIR [data=folder data.root=DIR ...]  (Hydra main).

Converts any data source (the same ``data`` keys as training) into pre-resized shards for ``data=shards``: the
training split in a seeded random order, the validation split in the source's order, class labels kept, bad files
skipped and named here (never met at training). Rerun after an interruption, it finishes what is left.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from colorization.data.shards import FORMATS, NO_LABEL, SPLITS, Encoding, ImageRef, shuffled, write_split
from colorization.data.sources import class_labels, load_hf_split, sample_split
from colorization.errors import ConfigError
from colorization.runs.entry import command

log = logging.getLogger(__name__)

CHROMA = {444: 0, 420: 2}  # subsampling= -> PIL's

# data keys of the loaders, not of what is stored
LOADER_KEYS = {"batch_size", "val_batch_size", "num_workers", "pin_memory", "persistent_workers", "prefetch_factor",
               "gpu_decode", "on_error", "crop_size", "seed", "batches_per_epoch"}  # fmt: skip


def file_refs(files: list[Path], labels: list[int] | None) -> list[ImageRef]:
    labels = labels or [NO_LABEL] * len(files)
    return [ImageRef(str(f), i, label, path=str(f)) for i, (f, label) in enumerate(zip(files, labels, strict=True))]


def source_refs(cfg: DictConfig) -> tuple[dict[str, list[ImageRef]], list[str] | None]:
    """The source's train and validation images as the DataModule of ``cfg.data`` splits them, and the class names."""
    data = cfg.data
    if data.source == "samples":
        split = sample_split()
        return {"train": file_refs(split.train, None), "val": file_refs(split.val, None)}, None
    if data.source == "folder":
        datamodule = hydra.utils.instantiate(data, _convert_="all")  # lists the folder and holds out validation
        split = datamodule.file_split
        labels = {"train": None, "val": None}
        if split.classes is not None:
            root, val_root = Path(data.root).expanduser(), Path(data.val_root or data.root).expanduser()
            labels = {
                "train": class_labels(split.train, root, split.classes),
                "val": class_labels(split.val, val_root, split.classes, unknown=NO_LABEL),
            }
        return {"train": file_refs(split.train, labels["train"]), "val": file_refs(split.val, labels["val"])}, (
            split.classes
        )
    if data.source == "hf":
        if data.streaming:
            raise ConfigError("data.streaming=true: convert a stream with data.streaming=false (datasets caches it)")
        hydra.utils.instantiate(data, _convert_="all")  # checks every data key
        train = load_hf_split(data.path, data.name, data.data_dir, data.split, False)
        if data.val_split:
            val_split, val = data.val_split, load_hf_split(data.path, data.name, data.data_dir, data.val_split, False)
            parts = {"train": (data.split, train, range(len(train))), "val": (val_split, val, range(len(val)))}
        else:
            if len(train) <= data.val_size:
                raise ConfigError(f"data.val_size={data.val_size}: the split {data.split!r} has only {len(train)}")
            parts = {"train": (data.split, train, range(data.val_size, len(train))),
                     "val": (data.split, train, range(data.val_size))}  # fmt: skip
        classes = None
        if data.label_column:
            names = getattr(train.features.get(data.label_column), "names", None)
            classes = list(names) if names else sorted({int(v) for v in train[data.label_column]})
        refs = {}
        for name, (split_name, dataset, indices) in parts.items():
            column = dataset[data.label_column] if data.label_column else None
            where = (data.path, data.name, data.data_dir, split_name, data.image_column)
            refs[name] = [
                ImageRef(f"{split_name}[{i}]", i, int(column[i]) if column is not None else NO_LABEL, hf=where)
                for i in indices
            ]
        return refs, [str(c) for c in classes] if classes else None
    raise ConfigError(f"data.source={data.source!r}: shards are made from samples, folder or hf")


def settings(cfg: DictConfig, refs: dict[str, list[ImageRef]]) -> dict:
    """What the output's shards depend on: a rerun with other settings must not finish another conversion's parts."""
    names = hashlib.sha256("\n".join(r.name for split in SPLITS for r in refs[split]).encode()).hexdigest()[:16]
    keys = ("format", "quality", "subsampling", "seed", "part_size", "chunk_bytes")
    data = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k not in LOADER_KEYS}
    return {**{k: cfg[k] for k in keys}, "data": data, "names": names}


def check_output(out: Path, wanted: dict, overwrite: bool) -> None:
    record = out / "settings.json"
    if record.is_file() and json.loads(record.read_text()) != wanted:
        if not overwrite:
            raise ConfigError(
                f"output={out} holds shards of another conversion (other source or settings; {record}): "
                "choose another output, or overwrite=true to replace them"
            )
        for name in (*SPLITS, ".parts"):
            shutil.rmtree(out / name, ignore_errors=True)
        record.unlink()
    elif not record.is_file() and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"output={out} is not empty and holds no shards of this command: choose an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(wanted, indent=1))


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
