"""Datasets that run in loader workers: decode, crop and flip, and hand over uint8 tensors.

Everything numeric beyond uint8 (Lab, soft targets, weights) happens later, on the device.

Bad files (corrupt, truncated, not images, decompression bombs) raise ``BadImageError`` naming the file.
With ``on_error="skip"`` (the default) a dataset logs a warning, serves another item in its place and
records the file in the item under ``SKIPPED``; the default collate turns that into a list of strings,
so the names reach the main process whatever the worker, where ``colorization.callbacks.SkippedImages``
counts them. ``on_error="raise"`` fails fast instead.
"""

from __future__ import annotations

import functools
import importlib
import logging
import random
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset
from torchvision.transforms import v2

from colorization.data.image_files import (  # noqa: F401 (BadImageError, to_rgb_tensor: re-exported)
    BadImageError,
    encoded_image,
    load_image,
    to_rgb_tensor,
)

log = logging.getLogger(__name__)

ON_ERROR = ("skip", "raise")
SKIPPED = "skipped"  # item key: the files skipped while producing this item, joined by SKIPPED_SEP ("" if none)
SKIPPED_SEP = "\0"  # cannot occur in a file name
MAX_REPLACEMENTS = 10  # bad files in a row before a dataset gives up: a folder of non-images is an error
# a missing or forbidden file is not worth retrying (transient_errors() are)
PERMANENT_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def skipped_files(batch: dict) -> list[str]:
    """The files a collated batch skipped (its SKIPPED strings, split)."""
    return [name for joined in batch.get(SKIPPED) or () for name in joined.split(SKIPPED_SEP) if name]


def readable(path: str | Path) -> bool:
    """Whether a file decodes as an image (a warning names it when not)."""
    try:
        load_image(path)
    except BadImageError as err:
        log.warning("skipped unreadable image %s", err)
        return False
    return True


def train_transform(crop_size: int, resize: int | None = None) -> v2.Transform:
    """Random crop (after an optional shorter-side resize; smaller images are upscaled) and flip."""
    return v2.Compose(
        [
            ResizeAtLeast(crop_size, resize),
            v2.RandomCrop(crop_size),
            v2.RandomHorizontalFlip(),
        ]
    )


def val_transform(crop_size: int, resize: int | None = None) -> v2.Transform:
    return v2.Compose([ResizeAtLeast(crop_size, resize), v2.CenterCrop(crop_size)])


class ResizeAtLeast(v2.Transform):
    """Shorter side to ``resize`` when set, and never below ``crop_size``."""

    def __init__(self, crop_size: int, resize: int | None):
        super().__init__()
        self.crop_size, self.resize = crop_size, resize

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        short = min(image.shape[-2:])
        target = max(self.resize or short, self.crop_size)
        return image if target == short else v2.functional.resize(image, target, antialias=True)


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"data.on_error={on_error!r} is not one of {ON_ERROR}")
    return on_error


class SkipBadImages(Dataset):
    """A map-style dataset whose ``load(i)`` may raise BadImageError: skip (serve another index) or raise.

    The replacement index is a fixed function of (i, attempt), so a run stays reproducible, and every
    item carries the files skipped for it under SKIPPED.
    """

    on_error: str = "skip"

    def load(self, i: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict:
        skipped, last = [], None
        for attempt in range(MAX_REPLACEMENTS + 1):
            try:
                item = self.load(i)
            except BadImageError as err:
                if self.on_error == "raise":
                    raise BadImageError(f"{err} (data.on_error=raise; data.on_error=skip skips such files)") from err
                log.warning("skipped unreadable image %s", err)
                skipped.append(err.name)
                last = err
                i = random.Random(i * 1_000_003 + attempt).randrange(len(self))
                continue
            item[SKIPPED] = SKIPPED_SEP.join(skipped)
            return item
        raise BadImageError(
            f"{len(skipped)} images in a row could not be read (the last: {last}): is this a folder of images?"
        )


class ImageFiles(SkipBadImages):
    """Image files -> {"image": uint8 (3, crop, crop)} (and "label" when labels are given)."""

    def __init__(self, files: list[Path], transform, labels: list[int] | None = None, on_error: str = "skip"):
        self.files, self.transform, self.labels = list(files), transform, labels
        self.on_error = check_on_error(on_error)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> dict:
        item = {"image": self.transform(load_image(self.files[i]))}
        if self.labels is not None:
            item["label"] = self.labels[i]
        return item


class InMemoryCrops(Dataset):
    """Random crops of a few decoded images, ``length`` per epoch (the bundled sample photos)."""

    def __init__(self, images: list[torch.Tensor], transform, length: int):
        self.images, self.transform, self.length = images, transform, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        return {"image": self.transform(self.images[i % len(self.images)])}


class FixedCrops(Dataset):
    """A fixed, seeded set of ``n`` crops from a few images: a validation set that never changes."""

    def __init__(self, images: list[torch.Tensor], n: int, crop_size: int, seed: int = 0):
        rng = random.Random(seed)
        self.crops = []
        for i in range(n):
            img = images[i % len(images)]
            top = rng.randrange(img.shape[1] - crop_size + 1)
            left = rng.randrange(img.shape[2] - crop_size + 1)
            self.crops.append(img[:, top : top + crop_size, left : left + crop_size].clone())

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.crops[i]}


class HFExamples:
    """What both Hugging Face datasets hold: the dataset (images not decoded by ``datasets``), the transform, the
    columns, the bad-file policy and whether images travel encoded (``data.gpu_decode``)."""

    def __init__(
        self,
        dataset,
        transform,
        image_column: str = "image",
        label_column: str | None = None,
        on_error: str = "skip",
        encoded: bool = False,
    ):
        self.dataset, self.transform = undecoded(dataset, image_column), transform
        self.image_column, self.label_column, self.encoded = image_column, label_column, encoded
        self.on_error = check_on_error(on_error)

    def item(self, example: dict, name: str) -> dict:
        return _hf_item(example, self.transform, self.image_column, self.label_column, name, self.encoded)


class HFImages(HFExamples, SkipBadImages):
    """A map-style Hugging Face dataset with an image column (PIL images or paths)."""

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, i: int) -> dict:
        return self.item(self.dataset[i], f"example {i}")


class HFImageStream(HFExamples, IterableDataset):
    """A streaming Hugging Face dataset. In loader workers, ``datasets`` gives each worker its own shards;
    its position (``state_dict``) is what torchdata's StatefulDataLoader saves, so a resumed run goes on with
    the examples it has not seen. Splitting across ranks happens before (``split_dataset_by_node``).

    Transient read errors are retried (resuming the stream where it stopped); bad images are skipped and
    named in the next item's SKIPPED (or raised, with on_error="raise").
    """

    def __init__(self, *args, retries: int = 3, retry_wait: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.retries, self.retry_wait = retries, retry_wait

    def __iter__(self):
        skipped = []
        for n, example in enumerate(retry_transient(self.dataset, self.retries, self.retry_wait)):
            if n == 0:
                self.dataset.load_state_dict(None)  # a resumed position applies to this pass only, not the next epoch
            try:
                item = self.item(example, f"example {n}")
            except BadImageError as err:
                if self.on_error == "raise":
                    raise BadImageError(f"{err} (data.on_error=raise; data.on_error=skip skips such files)") from err
                log.warning("skipped unreadable image %s", err)
                skipped.append(err.name)
                continue
            item[SKIPPED], skipped = SKIPPED_SEP.join(skipped), []
            yield item

    def state_dict(self) -> dict:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.dataset.load_state_dict(state)


@functools.cache
def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth retrying when reading a stream: OS and network errors, including the HTTP clients'
    own (httpx, aiohttp) when installed, which are not OSErrors."""
    errors: list[type[BaseException]] = [OSError]  # ConnectionError and TimeoutError included
    for module, name in (("httpx", "TransportError"), ("aiohttp", "ClientError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def retry_transient(stream, retries: int = 3, wait: float = 1.0):
    """Iterate a streaming Hugging Face dataset; after a transient read error, wait (wait, 2 wait, 4 wait, ...)
    and resume from the last example it yielded (its state_dict), up to ``retries`` times in a row."""
    iterator, failures = iter(stream), 0
    while True:
        try:
            example = next(iterator)
        except StopIteration:
            return
        except PERMANENT_ERRORS:
            raise
        except transient_errors() as err:
            failures += 1
            if failures > retries:
                raise
            delay = wait * 2 ** (failures - 1)
            log.warning(
                "read error (%s: %s); retry %d of %d in %.1f s", type(err).__name__, err, failures, retries, delay
            )
            time.sleep(delay)
            stream.load_state_dict(stream.state_dict())  # the state at the last example yielded
            iterator = iter(stream)
            continue
        failures = 0
        yield example


def undecoded(dataset, image_column: str):
    """The dataset with its image column left as bytes/paths, so a bad image fails in load_image (one item,
    skipped) rather than inside the datasets library (the whole stream)."""
    import datasets

    features = getattr(dataset, "features", None)
    if features is not None and isinstance(features.get(image_column), datasets.Image):
        return dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


def _decode(value, name: str) -> torch.Tensor:
    """An image column value: {"bytes", "path"} (undecoded), a path, bytes, or a PIL image."""
    if isinstance(value, dict):
        name = value.get("path") or name
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str | Path | bytes):
        return load_image(value, name if isinstance(value, bytes) else str(value))
    if isinstance(value, Image.Image):
        try:
            return to_rgb_tensor(value)
        except Exception as err:
            raise BadImageError(f"{name}: {type(err).__name__}: {err}", name) from err
    raise BadImageError(f"{name}: not an image ({type(value).__name__})", name)


def _hf_item(
    example: dict, transform, image_column: str, label_column: str | None, name: str = "example", encoded: bool = False
) -> dict:
    if image_column not in example:
        raise KeyError(f"data.image_column={image_column!r} is not a column; columns: {sorted(example)}")
    if encoded:  # data.gpu_decode: the bytes travel, decoding and cropping happen on the device
        item = {"data": encoded_image(example[image_column], name), "file": name}
    else:
        item = {"image": transform(_decode(example[image_column], name))}
    if label_column is not None:
        item["label"] = int(example[label_column])
    return item
