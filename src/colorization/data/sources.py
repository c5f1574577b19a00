"""Where images come from: the bundled sample photos, a local folder, or a Hugging Face dataset.

Each source is resolved to a train and a validation part before any loading starts, so a wrong
path or an empty folder fails in one line naming the config key.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import skimage

from colorization.data.index import indexed_files, stored_holdout
from colorization.errors import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Color photographs bundled with scikit-image (no network). Two are held out for validation.
SAMPLE_TRAIN = (
    "astronaut.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
)
SAMPLE_VAL = ("chelsea.png", "coffee.png")


@dataclass
class FileSplit:
    train: list[Path]
    val: list[Path]
    classes: list[str] | None = None  # sorted class names when labels come from sub-folder names


def sample_photo_dir() -> Path:
    return Path(skimage.data.__file__).parent


def sample_split() -> FileSplit:
    root = sample_photo_dir()
    return FileSplit([root / n for n in SAMPLE_TRAIN], [root / n for n in SAMPLE_VAL])


def _walk_images(path: Path) -> list[Path]:
    """Image files under path, recursively, sorted. os.walk reads each folder's entries with their types, so
    there is no stat per file (on a cluster file system, most of the cost of walking ImageNet)."""
    files = [
        Path(folder) / name
        for folder, _, names in os.walk(path, followlinks=True)
        for name in names
        if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files)


def _checked_dir(root, key: str) -> Path:
    if root is None or str(root) == "":
        raise ConfigError(f"{key} is not set: pass {key}=DIR")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{key}={root}: no such directory")
    return path


def list_images(root: str | Path, key: str = "data.root", index: str | Path | None = None) -> list[Path]:
    """All image files under root, recursively, sorted (from the folder's index file when it is up to date: see
    ``data.index``); a one-line ConfigError when there are none."""
    path = _checked_dir(root, key)
    files = indexed_files(path, _walk_images, index)[0]
    if not files:
        raise ConfigError(f"{key}={root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it")
    return files


def class_of(path: Path, root: Path) -> str:
    """ImageNet layout: the first folder below root is the class."""
    return path.relative_to(root).parts[0]


def class_labels(files: list[Path], root: Path, classes: list[str], unknown: int | None = None) -> list[int]:
    """Each file's class index: the position of its first sub-folder under ``root`` in ``classes`` (sorted names,
    ImageNet's order for wnid folders); a class not in ``classes`` gets ``unknown`` (None: a KeyError)."""
    index = {c: i for i, c in enumerate(classes)}
    names = [class_of(f, root) for f in files]
    return [index[c] for c in names] if unknown is None else [index.get(c, unknown) for c in names]


def load_hf_split(path: str, name: str | None, data_dir: str | None, split: str, streaming: bool, encoded_column=None):
    """One split of a Hugging Face dataset (``data=hf``: training and evaluation alike). ``encoded_column``: that
    image column is left as its encoded bytes (``data.gpu_decode``)."""
    import datasets

    dataset = datasets.load_dataset(path, name, data_dir=data_dir, split=split, streaming=streaming)
    if encoded_column is not None and encoded_column in (dataset.features or {}):
        dataset = dataset.cast_column(encoded_column, datasets.Image(decode=False))
    return dataset


def folder_split(
    root,
    val_root=None,
    val_size: int = 256,
    seed: int = 0,
    labels: bool = False,
    usable: Callable[[Path], bool] | None = None,
    index: str | Path | None = None,
) -> FileSplit:
    """Train files from root; validation from val_root, or a fixed random hold-out of root.

    ``usable``: a check for hold-out candidates (e.g. "it decodes"), so a small validation set is never
    made of unreadable files; the files it rejects stay in train, where the dataset skips and counts them.
    The listing and the hold-out come from the folder's index (``data.index``) when it is up to date: one
    walk of the folder, and one decoding of hold-out candidates, per folder state, not per run and rank.
    """
    path = _checked_dir(root, "data.root")
    files, index_path, key = indexed_files(path, _walk_images, index)
    if not files:
        raise ConfigError(f"data.root={root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it")
    if val_root:
        train, val = files, list_images(val_root, "data.val_root")
    else:
        if len(files) < 2:
            raise ConfigError(
                f"data.root={root}: one image cannot be split into train and validation; add data.val_root"
            )
        n_val = max(1, min(val_size, len(files) // 10))
        choose = lambda: _holdout(files, n_val, seed, usable, root)  # noqa: E731
        name = f"{seed}-{n_val}-{'readable' if usable is not None else 'any'}"
        val = sorted(stored_holdout(index_path, key, name, choose, path))
        held_out = set(val)
        train = [f for f in files if f not in held_out]
    classes = sorted({class_of(f, path) for f in files}) if labels else None  # from the same listing
    return FileSplit(train, val, classes)


def _holdout(files: list[Path], n_val: int, seed: int, usable: Callable[[Path], bool] | None, root) -> list[Path]:
    shuffled = files.copy()
    random.Random(seed).shuffle(shuffled)
    if usable is None:
        return shuffled[:n_val]
    val = []
    for f in shuffled:
        if len(val) == n_val:
            break
        if usable(f):
            val.append(f)
    if not val:
        raise ConfigError(f"data.root={root}: none of its {len(files)} files could be read as an image")
    return val


def write_labeled_samples(
    root: str | Path,
    photos: tuple[str, ...] = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"),
    per_class: tuple[int, int] = (16, 12),
    size: int = 128,
    seed: int = 0,
) -> Path:
    """A tiny labeled set in ImageNet layout, offline: <root>/{train,val}/<photo>/<i>.jpg, random size x size
    JPEG crops of bundled sample photos, one class per photo (crops of one photo are learnable as a class).
    For trying linear probes (colorization.probe) without ImageNet; returns root."""
    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "val"), per_class, strict=True):
        for name in photos:
            photo = np.asarray(Image.open(sample_photo_dir() / name).convert("RGB"))
            folder = root / split / Path(name).stem
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                top = rng.integers(0, photo.shape[0] - size + 1)
                left = rng.integers(0, photo.shape[1] - size + 1)
                Image.fromarray(photo[top : top + size, left : left + size]).save(folder / f"{i}.jpg", quality=90)
    return root
