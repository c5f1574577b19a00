"""The LightningDataModule: one of four image sources, uint8 crops out of the workers.

Lab conversion, the 1/4-resolution ab targets, soft encoding, rebalancing weights and the gray mask
are computed on the device by the LightningModule (``on_after_batch_transfer``), which owns the bins
and the prior; the data side only ever ships uint8 (or, with ``gpu_decode``, the JPEG bytes, decoded
and cropped on the device in ``on_before_batch_transfer``).

Several processes (DDP): ``batch_size`` is the global batch, split evenly over the ranks. Map-style
sources are read through an ``EpochSampler`` (a seeded permutation per epoch, split over the ranks); Hugging Face
streams are split by rank (``split_dataset_by_node``) and give every rank ``batches_per_epoch`` batches; shards are
split over ranks and workers by LitData.

Exact resume: every training loader's position is in Lightning's checkpoint (``data.loaders``), each item's crop
comes from its own seed (``data.crops``), and the loader workers are pinned to the checkpoint's number.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from colorization.data.crops import train_transform, val_transform
from colorization.data.datasets import (
    SKIPPED,
    SKIPPED_SEP,
    FixedCrops,
    HFImages,
    HFImageStream,
    ImageFiles,
    InMemoryCrops,
    ResizeAtLeast,
    check_on_error,
    collate,
    load_image,
    readable,
)
from colorization.data.gpu_jpeg import EncodedFiles, decode_batch
from colorization.data.loaders import EpochSampler, ResumableLoader, per_rank_batch
from colorization.data.sources import class_labels, folder_split, load_hf_split, sample_split
from colorization.errors import ConfigError

log = logging.getLogger(__name__)

SOURCES = ("samples", "folder", "hf", "shards")


def _world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


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
        # shards (root: a directory or an object-store URL)
        storage_options: dict | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
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
        check_on_error(hp.on_error)
        self.file_split = None  # folder: the train / validation files and the classes, listed once (data.index)
        if hp.source == "folder":  # listing the files is needed anyway; an empty folder fails here, early
            self.file_split = folder_split(
                hp.root, hp.val_root, hp.val_size, hp.seed, hp.labels, usable=readable, index=hp.index
            )
        if hp.source == "hf" and not hp.path:
            raise ConfigError("data.path is not set: a Hugging Face dataset name, or a builder such as imagefolder")
        self.shard_index = None  # shards: each split's index.json (counts, classes, how they were stored)
        if hp.source == "shards":
            self.shard_index = self._read_shard_indexes()
        if hp.batches_per_epoch is not None and hp.batches_per_epoch < 1:
            raise ConfigError(f"data.batches_per_epoch={hp.batches_per_epoch} must be >= 1 (or null)")

    def _read_shard_indexes(self) -> dict:
        from colorization.data.shards import SPLITS, read_index

        hp = self.hparams
        if not hp.root:
            raise ConfigError("data.root is not set: a shards directory or bucket URL (python -m colorization.shards)")
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
        if hp.source == "shards":
            from colorization.data.shards import item_count

            return item_count(self.shard_index["train"])
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
        root = f" in data.root={self.hparams.root}"
        where = {"folder": root, "shards": root, "hf": f" in data.path={self.hparams.path}"}
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
        made = (self.train_set is not None, _world_size() if self.hparams.source == "shards" else 1)
        if made == getattr(self, "_made", None):
            return
        # shards: LitData splits a dataset over the ranks it sees when built; the prior and the k-means init read
        # the training set on rank 0 before DDP starts, so the sets are built again once the process group exists
        self._made = (True, made[1])
        hp = self.hparams
        train_tf = train_transform(hp.crop_size, hp.resize)
        val_tf = val_transform(hp.crop_size, hp.resize)
        if hp.gpu_decode and hp.source == "samples":
            log.info("data.gpu_decode: the sample photos are decoded once, in memory; nothing to decode on the device")
        if hp.source == "samples":
            split = sample_split()
            decode = lambda files: [ResizeAtLeast(hp.crop_size, hp.resize)(load_image(f)) for f in files]  # noqa: E731
            train = InMemoryCrops(decode(split.train), train_transform(hp.crop_size), hp.train_crops, hp.seed)
            self.train_set = train
            self.val_set = FixedCrops(decode(split.val), hp.val_crops, hp.crop_size, seed=hp.seed)
        elif hp.source == "shards":
            self.train_set, self.val_set = self._shard_sets(train_tf, val_tf)
        elif hp.source == "folder":
            split = self.file_split
            train_labels = val_labels = None
            if split.classes is not None:
                root, val_root = Path(hp.root).expanduser(), Path(hp.val_root or hp.root).expanduser()
                train_labels = class_labels(split.train, root, split.classes)
                val_labels = class_labels(split.val, val_root, split.classes, unknown=-1)
            self.classes = split.classes
            files = EncodedFiles if hp.gpu_decode else ImageFiles
            self.train_set = files(split.train, train_tf, train_labels, hp.on_error, hp.seed)
            self.val_set = files(split.val, val_tf, val_labels, hp.on_error, hp.seed)
        else:
            self.train_set, self.val_set = self._hf_sets(train_tf, val_tf)

    def _shard_sets(self, train_tf, val_tf):
        """LitData datasets, made here (after the DDP process group exists: LitData reads the ranks when built)."""
        from colorization.data.shards import ShardImages, split_url

        hp = self.hparams
        self.classes = self.shard_index["train"]["colorization"]["classes"] or None
        store = dict(storage_options=hp.storage_options, cache_dir=hp.cache_dir, max_cache_size=hp.max_cache_size)
        train = ShardImages(split_url(hp.root, "train"), train_tf, hp.seed, True, hp.gpu_decode, **store)
        val = ShardImages(split_url(hp.root, "val"), val_tf, hp.seed, False, hp.gpu_decode, **store)
        return train, val

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
        columns = (hp.image_column, hp.label_column, hp.on_error, hp.gpu_decode, hp.seed)
        return wrap(train, train_tf, *columns), wrap(val, val_tf, *columns)

    # ---- loaders -----------------------------------------------------------------------------
    def _options(self, batch_size: int, train: bool) -> dict:
        hp = self.hparams
        workers = hp.num_workers
        return dict(
            batch_size=batch_size,
            drop_last=train,
            num_workers=workers,
            pin_memory=hp.pin_memory and torch.cuda.is_available(),
            persistent_workers=hp.persistent_workers and workers > 0,
            prefetch_factor=hp.prefetch_factor if workers > 0 else None,
            collate_fn=collate,
        )

    def train_dataloader(self) -> DataLoader:
        """The resumable training loader of the source (its position is saved in checkpoints)."""
        hp = self.hparams
        rank, world = self._rank_world()
        options = self._options(per_rank_batch(hp.batch_size, world), train=True)
        if self.trainer is not None:
            options["epoch_of"] = lambda: self.trainer.current_epoch
        if hp.source == "shards":
            from colorization.data.shards import ShardLoader

            self._train_loader = ShardLoader(self.train_set, **options)
        elif isinstance(self.train_set, HFImageStream):
            stream = self.train_set
            if world > 1:
                from datasets.distributed import split_dataset_by_node

                part = split_dataset_by_node(stream.dataset, rank=rank, world_size=world)
                columns = (stream.image_column, stream.label_column, stream.on_error, stream.encoded, stream.seed)
                stream = HFImageStream(part, stream.transform, *columns, rank=rank)
            self._train_loader = ResumableLoader(stream, batches=hp.batches_per_epoch, **options)
        else:
            sampler = EpochSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=hp.seed)
            self._train_loader = ResumableLoader(self.train_set, sampler=sampler, **options)
        return self._train_loader

    def val_dataloader(self) -> DataLoader:
        hp = self.hparams
        batch_size = hp.val_batch_size or hp.batch_size
        key = "data.val_batch_size" if hp.val_batch_size else "data.batch_size"
        options = self._options(per_rank_batch(batch_size, self._rank_world()[1], key), train=False)
        if hp.source == "shards":
            from litdata import StreamingDataLoader

            return StreamingDataLoader(self.val_set, **options)
        return DataLoader(self.val_set, shuffle=False, **options)

    # ---- the loader workers travel with the checkpoint: LitData and torchdata restore a position per worker ------
    def state_dict(self) -> dict:
        return {"num_workers": self.hparams.num_workers}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("num_workers")
        if saved is not None and saved != self.hparams.num_workers:
            log.warning(
                "data.num_workers=%d: resuming with the checkpoint's %d loader workers (its data position is theirs)",
                self.hparams.num_workers,
                saved,
            )
            self.hparams.num_workers = saved

    # ---- on the way to the device ------------------------------------------------------------
    def on_before_batch_transfer(self, batch, dataloader_idx: int = 0):
        trainer = self.trainer
        loader = getattr(self, "_train_loader", None)
        if trainer is not None and trainer.training and loader is not None:
            loader.took_batch()  # the loader's saved position follows the batches actually trained on
        if isinstance(batch, dict) and "data" in batch:  # data.gpu_decode
            device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
            data, names, crops = batch.pop("data"), batch.pop("file", None), batch.pop("crop")
            images, kept = decode_batch(data, device, crops, names)
            # tensors (labels) and lists (the skipped-file names) alike keep the decodable images' entries
            batch = {k: [v[i] for i in kept] if isinstance(v, list) else v[kept] for k, v in batch.items()}
            batch["image"] = images
            if len(kept) < len(data):  # the files the device decoder refused are skipped files too (counted)
                failed = [names[i] if names else f"image {i} of the batch" for i in range(len(data)) if i not in kept]
                batch[SKIPPED] = [*batch.get(SKIPPED, []), SKIPPED_SEP.join(failed)]
        return batch

    def sample_batches(self, images: int | None, seed: int, buffer: int = 10_000):
        """uint8 batches of a uniform random sample of ``images`` training images (training crops), drawn from the
        whole training set: seeded indices for folder, sample and non-streaming Hugging Face sources (all of them
        when ``images`` is None or larger); shards: the first ``images`` of their stored order, which the conversion
        made a seeded random order of the whole set; streams: the first ``images`` examples of the stream shuffled
        with a buffer of ``buffer`` examples (``datasets``' shuffle: shards in random order, then a buffer). For the
        prior (``color.prior=estimate``) and the data-dependent init (``model.init``)."""
        train = self.train_set
        options = self._options(self.hparams.batch_size, train=False)
        if self.hparams.source == "shards":
            from litdata import StreamingDataLoader

            seen = 0
            for batch in StreamingDataLoader(train.in_stored_order(), **options):
                batch = self.on_before_batch_transfer(batch)["image"]
                if images is not None and seen + len(batch) >= images:
                    yield batch[: images - seen]
                    return
                seen += len(batch)
                yield batch
            return
        if isinstance(train, HFImageStream):
            stream = train.dataset.shuffle(seed=seed, buffer_size=buffer)
            columns = (train.image_column, train.label_column, train.on_error, train.encoded, train.seed)
            dataset = HFImageStream(stream if images is None else stream.take(images), train.transform, *columns)
        else:
            n = len(train)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
            dataset = torch.utils.data.Subset(train, order if images is None else order[:images])
        for batch in DataLoader(dataset, shuffle=False, **options):
            yield self.on_before_batch_transfer(batch)["image"]
