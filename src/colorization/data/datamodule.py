"""The LightningDataModule: one of three image sources, uint8 crops out of the workers.

Lab conversion, the 1/4-resolution ab targets, soft encoding, rebalancing weights and the gray mask
are computed on the device by the LightningModule (``on_after_batch_transfer``), which owns the bins
and the prior; the data side only ever ships uint8.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from colorization.data.datasets import (
    ON_ERROR,
    FixedCrops,
    HFImages,
    HFImageStream,
    ImageFiles,
    InMemoryCrops,
    ResizeAtLeast,
    load_image,
    readable,
    train_transform,
    val_transform,
)
from colorization.data.sources import ConfigError, class_of, folder_split, sample_split

SOURCES = ("samples", "folder", "hf")


class ColorizationDataModule(L.LightningDataModule):
    def __init__(
        self,
        source: str = "samples",
        crop_size: int = 176,
        resize: int | None = 256,
        batch_size: int = 40,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        prefetch_factor: int | None = 2,
        seed: int = 0,
        on_error: str = "skip",  # a bad image file: "skip" (counted, logged) or "raise"
        # samples
        train_crops: int = 1000,
        val_crops: int = 256,
        # folder
        root: str | None = None,
        val_root: str | None = None,
        val_size: int = 256,
        labels: bool = False,
        # hf
        path: str | None = None,
        name: str | None = None,
        data_dir: str | None = None,
        split: str = "train",
        val_split: str | None = None,
        streaming: bool = False,
        image_column: str = "image",
        label_column: str | None = None,
        # crops must be a multiple of this: 8 for the colorization networks; linear probes take 227 (1)
        crop_multiple: int = 8,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.validate()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def validate(self) -> None:
        """Cheap checks of every key, before any data is touched."""
        hp = self.hparams
        if hp.source not in SOURCES:
            raise ConfigError(f"data.source={hp.source!r} is not one of {SOURCES}")
        if hp.crop_size <= 0 or hp.crop_size % hp.crop_multiple:
            raise ConfigError(
                f"data.crop_size={hp.crop_size}: the network needs a positive multiple of {hp.crop_multiple}"
            )
        if hp.batch_size <= 0:
            raise ConfigError(f"data.batch_size={hp.batch_size} must be > 0")
        if hp.on_error not in ON_ERROR:
            raise ConfigError(f"data.on_error={hp.on_error!r} is not one of {ON_ERROR}")
        self._folder_split = None
        if hp.source == "folder":  # listing the files is needed anyway; an empty folder fails here, early
            self._folder_split = folder_split(hp.root, hp.val_root, hp.val_size, hp.seed, hp.labels, usable=readable)
        if hp.source == "hf" and not hp.path:
            raise ConfigError("data.path is not set: a Hugging Face dataset name, or a builder such as imagefolder")

    # ---- datasets ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        train_tf = train_transform(hp.crop_size, hp.resize)
        val_tf = val_transform(hp.crop_size, hp.resize)
        if hp.source == "samples":
            split = sample_split()
            decode = lambda files: [ResizeAtLeast(hp.crop_size, hp.resize)(load_image(f)) for f in files]  # noqa: E731
            self.train_set = InMemoryCrops(decode(split.train), train_transform(hp.crop_size), hp.train_crops)
            self.val_set = FixedCrops(decode(split.val), hp.val_crops, hp.crop_size, seed=hp.seed)
        elif hp.source == "folder":
            split = self._folder_split
            train_labels = val_labels = None
            if split.classes is not None:
                index = {c: i for i, c in enumerate(split.classes)}
                root, val_root = Path(hp.root).expanduser(), Path(hp.val_root or hp.root).expanduser()
                train_labels = [index[class_of(f, root)] for f in split.train]
                val_labels = [index.get(class_of(f, val_root), -1) for f in split.val]
            self.classes = split.classes
            self.train_set = ImageFiles(split.train, train_tf, train_labels, hp.on_error)
            self.val_set = ImageFiles(split.val, val_tf, val_labels, hp.on_error)
        else:
            self.train_set, self.val_set = self._hf_sets(train_tf, val_tf)

    def _hf_sets(self, train_tf, val_tf):
        import datasets

        hp = self.hparams
        load = lambda split: datasets.load_dataset(  # noqa: E731
            hp.path, hp.name, data_dir=hp.data_dir, split=split, streaming=hp.streaming
        )
        train = load(hp.split)
        if hp.val_split:
            val = load(hp.val_split)
        elif hp.streaming:
            train, val = train.skip(hp.val_size), train.take(hp.val_size)
        else:
            if len(train) <= hp.val_size:
                raise ConfigError(f"data.val_size={hp.val_size}: the split {hp.split!r} has only {len(train)} examples")
            train, val = train.select(range(hp.val_size, len(train))), train.select(range(hp.val_size))
        wrap = HFImageStream if hp.streaming else HFImages
        return (
            wrap(train, train_tf, hp.image_column, hp.label_column, hp.on_error),
            wrap(val, val_tf, hp.image_column, hp.label_column, hp.on_error),
        )

    # ---- loaders -----------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        hp = self.hparams
        workers = hp.num_workers
        streaming = isinstance(dataset, torch.utils.data.IterableDataset)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and not streaming,
            drop_last=train,
            num_workers=workers,
            pin_memory=hp.pin_memory and torch.cuda.is_available(),
            persistent_workers=hp.persistent_workers and workers > 0,
            prefetch_factor=hp.prefetch_factor if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.hparams.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.hparams.val_batch_size or self.hparams.batch_size, train=False)

    def ab_batches(self, max_batches: int = 50):
        """Training crops as uint8 batches, for estimating the prior (a fixed number of batches)."""
        loader = self._loader(self.train_set, self.hparams.batch_size, train=False)
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            yield batch["image"]
