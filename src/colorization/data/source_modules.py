"""The four image sources, one DataModule each (``conf/data/<source>.yaml`` targets it): the sets each makes, and
its loaders where they differ from the base's (``data/datamodule.py``: crops, batches, resumable loaders, hooks)."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import torch
from torch.utils.data import Dataset

from colorization.data.crops import train_transform
from colorization.data.datamodule import ColorizationDataModule
from colorization.data.datasets import (
    FixedCrops,
    HFImages,
    HFImageStream,
    ImageFiles,
    InMemoryCrops,
    ResizeAtLeast,
    load_image,
    readable,
)
from colorization.data.gpu_jpeg import EncodedFiles
from colorization.data.loaders import ResumableLoader
from colorization.data.sources import FileSplit, class_labels, folder_split, load_hf_split, sample_split
from colorization.errors import ConfigError

log = logging.getLogger(__name__)


class SamplesDataModule(ColorizationDataModule):
    """The bundled sample photos, decoded once in the main process: workers only crop (``train_crops`` random crops
    per epoch; ``val_crops`` fixed, seeded crops of the two held-out photos)."""

    source = "samples"

    def __init__(self, train_crops: int = 1000, val_crops: int = 256, **common):
        super().__init__(**common)
        if self.hparams.labels:
            raise ConfigError("data.labels=true: the sample photos have no labels (use a labeled folder or data=hf)")
        if self.hparams.gpu_decode:
            log.info("data.gpu_decode: the sample photos are decoded once, in memory; nothing to decode on the device")

    def make_sets(self, train_tf, val_tf):
        hp = self.hparams
        split = sample_split()
        decode = lambda files: [ResizeAtLeast(hp.crop_size, hp.resize)(load_image(f)) for f in files]  # noqa: E731
        train = InMemoryCrops(decode(split.train), train_transform(hp.crop_size), hp.train_crops, hp.seed)
        return train, FixedCrops(decode(split.val), hp.val_crops, hp.crop_size, seed=hp.seed)

    def train_size(self) -> int:
        return self.hparams.train_crops


class FolderDataModule(ColorizationDataModule):
    """Any image folder, searched recursively; validation from ``val_root`` or a fixed hold-out of ``val_size``
    readable files; ``labels``: each file's class from its first sub-folder (ImageNet layout)."""

    source = "folder"

    def __init__(
        self,
        root: str | None = None,
        val_root: str | None = None,
        val_size: int = 256,
        index: str | None = None,
        **common,
    ):
        super().__init__(**common)

    @cached_property
    def file_split(self) -> FileSplit:
        """The train / validation files and the classes, listed once (from the folder's index when up to date)."""
        hp = self.hparams
        return folder_split(hp.root, hp.val_root, hp.val_size, hp.seed, hp.labels, usable=readable, index=hp.index)

    def make_sets(self, train_tf, val_tf):
        hp, split = self.hparams, self.file_split
        train_labels = val_labels = None
        if split.classes is not None:
            root, val_root = Path(hp.root).expanduser(), Path(hp.val_root or hp.root).expanduser()
            train_labels = class_labels(split.train, root, split.classes)
            val_labels = class_labels(split.val, val_root, split.classes, unknown=-1)
        self.classes = split.classes
        files = EncodedFiles if hp.gpu_decode else ImageFiles
        return (
            files(split.train, train_tf, train_labels, hp.on_error, hp.seed),
            files(split.val, val_tf, val_labels, hp.on_error, hp.seed),
        )

    def train_size(self) -> int:
        return len(self.file_split.train)

    def where(self) -> str:
        return f" in data.root={self.hparams.root}"


class HFDataModule(ColorizationDataModule):
    """A Hugging Face ``datasets`` dataset (a hub name, or a builder such as imagefolder), map-style or streamed;
    a stream is split over the ranks and gives each ``batches_per_epoch`` batches."""

    source = "hf"

    def __init__(
        self,
        path: str | None = None,
        name: str | None = None,
        data_dir: str | None = None,
        split: str = "train",
        val_split: str | None = None,
        val_size: int = 256,
        streaming: bool = False,
        image_column: str = "image",
        label_column: str | None = None,
        batches_per_epoch: int | None = None,
        **common,
    ):
        super().__init__(**common)
        if not path:
            raise ConfigError("data.path is not set: a Hugging Face dataset name, or a builder such as imagefolder")
        if self.hparams.labels and not label_column:
            raise ConfigError("data.labels=true: set data.label_column, the dataset's column of class labels")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ConfigError(f"data.batches_per_epoch={batches_per_epoch} must be >= 1 (or null)")

    def make_sets(self, train_tf, val_tf):
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
        columns = (hp.image_column, hp.label_column, hp.on_error, hp.gpu_decode, hp.seed)
        return wrap(train, train_tf, *columns), wrap(val, val_tf, *columns)

    def train_size(self) -> int | None:
        return None if self.hparams.streaming else super().train_size()  # map-style: the length is in its metadata

    def where(self) -> str:
        return f" in data.path={self.hparams.path}"

    def check_world_size(self, world_size: int) -> None:
        super().check_world_size(world_size)
        if world_size > 1 and self.hparams.streaming and self.hparams.batches_per_epoch is None:
            raise ConfigError(
                "data.batches_per_epoch is not set: a stream read by several processes needs the same number "
                "of batches on every rank (e.g. examples per epoch // data.batch_size)"
            )

    def make_train_loader(self, options: dict, rank: int, world: int):
        if not self.hparams.streaming:
            return super().make_train_loader(options, rank, world)
        stream = self.train_set
        if world > 1:
            from datasets.distributed import split_dataset_by_node

            part = split_dataset_by_node(stream.dataset, rank=rank, world_size=world)
            stream = HFImageStream(part, stream.transform, *self._columns(stream), rank=rank)
        return ResumableLoader(stream, batches=self.hparams.batches_per_epoch, **options)

    def sample_set(self, images: int | None, seed: int, buffer: int) -> Dataset:
        """Streams: the first ``images`` examples of the stream shuffled with a buffer of ``buffer`` examples
        (``datasets``' shuffle: shards in random order, then a buffer)."""
        if not self.hparams.streaming:
            return super().sample_set(images, seed, buffer)
        train = self.train_set
        stream = train.dataset.shuffle(seed=seed, buffer_size=buffer)
        return HFImageStream(stream if images is None else stream.take(images), train.transform, *self._columns(train))

    @staticmethod
    def _columns(stream: HFImageStream) -> tuple:
        return (stream.image_column, stream.label_column, stream.on_error, stream.encoded, stream.seed)


class ShardsDataModule(ColorizationDataModule):
    """Pre-resized shards of ``python -m colorization.shards`` (LitData), from a directory or a bucket URL: LitData
    splits them over the ranks and workers; its loader keeps the position."""

    source = "shards"

    def __init__(
        self,
        root: str | None = None,
        storage_options: dict | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        **common,
    ):
        super().__init__(**common)
        if not root:
            raise ConfigError("data.root is not set: a shards directory or bucket URL (python -m colorization.shards)")

    @cached_property
    def shard_index(self) -> dict:
        """Each split's index.json (counts, classes, how they were stored), checked against data.resize."""
        from colorization.data.shards import SPLITS, read_index

        hp = self.hparams
        indexes = {split: read_index(hp.root, split, hp.storage_options) for split in SPLITS}
        stored = indexes["train"]["colorization"]["resize"]
        if stored != hp.resize:
            raise ConfigError(
                f"data.resize={hp.resize}: the shards at {hp.root} hold images with their shorter side at {stored} "
                f"(resizing them again would differ from the source): set data.resize={stored}, or convert again"
            )
        if hp.labels and not indexes["train"]["colorization"]["classes"]:
            raise ConfigError(f"data.labels=true: the shards at {hp.root} were made without labels")
        return indexes

    def setup(self, stage: str | None = None) -> None:
        # LitData splits a dataset over the ranks it sees when built; the prior and the k-means init read the
        # training set on rank 0 before DDP starts, so the sets are built again once the process group exists
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        if getattr(self, "_built_for", None) != world:
            self.train_set, self._built_for = None, world
        super().setup(stage)

    def make_sets(self, train_tf, val_tf):
        from colorization.data.shards import ShardImages, split_url

        hp = self.hparams
        self.classes = self.shard_index["train"]["colorization"]["classes"] or None
        store = dict(storage_options=hp.storage_options, cache_dir=hp.cache_dir, max_cache_size=hp.max_cache_size)
        train = ShardImages(split_url(hp.root, "train"), train_tf, hp.seed, True, hp.gpu_decode, **store)
        val = ShardImages(split_url(hp.root, "val"), val_tf, hp.seed, False, hp.gpu_decode, **store)
        return train, val

    def train_size(self) -> int:
        from colorization.data.shards import item_count

        return item_count(self.shard_index["train"])

    def where(self) -> str:
        return f" in data.root={self.hparams.root}"

    def make_train_loader(self, options: dict, rank: int, world: int):
        from colorization.data.shards import ShardLoader

        return ShardLoader(self.train_set, **options)

    def make_val_loader(self, options: dict):
        from litdata import StreamingDataLoader

        return StreamingDataLoader(self.val_set, **options)

    def sample_batches(self, images: int | None, seed: int, buffer: int = 10_000):
        """Shards: the first ``images`` of their stored order, which the conversion made a seeded random order of the
        whole set."""
        from litdata import StreamingDataLoader

        seen = 0
        options = self._options(self.hparams.batch_size, train=False)
        for batch in StreamingDataLoader(self.train_set.in_stored_order(), **options):
            batch = self.on_before_batch_transfer(batch)["image"]
            if images is not None and seen + len(batch) >= images:
                yield batch[: images - seen]
                return
            seen += len(batch)
            yield batch
