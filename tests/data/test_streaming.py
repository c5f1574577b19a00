"""Streaming sources: rank sharding with equal batch counts, and resuming mid-epoch without repeats or gaps.

The streams are real `datasets` streams read from local parquet shards of real JPEG files (flat colors, so
every training crop names its source image: see tests/helpers/seen.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from colorization.data import HFDataModule
from colorization.data.datasets import HFImageStream, val_transform
from colorization.data.loaders import ResumableLoader, per_rank_batch
from colorization.errors import ConfigError
from helpers.config import TINY, compose
from helpers.seen import identify, write_color_images


def write_parquet_shards(root: Path, split: str, first: int, shards: int, per_shard: int) -> list[int]:
    """`shards` parquet files <root>/<split>-0000k.parquet with JPEG images first, first+1, ... (image column)."""
    import datasets

    ids = list(range(first, first + shards * per_shard))
    files = write_color_images(root.parent / f"{root.name}_jpeg_{split}", first + len(ids))[first:]
    for k in range(shards):
        part = files[k * per_shard : (k + 1) * per_shard]
        table = datasets.Dataset.from_dict({"image": [str(f) for f in part]}).cast_column("image", datasets.Image())
        table.to_parquet(str(root / f"{split}-{k:05d}.parquet"))  # embeds the JPEG bytes
    return ids


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream") / "parquet"
    root.mkdir()
    write_parquet_shards(root, "train", 0, shards=4, per_shard=3)  # ids 0..11
    write_parquet_shards(root, "validation", 12, shards=1, per_shard=4)  # ids 12..15
    return root


def stream(parquet_dir: Path, split: str = "train"):
    import datasets

    return datasets.load_dataset("parquet", data_dir=str(parquet_dir), split=split, streaming=True)


def test_per_rank_batch_is_the_global_batch_split_evenly():
    assert per_rank_batch(256, 8) == 32
    assert per_rank_batch(40, 1) == 40
    with pytest.raises(ConfigError, match="data.batch_size=10 .* 4 processes"):
        per_rank_batch(10, 4)


def test_stream_without_epoch_length_on_several_ranks_is_a_config_error(parquet_dir):
    dm = HFDataModule(path="parquet", data_dir=str(parquet_dir), streaming=True, batch_size=4)
    dm.check_world_size(1)  # one process: the stream simply ends
    with pytest.raises(ConfigError, match="data.batches_per_epoch"):
        dm.check_world_size(2)
    with pytest.raises(ConfigError, match="data.batch_size=4 .* 3 processes"):
        dm.check_world_size(3)


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_position_survives_a_state_dict_round_trip(parquet_dir, workers):
    ds = HFImageStream(stream(parquet_dir), val_transform(32, 32))
    loader = ResumableLoader(ds, batch_size=2, num_workers=workers)
    iterator, before = iter(loader), []
    for _ in range(3):
        before += identify(next(iterator)["image"])
        loader.took_batch()
    next(iterator)  # fetched ahead (as Lightning does) but never trained on: must come again after resuming
    state = json.loads(json.dumps(loader.state_dict()))  # what a checkpoint keeps
    del iterator
    resumed = ResumableLoader(ds, batch_size=2, num_workers=workers)
    resumed.load_state_dict(state)
    after = [i for batch in resumed for i in identify(batch["image"])]
    assert len(before) == 6 and sorted(before + after) == list(range(12))
    again = [i for batch in resumed for i in identify(batch["image"])]  # the next epoch starts from the top
    assert sorted(again) == list(range(12))


def rank_loader(parquet_dir: Path, rank: int, world: int, batch_size: int, batches: int | None):
    """The train loader that rank `rank` of `world` builds (a Trainer is stood in for by its two numbers)."""
    dm = HFDataModule(
        path="parquet",
        data_dir=str(parquet_dir),
        val_split="validation",
        streaming=True,
        crop_size=32,
        resize=32,
        batch_size=batch_size,
        num_workers=0,
        batches_per_epoch=batches,
    )
    dm.check_world_size(world)
    dm.setup("fit")
    dm._rank_world = lambda: (rank, world)
    return dm.train_dataloader()


@pytest.mark.parametrize(
    "world, batch_size, batches",
    [
        (2, 4, 3),  # 4 shards: 2 per rank, 6 examples each
        (4, 4, 3),  # 1 shard per rank, 3 examples each
        (3, 3, 3),  # 4 shards over 3 ranks: every 3rd example (4 each), cut to the 3 batches of the epoch
    ],
)
def test_stream_ranks_read_disjoint_parts_and_the_same_number_of_batches(parquet_dir, world, batch_size, batches):
    seen = []
    for rank in range(world):
        loader = rank_loader(parquet_dir, rank, world, batch_size, batches)
        ids = [identify(b["image"]) for b in loader]
        assert len(ids) == batches == len(loader)
        assert all(len(b) == batch_size // world for b in ids)
        seen += [i for b in ids for i in b]
    assert len(set(seen)) == len(seen), "two ranks trained on the same example"
    assert set(seen) <= set(range(12)) and len(seen) == batches * batch_size


def test_a_rank_whose_part_runs_out_reads_it_again_instead_of_stopping_early(parquet_dir, caplog):
    # 3 ranks get 4 examples each; an epoch of 5 batches of 1: rank 2 must read its part again
    loader = rank_loader(parquet_dir, 2, 3, batch_size=3, batches=5)
    ids = [i for b in loader for i in identify(b["image"])]
    assert len(ids) == 5 and len(set(ids)) == 4 and ids[4] == ids[0]
    assert "ran out after 4 of data.batches_per_epoch=5" in caplog.text


def test_resume_mid_epoch_sees_every_example_once(parquet_dir, tmp_path):
    """Train 2 steps of a 6-step epoch, stop; resume from the checkpoint and finish the epoch. Together the
    two runs trained on each of the 12 stream examples exactly once (2 loader workers, 2 shards each)."""
    from colorization.train import train

    common = [
        *(o for o in TINY if not o.startswith("data.val_crops")),  # a samples-only key
        "data=hf",
        "data.path=parquet",
        f"data.data_dir={parquet_dir}",
        "data.val_split=validation",
        "data.streaming=true",
        "data.crop_size=32",
        "data.resize=32",
        "data.batch_size=2",
        "data.num_workers=2",
        "trainer.num_sanity_val_steps=0",
        "callbacks.last_checkpoint.every_n_train_steps=2",  # checkpoint at the interruption (step 2)
        "callbacks.colorization_grid=null",
        "+callbacks.seen._target_=helpers.seen.SeenRecorder",
        f"+callbacks.seen.out_dir={tmp_path / 'seen'}",
    ]
    first = compose([*common, "trainer.max_steps=2", "+callbacks.seen.tag=first"], tmp_path / "first")
    train(first)
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    second = compose(
        [*common, "trainer.max_steps=6", "+callbacks.seen.tag=second", f"ckpt_path={ckpt}"], tmp_path / "second"
    )
    trainer = train(second)
    assert trainer.global_step == 6
    a = json.loads((tmp_path / "seen" / "first_rank0.json").read_text())["ids"]
    b = json.loads((tmp_path / "seen" / "second_rank0.json").read_text())["ids"]
    assert len(a) == 4 and len(b) == 8
    assert sorted(a + b) == list(range(12)), f"repeated or skipped: first {a}, resumed {b}"
