"""JPEG decoding on the device (``data.gpu_decode=true``): loader workers ship the encoded bytes, and the
DataModule decodes a whole batch at once (nvJPEG on a GPU, libjpeg on the CPU), then crops and flips there.

A worker only reads each file's header: a baseline RGB or gray JPEG without EXIF rotation travels as its
bytes (uint8, 1-D) with its crop plan (``data.crops.Crop``, drawn in the worker from the item's own seed, so the
device cuts exactly what the worker would have cut); anything else (PNG, CMYK or EXIF-rotated JPEG, ...) is
decoded and cropped in the worker, exactly as without this option, and travels as the uint8 (3, crop, crop)
crop. Batches are dicts whose "data" is a list and whose "crop" is an int64 (B, 6) tensor of plans.

The CPU path's guarantees hold: the header check refuses decompression bombs, non-images and truncated JPEGs
(``BadImageError``, so the dataset skips, counts and names them as ``ImageFiles`` does), and a file that only
fails in the device decoder is dropped from its batch, named in the batch's skipped files (so
``callbacks.SkippedImages`` counts it) and logged: the batch is smaller by the files so named.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from colorization.data.crops import Crop, apply_crop
from colorization.data.datasets import SkipBadImages, check_on_error, encoded_item
from colorization.data.image_files import BadImageError, encoded_image, jpeg_is_complete  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


class EncodedFiles(SkipBadImages):
    """Image files -> {"data": bytes or crop, "crop": plan, "file"} (and "label"), for ``decode_batch`` on the device.
    ``transform`` (``data.crops.CropTransform``) plans the crops. Bad files are skipped (or raise) as in
    ``ImageFiles``."""

    def __init__(
        self, files: list[Path], transform, labels: list[int] | None = None, on_error: str = "skip", seed: int = 0
    ):
        self.files, self.transform, self.labels, self.seed = list(files), transform, labels, seed
        self.on_error = check_on_error(on_error)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int, rng) -> dict:
        item = {**encoded_item(self.files[i], self.transform, rng, str(self.files[i])), "file": str(self.files[i])}
        if self.labels is not None:
            item["label"] = self.labels[i]
        return item


def _decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    with warnings.catch_warnings():  # torchvision marks its decoders deprecated in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        if device.type == "cpu":  # libjpeg decodes one image at a time anyway (and torchvision < 0.20 takes no list)
            return [decode_jpeg(d, mode=ImageReadMode.RGB) for d in data]
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def decode_batch(
    data: list[torch.Tensor], device: torch.device | str, crops: torch.Tensor, names: list[str] | None = None
) -> tuple[torch.Tensor, list[int]]:
    """Payloads and crop plans from ``encoded_item`` -> uint8 (B, 3, crop, crop) on ``device`` and the indices kept:
    one batched JPEG decode, then each plan (resize, crop, flip) on the device. An image that does not decode is
    dropped and logged with its name (the batch gets smaller), never replaced by garbage."""
    names = names or [f"image {i} of the batch" for i in range(len(data))]
    device = torch.device(device)
    images: list[torch.Tensor | None] = list(data)
    jpegs = [i for i, d in enumerate(data) if d.ndim == 1]
    if jpegs:
        try:
            decoded = _decode_jpegs([data[i] for i in jpegs], device)
        except RuntimeError:  # a corrupt file fails the whole batch: decode one by one to find it
            decoded = []
            for i in jpegs:
                try:
                    decoded.append(_decode_jpegs([data[i]], device)[0])
                except RuntimeError as err:
                    log.warning("skipped unreadable image %s: the device decoder failed (%s)", names[i], err)
                    decoded.append(None)
        for i, image in zip(jpegs, decoded, strict=True):
            images[i] = image
    kept = [i for i, image in enumerate(images) if image is not None]
    if not kept:
        raise BadImageError(f"data.gpu_decode: no image of the batch decodes ({', '.join(names)})")
    plans = [Crop.from_tensor(c) for c in crops]  # a host tensor: no device sync
    return torch.stack([apply_crop(images[i].to(device, non_blocking=True), plans[i]) for i in kept]), kept
