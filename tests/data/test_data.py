"""The three image sources, with real files: bundled photos, a nested folder, and `datasets` from local files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from colorization.data import FolderDataModule, HFDataModule, SamplesDataModule
from colorization.data.datasets import ResizeAtLeast, load_image
from colorization.data.sources import SAMPLE_TRAIN, SAMPLE_VAL, sample_photo_dir
from colorization.errors import ConfigError


def _is_window(crop: np.ndarray, image: np.ndarray) -> bool:
    """Brute force: does crop (h, w, 3) appear in image at some offset, as is or mirrored?"""
    h, w = crop.shape[:2]
    for candidate in (crop, crop[:, ::-1]):
        tops, lefts = np.nonzero((image[: image.shape[0] - h + 1, : image.shape[1] - w + 1] == candidate[0, 0]).all(-1))
        if any(np.array_equal(image[t : t + h, x : x + w], candidate) for t, x in zip(tops, lefts, strict=True)):
            return True
    return False


def test_sample_photos_are_bundled_and_split_into_train_and_held_out():
    names = set(SAMPLE_TRAIN) | set(SAMPLE_VAL)
    assert not set(SAMPLE_TRAIN) & set(SAMPLE_VAL)
    for name in names:
        image = np.asarray(Image.open(sample_photo_dir() / name))
        assert image.ndim == 3 and image.shape[2] >= 3, name  # color photographs


def test_sample_source_gives_uint8_crops_of_the_real_photos():
    dm = SamplesDataModule(crop_size=32, resize=64, batch_size=4, num_workers=0, train_crops=8)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))["image"]
    assert batch.dtype == torch.uint8 and batch.shape == (4, 3, 32, 32)
    assert len(dm.train_dataloader()) == 2  # train_crops / batch_size
    resized = [ResizeAtLeast(32, 64)(load_image(sample_photo_dir() / n)).permute(1, 2, 0).numpy() for n in SAMPLE_TRAIN]
    for crop in batch.permute(0, 2, 3, 1).numpy():
        # every crop is a window, possibly mirrored, of one of the training photos resized to 64
        assert any(_is_window(crop, p) for p in resized)


def test_sample_validation_set_is_fixed_and_held_out():
    make = lambda: SamplesDataModule(crop_size=32, resize=64, num_workers=0, val_crops=6)  # noqa: E731
    a, b = make(), make()
    a.setup(), b.setup()
    assert len(a.val_set) == 6
    assert all(torch.equal(a.val_set[i]["image"], b.val_set[i]["image"]) for i in range(6))
    resized = [ResizeAtLeast(32, 64)(load_image(sample_photo_dir() / n)).permute(1, 2, 0).numpy() for n in SAMPLE_VAL]
    crop = a.val_set[0]["image"].permute(1, 2, 0).numpy()
    assert _is_window(crop, resized[0])


@pytest.fixture
def photo_folder(tmp_path):
    """An ImageNet-like nested folder of real JPEG/PNG photos, two classes, plus a non-image file."""
    photos = {"cat": skdata.chelsea(), "coffee": skdata.coffee()}
    for cls, image in photos.items():
        (tmp_path / "train" / cls / "nested").mkdir(parents=True)
        for i in range(5):
            crop = image[i * 20 : i * 20 + 120, i * 30 : i * 30 + 150]
            path = tmp_path / "train" / cls / ("nested" if i % 2 else "") / f"{cls}_{i}.{'jpg' if i % 2 else 'png'}"
            Image.fromarray(crop).save(path)
    (tmp_path / "train" / "README.txt").write_text("not an image")
    return tmp_path / "train"


def test_folder_source_lists_recursively_and_holds_out_a_fixed_split(photo_folder):
    dm = FolderDataModule(
        root=str(photo_folder),
        crop_size=32,
        resize=64,
        batch_size=2,
        num_workers=0,
        val_size=256,
        labels=True,
    )
    dm.setup()
    train, val = dm.train_set.files, dm.val_set.files
    assert len(train) + len(val) == 10 and len(val) == 1 and not set(train) & set(val)
    again = FolderDataModule(root=str(photo_folder), crop_size=32, num_workers=0)
    again.setup()
    assert again.val_set.files == val  # the hold-out does not change between runs
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (2, 3, 32, 32)
    assert dm.classes == ["cat", "coffee"]
    labels = {f.name: label for f, label in zip(dm.train_set.files, dm.train_set.labels, strict=True)}
    assert all(labels[n] == (0 if n.startswith("cat") else 1) for n in labels)


def test_folder_source_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.root"):
        FolderDataModule(root=str(tmp_path / "missing")).check_not_empty()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"data\.root=.*no image files"):
        FolderDataModule(root=str(tmp_path / "empty")).check_not_empty()
    with pytest.raises(ConfigError, match=r"data\.crop_size"):
        SamplesDataModule(crop_size=0)  # (the network's multiple is checked by train: model.arch decides)
    with pytest.raises(ConfigError, match=r"data\.source='ftp': this DataModule \(FolderDataModule\) reads 'folder'"):
        FolderDataModule(source="ftp", root=str(tmp_path))


@pytest.fixture
def flat_class_folder(photo_folder, tmp_path):
    """The same photos as class/file (the layout from which `datasets`' imagefolder infers labels)."""
    root = tmp_path / "flat"
    for f in photo_folder.rglob("*.*g"):
        (root / f.relative_to(photo_folder).parts[0]).mkdir(parents=True, exist_ok=True)
        (root / f.relative_to(photo_folder).parts[0] / f.name).write_bytes(f.read_bytes())
    return root


def imagefolder(root, **options) -> HFDataModule:
    """``data=hf data.path=imagefolder data.data_dir=root``, small: 32 x 32 crops, batches of 2, 2 held out."""
    return HFDataModule(
        **{"path": "imagefolder", "data_dir": str(root), "crop_size": 32, "num_workers": 0}
        | {"batch_size": 2, "val_size": 2, **options}
    )


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_source_loads_a_local_imagefolder(flat_class_folder, streaming):
    dm = imagefolder(flat_class_folder, streaming=streaming, resize=64, batch_size=3, label_column="label")
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (3, 3, 32, 32)
    assert set(batch["label"].tolist()) <= {0, 1}
    val_images = [b["image"] for b in dm.val_dataloader()]
    assert sum(len(v) for v in val_images) == 2


def test_hf_source_names_a_wrong_image_column(photo_folder):
    dm = imagefolder(photo_folder, image_column="picture")
    dm.setup()
    with pytest.raises(KeyError, match="data.image_column"):
        next(iter(dm.train_dataloader()))
