"""Training and validation crops as pure functions of the image size and an item's own seed.

A training crop (shorter side to ``resize``, random ``crop_size`` square, random horizontal flip) is drawn from a
``random.Random`` seeded by (data.seed, epoch, index): the same item of the same epoch gets the same crop in any
loader worker, on any rank, before and after a resume (a worker's global random state is not in a checkpoint).
The plan is made where the image size is known (a loader worker, from the decoded image or a JPEG header) and
applied there or, with ``data.gpu_decode``, on the device after decoding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torchvision.transforms import v2


def item_rng(seed: int, epoch: int, index: int | str) -> random.Random:
    """The random source of one item of one epoch (a string seed: Random hashes it with SHA-512)."""
    return random.Random(f"{seed}/{epoch}/{index}")


def resized_size(height: int, width: int, crop_size: int, resize: int | None) -> tuple[int, int]:
    """The size after the shorter side goes to ``resize`` (never below ``crop_size``; unchanged when it is already
    there), as torchvision's resize computes it (the longer side truncated)."""
    short, long = min(height, width), max(height, width)
    target = max(resize or short, crop_size)
    if target == short:
        return height, width
    other = int(target * long / short)
    return (target, other) if height <= width else (other, target)


@dataclass(frozen=True)
class Crop:
    """Where to cut a ``size`` square out of an image already resized to (height, width); ``flip``: mirror it."""

    height: int
    width: int
    top: int
    left: int
    size: int
    flip: bool = False

    def as_tensor(self) -> torch.Tensor:
        """Collatable form (int64 [6]): crosses the loader with the encoded bytes (``data.gpu_decode``)."""
        return torch.tensor([self.height, self.width, self.top, self.left, self.size, int(self.flip)])

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> Crop:
        h, w, top, left, size, flip = (int(v) for v in t.tolist())
        return cls(h, w, top, left, size, bool(flip))


class CropTransform:
    """uint8 (3, H, W) -> uint8 (3, crop, crop): shorter side to ``resize`` (antialiased), then a random crop and
    flip drawn from ``rng`` (``train``) or the center crop (torchvision's ``CenterCrop`` rounding)."""

    def __init__(self, crop_size: int, resize: int | None = None, train: bool = True):
        self.crop_size, self.resize, self.train = crop_size, resize, train

    def plan(self, height: int, width: int, rng: random.Random | None = None) -> Crop:
        h, w = resized_size(height, width, self.crop_size, self.resize)
        size = self.crop_size
        if not self.train:
            return Crop(h, w, int(round((h - size) / 2.0)), int(round((w - size) / 2.0)), size)
        if rng is None:
            raise ValueError("a training crop needs the item's random source (data.crops.item_rng)")
        return Crop(h, w, rng.randrange(h - size + 1), rng.randrange(w - size + 1), size, rng.random() < 0.5)

    def __call__(self, image: torch.Tensor, rng: random.Random | None = None) -> torch.Tensor:
        return apply_crop(image, self.plan(image.shape[-2], image.shape[-1], rng))


def apply_crop(image: torch.Tensor, crop: Crop) -> torch.Tensor:
    """Resize (when the plan's size differs), cut and flip; works on CPU and CUDA tensors alike.

    The cut is a view: decoders write H x W x 3, so the rows of a crop lie contiguous in the decoded buffer and
    ``data.datasets.collate`` copies them once, as they lie (a CHW copy here would gather every byte)."""
    if tuple(image.shape[-2:]) != (crop.height, crop.width):
        image = v2.functional.resize(image, [crop.height, crop.width], antialias=True)
    hwc = image.permute(1, 2, 0)[crop.top : crop.top + crop.size, crop.left : crop.left + crop.size]
    return (hwc.flip(1) if crop.flip else hwc).permute(2, 0, 1)


class ResizeTo:
    """uint8 (3, H, W) -> (3, size, size), the whole photo (evaluation's "resize" protocol); no randomness."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: torch.Tensor, rng: random.Random | None = None) -> torch.Tensor:
        return v2.functional.resize(image, [self.size, self.size], antialias=True)


def train_transform(crop_size: int, resize: int | None = None) -> CropTransform:
    """Shorter side to ``resize`` (smaller images are upscaled to the crop), random crop and flip."""
    return CropTransform(crop_size, resize, train=True)


def val_transform(crop_size: int, resize: int | None = None) -> CropTransform:
    return CropTransform(crop_size, resize, train=False)
