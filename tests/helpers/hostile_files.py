"""Files a stranger could hand us: broken images, image bombs, a checkpoint that runs code when unpickled."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import skimage
import torch
from PIL import Image

EXIF_ORIENTATION = 0x0112


# ---- the corpus ------------------------------------------------------------------------------------
def png_with_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width x height but holds almost no pixel data (a decompression bomb)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def make_corpus(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """(good or convertible files, bad files), by kind. Photos are cut to 64 x 96 to keep tests fast."""
    root.mkdir(parents=True, exist_ok=True)
    chelsea = skimage.data.chelsea()[::3, ::3][:64, :96].copy()
    astronaut = skimage.data.astronaut()[::5, ::5][:64, :96].copy()
    coffee = skimage.data.coffee()[::5, ::5][:64, :96].copy()
    gray = (skimage.color.rgb2gray(coffee) * 255).astype(np.uint8)
    good = {k: root / n for k, n in [("rgb_jpeg", "astronaut.jpg"), ("rgb_png", "chelsea.png")]}
    Image.fromarray(astronaut).save(good["rgb_jpeg"], quality=95)
    Image.fromarray(chelsea).save(good["rgb_png"])
    odd = {
        "cmyk": root / "cmyk.jpg",
        "palette": root / "palette.png",
        "rgba": root / "rgba.png",
        "la": root / "gray_alpha.png",
        "gray16": root / "gray16.png",
        "gray": root / "gray.png",
        "exif": root / "rotated.jpg",
        "tiny": root / "tiny.png",
        "gif": root / "animated.gif",
    }
    Image.fromarray(coffee).convert("CMYK").save(odd["cmyk"], quality=95)
    Image.fromarray(chelsea).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(odd["palette"])
    alpha = np.tile(np.linspace(0, 255, 96).astype(np.uint8), (64, 1))
    Image.fromarray(np.dstack([astronaut, alpha])).save(odd["rgba"])
    Image.fromarray(np.dstack([gray, alpha])).save(odd["la"])
    Image.fromarray(gray.astype(np.uint16) * 257).save(odd["gray16"])  # mode I;16
    Image.fromarray(gray).save(odd["gray"])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(chelsea).save(odd["exif"], quality=95, exif=exif)
    Image.fromarray(astronaut[:8, :8]).save(odd["tiny"])
    frames = [Image.new("RGB", (40, 24), color) for color in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(odd["gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    bad = {
        "truncated": root / "truncated.jpg",
        "empty": root / "empty.jpg",
        "text": root / "notes.jpg",
        "garbage": root / "garbage.png",
        "bomb": root / "bomb.png",
        "bomb_warn": root / "bomb_warn.png",
    }
    data = good["rgb_jpeg"].read_bytes()
    bad["truncated"].write_bytes(data[: len(data) // 2])
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("these are my holiday notes, not a photo\n")
    bad["garbage"].write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(2000))
    png_with_header(bad["bomb"], 20_000, 20_000)  # 400 M pixels: PIL raises (> 2 x MAX_IMAGE_PIXELS)
    png_with_header(bad["bomb_warn"], 10_000, 10_000)  # 100 M pixels: PIL only warns; we refuse
    return {**good, **odd}, bad


# ---- untrusted checkpoints -----------------------------------------------------------------------------------
class _RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"x": _RunsCode(marker)}}, path)
    return path


