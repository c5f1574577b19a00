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
from torch.utils.data import Dataset, IterableDataset, default_collate, get_worker_info
from torchvision.transforms import v2

from colorization.data.crops import Crop, item_rng, train_transform, val_transform  # noqa: F401 (re-exported)
from colorization.data.image_files import (  # noqa: F401 (BadImageError, to_rgb_tensor: re-exported)
    BadImageError,
    encoded_image_with_size,
    load_image,
    to_rgb_tensor,
)
from colorization.errors import ConfigError

log = logging.getLogger(__name__)

ON_ERROR = ("skip", "raise")
SKIPPED = "skipped"  # item key: the files skipped while producing this item, joined by SKIPPED_SEP ("" if none)
SKIPPED_SEP = "\0"  # cannot occur in a file name
MAX_REPLACEMENTS = 10  # bad files in a row before a dataset gives up: a folder of non-images is an error
# a missing or forbidden file is not worth retrying (transient_errors() are)
PERMANENT_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """uint8 (3, H, W) crops -> (B, 3, H, W) stored channels-last: each crop's rows copied as they lie in its decoded
    buffer (H x W x 3), no transposing copy on the host. The network's input is L, one channel, for which both
    layouts are the same memory. In a loader worker the batch is made in shared memory, as default_collate does."""
    first = images[0]
    shape = (len(images), first.shape[1], first.shape[2], first.shape[0])
    if get_worker_info() is not None:  # sent to the main process without a copy
        storage = first.untyped_storage()._new_shared(len(images) * first.numel() * first.element_size())
        out = first.new_empty(0).set_(storage).view(shape)
    else:
        out = first.new_empty(shape)
    for dst, image in zip(out, images, strict=True):
        dst.copy_(image.permute(1, 2, 0))
    return out.permute(0, 3, 1, 2)


def collate(items: list[dict]) -> dict:
    """A batch of items: "image" stacked by ``stack_images``, "data" (``data.gpu_decode``'s encoded payloads, of
    different lengths) kept a list, every other key as default_collate does."""
    batch = dict(default_collate([{k: v for k, v in item.items() if k not in ("image", "data")} for item in items]))
    for key, join in (("image", stack_images), ("data", list)):
        if key in items[0]:
            batch[key] = join([item[key] for item in items])
    return batch


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
        raise ConfigError(f"data.on_error={on_error!r} is not one of {ON_ERROR}")
    return on_error


def split_key(key) -> tuple[int, int]:
    """A sampler's key: (index, epoch) from ``data.loaders.EpochSampler``, or a plain index (epoch 0)."""
    return (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), 0)


class SkipBadImages(Dataset):
    """A map-style dataset whose ``load(i, rng)`` may raise BadImageError: skip (serve another index) or raise.

    ``rng`` is the item's own random source (``item_rng(seed, epoch, i)``: its crop and flip). The replacement
    index is a fixed function of (i, attempt), so a run stays reproducible, and every item carries the files
    skipped for it under SKIPPED.
    """

    on_error: str = "skip"
    seed: int = 0

    def load(self, i: int, rng: random.Random) -> dict:
        raise NotImplementedError

    def __getitem__(self, key) -> dict:
        i, epoch = split_key(key)
        skipped, last = [], None
        for attempt in range(MAX_REPLACEMENTS + 1):
            try:
                item = self.load(i, item_rng(self.seed, epoch, i))
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

    def __init__(
        self, files: list[Path], transform, labels: list[int] | None = None, on_error: str = "skip", seed: int = 0
    ):
        self.files, self.transform, self.labels, self.seed = list(files), transform, labels, seed
        self.on_error = check_on_error(on_error)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int, rng: random.Random) -> dict:
        item = {"image": self.transform(load_image(self.files[i]), rng)}
        if self.labels is not None:
            item["label"] = self.labels[i]
        return item


class InMemoryCrops(Dataset):
    """Random crops of a few decoded images, ``length`` per epoch (the bundled sample photos)."""

    def __init__(self, images: list[torch.Tensor], transform, length: int, seed: int = 0):
        self.images, self.transform, self.length, self.seed = images, transform, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key) -> dict:
        i, epoch = split_key(key)
        return {"image": self.transform(self.images[i % len(self.images)], item_rng(self.seed, epoch, i))}


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

    def __getitem__(self, key) -> dict:
        return {"image": self.crops[split_key(key)[0]]}


class HFExamples:
    """What both Hugging Face datasets hold: the dataset (images not decoded by ``datasets``), the transform, the
    columns, the bad-file policy, whether images travel encoded (``data.gpu_decode``) and the crops' seed."""

    def __init__(
        self,
        dataset,
        transform,
        image_column: str = "image",
        label_column: str | None = None,
        on_error: str = "skip",
        encoded: bool = False,
        seed: int = 0,
    ):
        self.dataset, self.transform = undecoded(dataset, image_column), transform
        self.image_column, self.label_column, self.encoded = image_column, label_column, encoded
        self.on_error = check_on_error(on_error)
        self.seed = seed

    def item(self, example: dict, name: str, rng: random.Random) -> dict:
        return _hf_item(example, self.transform, self.image_column, self.label_column, name, self.encoded, rng)


class HFImages(HFExamples, SkipBadImages):
    """A map-style Hugging Face dataset with an image column (PIL images or paths)."""

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, i: int, rng: random.Random) -> dict:
        return self.item(self.dataset[i], f"example {i}", rng)


class HFImageStream(HFExamples, IterableDataset):
    """A streaming Hugging Face dataset. In loader workers, ``datasets`` gives each worker its own shards;
    its position (``state_dict``) is what torchdata's StatefulDataLoader saves, so a resumed run goes on with
    the examples it has not seen. Splitting across ranks happens before (``split_dataset_by_node``).

    Crops: the n-th example a worker reads in a pass gets ``item_rng(seed, epoch, (rank, worker, n))``; the pass
    (epoch) is set from the main process (``set_epoch``: a shared tensor, seen by persistent workers too) and n
    travels in the worker's state, so a resumed stream crops as the uninterrupted one did.

    Transient read errors are retried (resuming the stream where it stopped); bad images are skipped and
    named in the next item's SKIPPED (or raised, with on_error="raise").
    """

    def __init__(self, *args, retries: int = 3, retry_wait: float = 1.0, rank: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.retries, self.retry_wait, self.rank = retries, retry_wait, rank
        self.epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._count = self._resumed_count = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(epoch)

    def __iter__(self):
        skipped = []
        worker = get_worker_info()
        place = f"{self.rank}.{worker.id if worker is not None else 0}"
        self._count, self._resumed_count = self._resumed_count, 0
        for n, example in enumerate(retry_transient(self.dataset, self.retries, self.retry_wait)):
            if n == 0:
                self.dataset.load_state_dict(None)  # a resumed position applies to this pass only, not the next epoch
            count, self._count = self._count, self._count + 1
            try:
                item = self.item(example, f"example {n}", item_rng(self.seed, int(self.epoch), f"{place}.{count}"))
            except BadImageError as err:
                if self.on_error == "raise":
                    raise BadImageError(f"{err} (data.on_error=raise; data.on_error=skip skips such files)") from err
                log.warning("skipped unreadable image %s", err)
                skipped.append(err.name)
                continue
            item[SKIPPED], skipped = SKIPPED_SEP.join(skipped), []
            yield item

    def state_dict(self) -> dict:
        return {"stream": self.dataset.state_dict(), "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        self.dataset.load_state_dict(state["stream"])
        self._resumed_count = state["count"]


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


def encoded_item(source, transform, rng: random.Random | None, name: str | None = None) -> dict:
    """``data.gpu_decode``: {"data": the JPEG bytes, "crop": their crop plan} for the device to decode and cut, or,
    for what a worker decodes itself (PNG, CMYK, EXIF-rotated, ...), the crop already cut and a plan that keeps it."""
    payload, (height, width) = encoded_image_with_size(source, name)
    if payload.ndim == 1:
        return {"data": payload, "crop": transform.plan(height, width, rng).as_tensor()}
    image = transform(payload, rng)
    size = image.shape[-1]
    return {"data": image, "crop": Crop(size, size, 0, 0, size).as_tensor()}


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
    example: dict,
    transform,
    image_column: str,
    label_column: str | None,
    name: str = "example",
    encoded: bool = False,
    rng: random.Random | None = None,
) -> dict:
    if image_column not in example:
        raise KeyError(f"data.image_column={image_column!r} is not a column; columns: {sorted(example)}")
    if encoded:  # data.gpu_decode: the bytes travel, decoding and cropping happen on the device
        item = {**encoded_item(example[image_column], transform, rng, name), "file": name}
    else:
        item = {"image": transform(_decode(example[image_column], name), rng)}
    if label_column is not None:
        item["label"] = int(example[label_column])
    return item
