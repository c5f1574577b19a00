"""The test images of the paper's protocol: which photos (a source's validation split, optionally the authors'
10k ImageNet-val indices) and at which size (center crop or whole-photo resize), as whole photos, not crops."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from torch.utils.data import Dataset

from colorization.color import load_reference
from colorization.data.crops import ResizeTo
from colorization.data.datasets import HFImages, HFImageStream, ImageFiles, val_transform
from colorization.data.sources import class_labels, class_of, list_images, load_hf_split, sample_split
from colorization.errors import ConfigError

PROTOCOLS = ("center_crop", "resize")
OFFICIAL_INDICES = "ilsvrclin12_val_inds"  # the authors' 10k ImageNet-val test indices (colorization-pytorch)
_IMAGENET_VAL = re.compile(r"ILSVRC2012_val_(\d{8})")



# ---- the images ------------------------------------------------------------------------------
def protocol_transform(name: str, size: int):
    """center_crop: shorter side to size, then the central size x size (the paper's); resize: the whole photo."""
    if name == "center_crop":
        return val_transform(size, size)
    return ResizeTo(size)


def load_indices(spec: str | None, download: bool) -> np.ndarray | None:
    """protocol.indices: null, ilsvrclin12_val_inds (the authors' file), or a .npy / text file of integers."""
    if not spec:
        return None
    if str(spec) == OFFICIAL_INDICES:
        indices = load_reference(f"{OFFICIAL_INDICES}.npy", download=download)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"protocol.indices={spec}: no such file")
        try:
            indices = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path, dtype=np.int64)
        except ValueError as err:
            raise ConfigError(f"protocol.indices={spec}: not a list of integers ({err})") from err
    indices = np.asarray(indices).ravel()
    if not np.issubdtype(indices.dtype, np.integer) or (indices < 0).any() or len(np.unique(indices)) != len(indices):
        raise ConfigError(f"protocol.indices={spec}: expected distinct non-negative integers")
    return np.sort(indices)


def select_files(files: list[Path], indices: np.ndarray | None, where: str) -> list[int]:
    """Positions of the indexed files: ImageNet-val names give their own index (val_N is index N - 1)."""
    if indices is None:
        return list(range(len(files)))
    numbers = [_IMAGENET_VAL.search(f.name) for f in files]
    if all(numbers):
        position = {int(m.group(1)) - 1: i for i, m in enumerate(numbers)}
        missing = [int(i) for i in indices if int(i) not in position]
        if missing:
            name = f"ILSVRC2012_val_{missing[0] + 1:08d}"
            raise ConfigError(f"protocol.indices: {len(missing)} indexed images are not in {where} (e.g. {name})")
        return [position[int(i)] for i in indices]
    if indices[-1] >= len(files):
        raise ConfigError(f"protocol.indices: index {indices[-1]} is out of range ({len(files)} images in {where})")
    return [int(i) for i in indices]


def describe_data(data: DictConfig) -> str:
    """The evaluation set in words, for reports and model cards."""
    if data.source == "samples":
        return "the 2 held-out sample photos (scikit-image)"
    if data.source == "folder":
        return f"the images under {data.val_root or data.root}"
    if data.source == "hf":
        return f"{data.path}{'/' + data.name if data.name else ''} split {data.val_split or data.split}"
    return f"the {data.source} source at {data.get('root')}"


def evaluation_dataset(
    data: DictConfig, transform, indices: np.ndarray | None, split=None
) -> tuple[Dataset, list[str] | None]:
    """All validation images of the data source (whole photos, not training crops), and the class names.

    samples: the held-out photos; folder: every image under data.val_root (or data.root); hf: data.val_split
    (or data.split). Labels: folder sub-folder names in sorted order (data.labels), or data.label_column.
    ``split``: the DataModule's folder split, whose listing of data.val_root is reused (no second walk; data.root
    is read back from its index file).
    """
    if data.source == "shards":  # the study's photos (evaluate refuses shards: they are resized copies)
        from colorization.data.shards import ShardImages, split_url

        if indices is not None:
            raise ConfigError("protocol.indices: shards are stored in their own order; use the source they came from")
        store = dict(storage_options=data.storage_options, cache_dir=data.cache_dir, max_cache_size=data.max_cache_size)
        return ShardImages(split_url(data.root, "val"), transform, data.seed, **store), None
    if data.source == "samples":
        files = sample_split().val
        return ImageFiles([files[i] for i in select_files(files, indices, "the sample photos")], transform), None
    if data.source == "folder":
        key = "data.val_root" if data.val_root else "data.root"
        root = Path(data.val_root or data.root).expanduser()
        files = split.val if split is not None and data.val_root else list_images(root, key, data.get("index"))
        listed = files
        files = [files[i] for i in select_files(files, indices, f"{key}={root}")]
        classes = labels = None
        if data.labels:
            classes = sorted({class_of(f, root) for f in listed})  # from the same listing
            labels = class_labels(files, root, classes)
        return ImageFiles(files, transform, labels), classes
    examples = load_hf_split(data.path, data.name, data.data_dir, data.val_split or data.split, data.streaming)
    if indices is not None:
        keep = set(indices.tolist())
        if data.streaming:
            examples = examples.filter(lambda _, i: i in keep, with_indices=True)
        elif indices[-1] >= len(examples):
            raise ConfigError(f"protocol.indices: index {indices[-1]} is out of range for {len(examples)} examples")
        else:
            examples = examples.select(indices.tolist())
    wrap = HFImageStream if data.streaming else HFImages
    return wrap(examples, transform, data.image_column, data.label_column), None
