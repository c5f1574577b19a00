"""Datasets that run in loader workers: decode, crop and flip, and hand over uint8 tensors.

Everything numeric beyond uint8 (Lab, soft targets, weights) happens later, on the device.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, IterableDataset
from torchvision.transforms import v2


def to_rgb_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image of any mode (CMYK, palette, gray, 16-bit, alpha; EXIF-rotated) -> uint8 (3, H, W)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)  # transparent pixels become white, not black
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def load_image(path: str | Path) -> torch.Tensor:
    with Image.open(path) as image:
        return to_rgb_tensor(image)


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


class ImageFiles(Dataset):
    """Image files -> {"image": uint8 (3, crop, crop)} (and "label" when labels are given)."""

    def __init__(self, files: list[Path], transform, labels: list[int] | None = None):
        self.files, self.transform, self.labels = list(files), transform, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
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


class HFImages(Dataset):
    """A map-style Hugging Face dataset with an image column (PIL images or paths)."""

    def __init__(
        self, dataset, transform, image_column: str = "image", label_column: str | None = None, encoded: bool = False
    ):
        self.dataset, self.transform = dataset, transform
        self.image_column, self.label_column, self.encoded = image_column, label_column, encoded

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return _hf_item(self.dataset[i], self.transform, self.image_column, self.label_column, self.encoded)


class HFImageStream(IterableDataset):
    """A streaming Hugging Face dataset. In loader workers, ``datasets`` gives each worker its own shards;
    its position (``state_dict``) is what torchdata's StatefulDataLoader saves, so a resumed run goes on with
    the examples it has not seen. Splitting across ranks happens before (``split_dataset_by_node``)."""

    def __init__(
        self, dataset, transform, image_column: str = "image", label_column: str | None = None, encoded: bool = False
    ):
        self.dataset, self.transform = dataset, transform
        self.image_column, self.label_column, self.encoded = image_column, label_column, encoded

    def __iter__(self):
        for n, example in enumerate(self.dataset):
            if n == 0:
                self.dataset.load_state_dict(None)  # a resumed position applies to this pass only, not the next epoch
            yield _hf_item(example, self.transform, self.image_column, self.label_column, self.encoded)

    def state_dict(self) -> dict:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.dataset.load_state_dict(state)


def _hf_item(example: dict, transform, image_column: str, label_column: str | None, encoded: bool = False) -> dict:
    if image_column not in example:
        raise KeyError(f"data.image_column={image_column!r} is not a column; columns: {sorted(example)}")
    image = example[image_column]
    if encoded:  # data.gpu_decode: the bytes travel, decoding and cropping happen on the device
        from colorization.data.decode import encoded_image

        item = {"data": encoded_image(image)}
    else:
        image = load_image(image) if isinstance(image, str | Path) else to_rgb_tensor(image)
        item = {"image": transform(image)}
    if label_column is not None:
        item["label"] = int(example[label_column])
    return item
