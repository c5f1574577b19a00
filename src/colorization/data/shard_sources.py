"""What a shards conversion reads and where it writes: each split's images as the DataModule of ``data`` splits them
(with their labels and class names), and the output's settings record, which keeps a rerun from finishing another
conversion's parts."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from colorization.data.shards import NO_LABEL, SPLITS, ImageRef
from colorization.data.sources import class_labels, load_hf_split, sample_split
from colorization.errors import ConfigError

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
