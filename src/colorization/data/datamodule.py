"""The LightningDataModule: one of three image sources, uint8 crops out of the workers.

Lab conversion, the 1/4-resolution ab targets, soft encoding, rebalancing weights and the gray mask
are computed on the device by the LightningModule (``on_after_batch_transfer``), which owns the bins
and the prior; the data side only ever ships uint8 (or, with ``gpu_decode``, the JPEG bytes, decoded
and cropped on the device in ``on_before_batch_transfer``).

Several processes (DDP): ``batch_size`` is the global batch, split evenly over the ranks. Map-style
sources get Lightning's DistributedSampler; streams are split by rank (``split_dataset_by_node``) and
read through a resumable StreamLoader that gives every rank ``batches_per_epoch`` batches.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from colorization.data.datasets import (
    ON_ERROR,
    SKIPPED,
    SKIPPED_SEP,
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
from colorization.data.gpu_jpeg import EncodedFiles, collate_encoded, decode_batch
from colorization.data.loaders import StreamLoader, per_rank_batch
from colorization.data.sources import class_labels, folder_split, load_hf_split, sample_split
from colorization.errors import ConfigError

log = logging.getLogger(__name__)

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
        index: str | None = None,
        # hf
        path: str | None = None,
        name: str | None = None,
        data_dir: str | None = None,
        split: str = "train",
        val_split: str | None = None,
        streaming: bool = False,
        image_column: str = "image",
        label_column: str | None = None,
        # speed and scale
        gpu_decode: bool = False,
        batches_per_epoch: int | None = None,
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
        if hp.crop_size <= 0:
            raise ConfigError(f"data.crop_size={hp.crop_size} must be > 0")
        if hp.batch_size <= 0:
            raise ConfigError(f"data.batch_size={hp.batch_size} must be > 0")
        if hp.on_error not in ON_ERROR:
            raise ConfigError(f"data.on_error={hp.on_error!r} is not one of {ON_ERROR}")
        self.file_split = None  # folder: the train / validation files and the classes, listed once (data.index)
        if hp.source == "folder":  # listing the files is needed anyway; an empty folder fails here, early
            self.file_split = folder_split(
                hp.root, hp.val_root, hp.val_size, hp.seed, hp.labels, usable=readable, index=hp.index
            )
        if hp.source == "hf" and not hp.path:
            raise ConfigError("data.path is not set: a Hugging Face dataset name, or a builder such as imagefolder")
        if hp.batches_per_epoch is not None and hp.batches_per_epoch < 1:
            raise ConfigError(f"data.batches_per_epoch={hp.batches_per_epoch} must be >= 1 (or null)")

    def check_world_size(self, world_size: int) -> None:
        """Before any process starts: the global batches split evenly, and a stream knows its epoch length."""
        hp = self.hparams
        per_rank_batch(hp.batch_size, world_size)
        if hp.val_batch_size:
            per_rank_batch(hp.val_batch_size, world_size, "data.val_batch_size")
        if world_size > 1 and hp.source == "hf" and hp.streaming and hp.batches_per_epoch is None:
            raise ConfigError(
                "data.batches_per_epoch is not set: a stream read by several processes needs the same number "
                "of batches on every rank (e.g. examples per epoch // data.batch_size)"
            )

    def train_size(self) -> int | None:
        """How many training examples there are, where known before reading them (None for a stream)."""
        hp = self.hparams
        if hp.source == "samples":
            return hp.train_crops
        if hp.source == "folder":
            return len(self.file_split.train)
        if hp.streaming:
            return None
        self.setup("fit")  # a map-style Hugging Face dataset: its length is in its metadata
        return len(self.train_set)

    def check_not_empty(self, world_size: int = 1) -> None:
        """Fail before any work when the training loader (which drops the last partial batch) makes no batch."""
        n = self.train_size()
        batch = per_rank_batch(self.hparams.batch_size, world_size)
        if n is None or -(-n // world_size) >= batch:  # the distributed sampler pads each rank to ceil(n / world)
            return
        where = {"folder": f" in data.root={self.hparams.root}", "hf": f" in data.path={self.hparams.path}"}
        spread = f" over {world_size} processes" if world_size > 1 else ""
        raise ConfigError(
            f"data.batch_size={self.hparams.batch_size} is larger than the {n} training images"
            f"{where.get(self.hparams.source, '')}{spread}: no training batch (lower data.batch_size, or add images)"
        )

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    # ---- datasets ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        train_tf = train_transform(hp.crop_size, hp.resize)
        val_tf = val_transform(hp.crop_size, hp.resize)
        self.device_transforms = {"train": train_tf, "val": val_tf}  # data.gpu_decode: applied on the device
        if hp.gpu_decode and hp.source == "samples":
            log.info("data.gpu_decode: the sample photos are decoded once, in memory; nothing to decode on the device")
        if hp.source == "samples":
            split = sample_split()
            decode = lambda files: [ResizeAtLeast(hp.crop_size, hp.resize)(load_image(f)) for f in files]  # noqa: E731
            self.train_set = InMemoryCrops(decode(split.train), train_transform(hp.crop_size), hp.train_crops)
            self.val_set = FixedCrops(decode(split.val), hp.val_crops, hp.crop_size, seed=hp.seed)
        elif hp.source == "folder":
            split = self.file_split
            train_labels = val_labels = None
            if split.classes is not None:
                root, val_root = Path(hp.root).expanduser(), Path(hp.val_root or hp.root).expanduser()
                train_labels = class_labels(split.train, root, split.classes)
                val_labels = class_labels(split.val, val_root, split.classes, unknown=-1)
            self.classes = split.classes
            if hp.gpu_decode:
                self.train_set = EncodedFiles(split.train, train_labels, hp.on_error)
                self.val_set = EncodedFiles(split.val, val_labels, hp.on_error)
            else:
                self.train_set = ImageFiles(split.train, train_tf, train_labels, hp.on_error)
                self.val_set = ImageFiles(split.val, val_tf, val_labels, hp.on_error)
        else:
            self.train_set, self.val_set = self._hf_sets(train_tf, val_tf)

    def _hf_sets(self, train_tf, val_tf):
        hp = self.hparams

        def load(split):
            encoded = hp.image_column if hp.gpu_decode else None  # ship the encoded bytes
            return load_hf_split(hp.path, hp.name, hp.data_dir, split, hp.streaming, encoded)

        train = load(hp.split)
        if hp.val_split:
            val = load(hp.val_split)
        elif hp.streaming:
            # exact for image folders (one example per shard); with multi-example shards split over workers or
            # ranks, datasets spreads the skip over the shards: prefer data.val_split there
            train, val = train.skip(hp.val_size), train.take(hp.val_size)
        else:
            if len(train) <= hp.val_size:
                raise ConfigError(f"data.val_size={hp.val_size}: the split {hp.split!r} has only {len(train)} examples")
            train, val = train.select(range(hp.val_size, len(train))), train.select(range(hp.val_size))
        wrap = HFImageStream if hp.streaming else HFImages
        return (
            wrap(train, train_tf, hp.image_column, hp.label_column, hp.on_error, hp.gpu_decode),
            wrap(val, val_tf, hp.image_column, hp.label_column, hp.on_error, hp.gpu_decode),
        )

    # ---- loaders -----------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_size: int, train: bool, crops: str | None = None, **stream) -> DataLoader:
        """crops: "train" (random) or "val" (center): which crops data.gpu_decode makes on the device."""
        hp = self.hparams
        crops = crops or ("train" if train else "val")
        workers = hp.num_workers
        streaming = isinstance(dataset, torch.utils.data.IterableDataset)
        options = dict(
            batch_size=batch_size,
            drop_last=train,
            num_workers=workers,
            pin_memory=hp.pin_memory and torch.cuda.is_available(),
            persistent_workers=hp.persistent_workers and workers > 0,
            prefetch_factor=hp.prefetch_factor if workers > 0 else None,
            collate_fn=functools.partial(collate_encoded, crops=crops)
            if hp.gpu_decode and hp.source != "samples"
            else None,
        )
        if streaming:
            return StreamLoader(dataset, **options, **stream)
        return DataLoader(dataset, shuffle=train, **options)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        batch_size = per_rank_batch(self.hparams.batch_size, world)
        if not isinstance(self.train_set, HFImageStream):
            return self._loader(self.train_set, batch_size, train=True)
        stream = self.train_set
        if world > 1:
            from datasets.distributed import split_dataset_by_node

            part = split_dataset_by_node(stream.dataset, rank=rank, world_size=world)
            stream = HFImageStream(
                part, stream.transform, stream.image_column, stream.label_column, stream.on_error, stream.encoded
            )
        self._train_stream = self._loader(stream, batch_size, train=True, batches=self.hparams.batches_per_epoch)
        return self._train_stream

    def val_dataloader(self) -> DataLoader:
        batch_size = self.hparams.val_batch_size or self.hparams.batch_size
        key = "data.val_batch_size" if self.hparams.val_batch_size else "data.batch_size"
        return self._loader(self.val_set, per_rank_batch(batch_size, self._rank_world()[1], key), train=False)

    # ---- on the way to the device ------------------------------------------------------------
    def on_before_batch_transfer(self, batch, dataloader_idx: int = 0):
        trainer = self.trainer
        stream = getattr(self, "_train_stream", None)
        if trainer is not None and trainer.training and stream is not None:
            stream.took_batch()  # the stream's saved position follows the batches actually trained on
        if isinstance(batch, dict) and "data" in batch:  # data.gpu_decode
            device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
            transform = self.device_transforms[batch.pop("crops")]
            data, names = batch.pop("data"), batch.pop("file", None)
            images, kept = decode_batch(data, device, transform, names)
            # tensors (labels) and lists (the skipped-file names) alike keep the decodable images' entries
            batch = {k: [v[i] for i in kept] if isinstance(v, list) else v[kept] for k, v in batch.items()}
            batch["image"] = images
            if len(kept) < len(data):  # the files the device decoder refused are skipped files too (counted)
                failed = [names[i] if names else f"image {i} of the batch" for i in range(len(data)) if i not in kept]
                batch[SKIPPED] = [*batch.get(SKIPPED, []), SKIPPED_SEP.join(failed)]
        return batch

    def sample_batches(self, images: int | None, seed: int, buffer: int = 10_000):
        """uint8 batches of a uniform random sample of ``images`` training images (random training crops), drawn
        from the whole training set: seeded indices for folder, sample and non-streaming Hugging Face sources
        (all of them when ``images`` is None or larger); for streams, the first ``images`` examples of the stream
        shuffled with a buffer of ``buffer`` examples (``datasets``' shuffle: shards in random order, then a
        buffer). For the prior (``color.prior=estimate``) and the data-dependent init (``model.init``)."""
        train = self.train_set
        if isinstance(train, HFImageStream):
            stream = train.dataset.shuffle(seed=seed, buffer_size=buffer)
            dataset = HFImageStream(
                stream if images is None else stream.take(images),
                train.transform,
                train.image_column,
                train.label_column,
                train.on_error,
                train.encoded,
            )
        else:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
            dataset = torch.utils.data.Subset(train, order if images is None else order[:images])
        for batch in self._loader(dataset, self.hparams.batch_size, train=False, crops="train"):
            yield self.on_before_batch_transfer(batch)["image"]
