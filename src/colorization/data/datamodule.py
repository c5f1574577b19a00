"""The LightningDataModule's shared base: crops, batches, loaders and hooks; each source is a subclass
(``data/source_modules.py``: samples, folder, hf, shards) that makes its datasets and, where it differs, its loaders.
Workers ship uint8 crops.

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

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from colorization.data.crops import train_transform, val_transform
from colorization.data.datasets import SKIPPED, SKIPPED_SEP, check_on_error, collate
from colorization.data.gpu_jpeg import decode_batch
from colorization.data.loaders import EpochSampler, ResumableLoader, per_rank_batch
from colorization.errors import ConfigError

log = logging.getLogger(__name__)


class ColorizationDataModule(L.LightningDataModule):
    """What every source shares. A subclass sets ``source``, takes its own keys and makes its datasets in
    ``make_sets``; it lists or opens nothing in its constructor (only ``setup`` and the checks read data)."""

    source = ""  # the data=<source> config this class serves

    def __init__(
        self,
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
        gpu_decode: bool = False,
        labels: bool = False,  # read each image's class (folder: its sub-folder; hf: data.label_column; shards: stored)
        source: str | None = None,  # the config's label; it must name this class's source
    ):
        super().__init__()
        self.save_hyperparameters()  # this class's keys and the subclass's (Lightning reads every __init__ frame)
        if source not in (None, self.source):
            raise ConfigError(f"data.source={source!r}: this DataModule ({type(self).__name__}) reads {self.source!r}")
        self.hparams.source = self.source
        if crop_size <= 0:
            raise ConfigError(f"data.crop_size={crop_size} must be > 0")
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size={batch_size} must be > 0")
        check_on_error(on_error)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.classes: list[str] | None = None  # class names, where the source has labels

    # ---- what each source provides -----------------------------------------------------------
    def make_sets(self, train_transform, val_transform) -> tuple[Dataset, Dataset]:
        raise NotImplementedError

    def train_size(self) -> int | None:
        """How many training examples there are (None: unknown before reading them, a stream)."""
        self.setup("fit")
        return len(self.train_set)

    def where(self) -> str:
        """Where the images are, for messages: " in data.root=DIR"."""
        return ""

    def check_world_size(self, world_size: int) -> None:
        """Before any process starts: the global batches split evenly over the ranks."""
        hp = self.hparams
        per_rank_batch(hp.batch_size, world_size)
        if hp.val_batch_size:
            per_rank_batch(hp.val_batch_size, world_size, "data.val_batch_size")

    def check_not_empty(self, world_size: int = 1) -> None:
        """Fail before any work when the training loader (which drops the last partial batch) makes no batch."""
        n = self.train_size()
        batch = per_rank_batch(self.hparams.batch_size, world_size)
        if n is None or -(-n // world_size) >= batch:  # the distributed sampler pads each rank to ceil(n / world)
            return
        spread = f" over {world_size} processes" if world_size > 1 else ""
        raise ConfigError(
            f"data.batch_size={self.hparams.batch_size} is larger than the {n} training images"
            f"{self.where()}{spread}: no training batch (lower data.batch_size, or add images)"
        )

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    # ---- datasets ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            hp = self.hparams
            self.train_set, self.val_set = self.make_sets(
                train_transform(hp.crop_size, hp.resize), val_transform(hp.crop_size, hp.resize)
            )

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
        rank, world = self._rank_world()
        options = self._options(per_rank_batch(self.hparams.batch_size, world), train=True)
        if self.trainer is not None:
            options["epoch_of"] = lambda: self.trainer.current_epoch
        self._train_loader = self.make_train_loader(options, rank, world)
        return self._train_loader

    def make_train_loader(self, options: dict, rank: int, world: int):
        """Map-style sets: a seeded permutation per epoch, split over the ranks, the position resumable."""
        sampler = EpochSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.hparams.seed)
        return ResumableLoader(self.train_set, sampler=sampler, **options)

    def val_dataloader(self) -> DataLoader:
        hp = self.hparams
        batch_size = hp.val_batch_size or hp.batch_size
        key = "data.val_batch_size" if hp.val_batch_size else "data.batch_size"
        return self.make_val_loader(self._options(per_rank_batch(batch_size, self._rank_world()[1], key), train=False))

    def make_val_loader(self, options: dict) -> DataLoader:
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
        whole training set (all of them when ``images`` is None or larger): see ``sample_set`` (each source says
        how it draws). For the prior (``color.prior=estimate``) and the data-dependent init (``model.init``)."""
        options = self._options(self.hparams.batch_size, train=False)
        for batch in DataLoader(self.sample_set(images, seed, buffer), shuffle=False, **options):
            yield self.on_before_batch_transfer(batch)["image"]

    def sample_set(self, images: int | None, seed: int, buffer: int) -> Dataset:
        """Map-style sets: seeded random indices."""
        order = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(seed)).tolist()
        return torch.utils.data.Subset(self.train_set, order if images is None else order[:images])
