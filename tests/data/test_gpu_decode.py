"""data.gpu_decode: workers ship JPEG bytes, the batch is decoded and cropped on the device. On a CPU the
same path runs with libjpeg, so it is checked here against the PIL path of the loader workers; the CUDA
(nvJPEG) comparison runs where a GPU is present."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from PIL import Image

from colorization.data import FolderDataModule, HFDataModule
from colorization.data.datasets import BadImageError, ImageFiles, collate, load_image, skipped_files, val_transform
from colorization.data.gpu_jpeg import EncodedFiles, decode_batch, encoded_image
from helpers.hostile_files import png_with_header


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Real photos as JPEG files (4:2:0, quality 90), two of them in a class folder each."""
    root = tmp_path_factory.mktemp("jpegs")
    for i, name in enumerate(("astronaut", "coffee", "chelsea", "rocket")):
        (root / f"c{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(getattr(skimage.data, name)()).save(root / f"c{i % 2}" / f"{name}.jpg", quality=90)
    return root


def test_worker_ships_baseline_jpeg_bytes_and_decodes_everything_else(photos, tmp_path):
    jpeg = photos / "c0" / "astronaut.jpg"
    payload = encoded_image(jpeg)
    assert payload.ndim == 1 and bytes(payload.numpy()) == jpeg.read_bytes()
    rgb = np.asarray(Image.open(jpeg))
    cases = {}
    Image.fromarray(rgb).save(cases.setdefault("png", tmp_path / "a.png"))
    Image.fromarray(rgb).convert("CMYK").save(cases.setdefault("cmyk", tmp_path / "cmyk.jpg"), quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(rgb).save(cases.setdefault("rotated", tmp_path / "rot.jpg"), quality=95, exif=exif)
    for name, path in cases.items():
        payload = encoded_image(path)
        assert payload.ndim == 3, name
        assert torch.equal(payload, load_image(path)), name  # exactly what a worker does without the option
    assert encoded_image(cases["rotated"]).shape[1:] == rgb.shape[1::-1]  # rotated: H and W swap
    hf_cell = {"bytes": jpeg.read_bytes(), "path": None}
    assert torch.equal(encoded_image(hf_cell), encoded_image(jpeg))


def test_batched_decode_matches_the_worker_path(photos):
    files = sorted(photos.rglob("*.jpg"))
    transform = val_transform(64, 96)
    reference = torch.stack([ImageFiles(files, transform)[i]["image"] for i in range(len(files))])
    batch = collate([EncodedFiles(files, transform)[i] for i in range(len(files))])
    images, kept = decode_batch(batch["data"], "cpu", batch["crop"])
    assert kept == list(range(len(files))) and images.dtype == torch.uint8 and images.shape == reference.shape
    diff = (images.int() - reference.int()).abs().float()
    assert diff.mean() < 1.0 and diff.max() <= 8  # libjpeg in torchvision vs in Pillow: same decoder family


def bad_huffman_table(raw: bytes) -> bytes:
    """A JPEG whose first Huffman table claims 16 x 255 codes: its header reads fine, the decoder refuses it."""
    at = raw.index(b"\xff\xc4") + 5  # marker, 2 length bytes, table class / id: then the 16 code counts
    return raw[:at] + b"\xff" * 16 + raw[at + 16 :]


def test_a_truncated_jpeg_is_skipped_in_the_worker_and_named(photos, tmp_path, caplog):
    good = sorted(photos.rglob("*.jpg"))[0]
    raw = good.read_bytes()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(raw[: len(raw) // 3])  # a valid header, then the file ends
    Image.open(io.BytesIO(broken.read_bytes()))  # PIL's header check passes, libjpeg would fill it with gray
    with pytest.raises(BadImageError, match="broken.jpg: .*truncated JPEG"):
        encoded_image(broken)
    dataset = EncodedFiles([broken, good], val_transform(32, 48), labels=[0, 1])
    with caplog.at_level(logging.WARNING):
        item = dataset[0]  # served by another file, and the skipped one named (SkippedImages counts it)
    assert item["label"] == 1 and item["skipped"] == str(broken)
    assert f"skipped unreadable image {broken}" in caplog.text
    bomb = tmp_path / "bomb.png"
    png_with_header(bomb, 10_000, 10_000)  # 100 M pixels: PIL only warns; refused as on the CPU path
    with pytest.raises(BadImageError, match="bomb.png"):
        encoded_image(bomb)
    with pytest.raises(BadImageError, match="notes.jpg"):
        (tmp_path / "notes.jpg").write_text("not a photo")
        encoded_image(tmp_path / "notes.jpg")


def test_a_jpeg_the_device_decoder_refuses_is_dropped_with_its_label_and_named(photos, tmp_path, caplog):
    good = sorted(photos.rglob("*.jpg"))[:2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(bad_huffman_table(good[0].read_bytes()))
    dataset = EncodedFiles([good[0], broken, good[1]], val_transform(32, 48), labels=[0, 1, 2])
    batch = collate([dataset[i] for i in range(3)])
    assert batch["data"][1].ndim == 1  # it passed the worker's checks: its bytes travel to the decoder
    dm = FolderDataModule(root=str(photos), crop_size=32, resize=48, gpu_decode=True)
    dm.setup("fit")
    with caplog.at_level(logging.WARNING):
        out = dm.on_before_batch_transfer(batch)
    assert out["image"].shape == (2, 3, 32, 32) and out["label"].tolist() == [0, 2]
    assert skipped_files(out) == [str(broken)]  # counted by callbacks.SkippedImages
    assert f"skipped unreadable image {broken}: the device decoder failed" in caplog.text


@pytest.mark.parametrize("source", ["folder", "hf"])
def test_datamodule_with_gpu_decode_gives_the_same_batches_as_without(photos, source):
    kwargs = dict(crop_size=64, resize=96, batch_size=2, num_workers=0, val_size=2)
    if source == "folder":
        kwargs.update(source="folder", root=str(photos), labels=True)
    else:
        kwargs.update(source="hf", path="imagefolder", data_dir=str(photos), label_column="label")
    make = {"folder": FolderDataModule, "hf": HFDataModule}[kwargs.pop("source")]
    plain, fast = make(**kwargs), make(**kwargs, gpu_decode=True)
    for dm in (plain, fast):
        dm.setup("fit")
    a = plain.on_before_batch_transfer(next(iter(plain.val_dataloader())))
    b = fast.on_before_batch_transfer(next(iter(fast.val_dataloader())))
    assert torch.equal(a["label"], b["label"])
    assert (a["image"].int() - b["image"].int()).abs().float().mean() < 1.0
    train = fast.on_before_batch_transfer(next(iter(fast.train_dataloader())))  # random crops, decoded here
    assert train["image"].shape == (2, 3, 64, 64) and train["image"].dtype == torch.uint8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvjpeg_on_the_gpu_matches_the_cpu_decode(photos):
    files = sorted(photos.rglob("*.jpg"))
    batch = collate([EncodedFiles(files, val_transform(64, 96))[i] for i in range(len(files))])
    cpu, _ = decode_batch(batch["data"], "cpu", batch["crop"])
    gpu, _ = decode_batch(batch["data"], "cuda", batch["crop"])
    assert gpu.device.type == "cuda"
    assert (gpu.cpu().int() - cpu.int()).abs().float().mean() < 1.5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_fast_preset_trains_from_jpeg_files(photos, tmp_path):
    """trainer=gpu_fast end to end: bf16 autocast, channels_last, torch.compile, nvJPEG decoding."""
    from colorization.train import train
    from helpers.config import TINY, compose

    overrides = [o for o in TINY if not o.startswith(("data.val_crops", "trainer.accelerator"))]
    cfg = compose(
        [*overrides, "trainer=gpu_fast", "data=folder", f"data.root={photos}", "trainer.max_steps=3"], tmp_path
    )
    trainer = train(cfg)
    assert trainer.global_step == 3 and torch.isfinite(trainer.callback_metrics["train/loss"])
