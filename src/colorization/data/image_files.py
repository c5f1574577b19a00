"""Reading one image file safely: a decoded uint8 (3, H, W) image, or its bytes when the device will decode it.

Shared by the loader datasets (``data.datasets``) and the device-side decoding (``data.gpu_jpeg``). Anything that
is not a sane image (corrupt, truncated, empty, another format under an image extension, a decompression bomb)
raises ``BadImageError`` naming the file, so the datasets can skip, count and name it.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps


class BadImageError(ValueError):
    """A file that cannot be used as an image; the message names it (``name``: the file alone)."""

    def __init__(self, message: str, name: str | None = None):
        super().__init__(message)
        self.name = name or message


def set_max_pixels(max_pixels: int, key: str = "max_pixels") -> None:
    """The largest image (in pixels) that ``load_image`` reads, for this process and the loader workers it starts;
    PIL's ``Image.MAX_IMAGE_PIXELS`` (89,478,485 by default), which Python callers may set directly."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        from colorization.errors import ConfigError

        raise ConfigError(f"{key}={max_pixels} must be a positive integer (pixels)")
    Image.MAX_IMAGE_PIXELS = max_pixels


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


def load_image(source: str | Path | bytes | io.IOBase, name: str | None = None) -> torch.Tensor:
    """Decode an image file (a path, bytes or a file object) -> uint8 (3, H, W).

    Raises BadImageError naming the file for anything that is not a sane image: corrupt, truncated or empty
    files, other formats with an image extension, and decompression bombs (more than Image.MAX_IMAGE_PIXELS
    pixels: PIL only warns below twice that, we refuse, so a header cannot make a worker allocate gigabytes).
    """
    name = name or (str(source) if isinstance(source, str | Path) else "<image bytes>")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                return to_rgb_tensor(image)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, EOFError, ... on malformed files
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise BadImageError(f"{name}: {reason}", name) from err


_EXIF_ORIENTATION = 0x0112


def jpeg_is_complete(raw: bytes) -> bool:
    """Whether a JPEG ends its last scan with an end-of-image marker: a truncated file does not (libjpeg would
    fill the missing rows with gray and only warn). Marker bytes cannot occur inside a scan (0xFF is stuffed)."""
    return raw.rfind(b"\xff\xd9") > raw.rfind(b"\xff\xda") > 0


def encoded_image_with_size(
    source: bytes | str | Path | dict, name: str | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """A file path, its bytes, or a Hugging Face image cell ({"bytes", "path"}) -> (bytes or decoded image, (H, W)).

    A baseline RGB or gray JPEG without EXIF rotation stays its bytes (uint8, 1-D; its size from the header);
    anything else is decoded here. Raises BadImageError naming the file for what ``load_image`` refuses: not an
    image, a decompression bomb (from the header: more than Image.MAX_IMAGE_PIXELS pixels), a truncated JPEG."""
    if isinstance(source, dict):
        source = source.get("bytes") or source["path"]
    name = name or (str(source) if isinstance(source, str | Path) else "<image bytes>")
    try:
        raw = Path(source).read_bytes() if isinstance(source, str | Path) else bytes(source)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as image:  # reads the header only (and checks its size)
                plain = image.mode in ("RGB", "L") and image.getexif().get(_EXIF_ORIENTATION, 1) == 1
                if image.format == "JPEG" and plain:
                    if not jpeg_is_complete(raw):
                        raise ValueError("truncated JPEG (no end-of-image marker after its last scan)")
                    return torch.frombuffer(bytearray(raw), dtype=torch.uint8), (image.height, image.width)
                decoded = to_rgb_tensor(image)
                return decoded, (decoded.shape[1], decoded.shape[2])
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, EOFError, ... on malformed files
        raise BadImageError(f"{name}: {' '.join(f'{type(err).__name__}: {err}'.split())}", name) from err


def encoded_image(source: bytes | str | Path | dict, name: str | None = None) -> torch.Tensor:
    """``encoded_image_with_size`` without the size: the JPEG bytes, or the decoded image."""
    return encoded_image_with_size(source, name)[0]
