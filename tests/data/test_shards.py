"""Shards (LitData): `python -m colorization.shards` converts a source once; `data=shards` trains from a directory or
a bucket. Real photos, real LitData conversion and streaming, a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from colorization.data import ShardsDataModule
from colorization.data.crops import CropTransform, item_rng, resized_size
from colorization.errors import ConfigError
from helpers.config import PROBE_TINY, TINY, compose
from helpers.photos import photo_folder
from helpers.seen import identify, write_color_images

TINY_SHARDS = [o for o in TINY if not o.startswith(("data.val_crops", "data.resize"))]


def convert(overrides: list[str], tmp_path: Path):
    from colorization.shards import convert as run

    return run(compose(overrides, tmp_path / "hydra", config_name="shards"))


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """A labeled folder (3 classes, 30 photos, held-out validation of 3) with a non-image, a truncated JPEG and an
    empty file among them, converted once to shards."""
    root = tmp_path_factory.mktemp("labeled")
    photos = photo_folder(root / "photos", 30, classes=3)
    (photos / "c0" / "notes.jpg").write_text("not a photo")
    good = (photos / "c1" / "001.jpg").read_bytes()
    (photos / "c1" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (photos / "c2" / "empty.png").write_bytes(b"")
    out = root / "shards"
    args = ["data=folder", f"data.root={photos}", "data.labels=true", "data.resize=64", f"output={out}", "workers=2"]
    records = convert(args, root)
    return photos, out, records


def stored_items(split_dir: Path) -> list[dict]:
    """Every item of a converted split, read with LitData itself (not this project's reader)."""
    from litdata import StreamingDataset

    dataset = StreamingDataset(str(split_dir))
    return [{**item, "name": bytes(item["name"]).decode()} for item in (dataset[i] for i in range(len(dataset)))]


def test_a_labeled_folder_converts_names_its_bad_files_and_trains_from_the_shards(labeled, tmp_path, capsys):
    photos, out, records = labeled
    bad = {str(photos / "c0" / "notes.jpg"), str(photos / "c1" / "truncated.jpg"), str(photos / "c2" / "empty.png")}
    skipped = {s["name"] for r in records.values() for s in r["skipped"]}
    assert skipped == bad, "every bad file is named at conversion, and nothing else"
    index = json.loads((out / "train" / "index.json").read_text())["colorization"]
    assert index["classes"] == ["c0", "c1", "c2"] and index["resize"] == 64
    # every label read back, against the class folder of the stored file's name; each good photo stored once
    names = []
    for split in ("train", "val"):
        items = stored_items(out / split)
        assert items, split
        for item in items:
            assert item["label"] == int(Path(item["name"]).parent.name[1]), item["name"]
            image = Image.open(io.BytesIO(item["image"]))
            assert min(image.size) == 64 and (item["height"], item["width"]) == image.size[::-1]
            names.append(item["name"])
    assert sorted(names) == sorted(str(p) for p in photos.rglob("*.jpg") if str(p) not in bad)
    assert len(stored_items(out / "val")) == 3  # the folder source's own hold-out (len // 10)

    from colorization.train import train

    cfg = compose(
        [*TINY_SHARDS, "data=shards", f"data.root={out}", "data.resize=64", "data.labels=true", "trainer.max_steps=5"],
        tmp_path / "run",
    )
    trainer = train(cfg)
    assert trainer.global_step == 5 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert trainer.callback_metrics["data/skipped_train"] == 0  # bad files never reach training


def test_the_training_shards_are_in_a_seeded_random_order_and_the_validation_in_the_sources(labeled):
    photos, out, _ = labeled
    train = [item["index"] for item in stored_items(out / "train")]
    assert train != sorted(train)  # an ImageNet folder is sorted by class: chunks must not be
    val = [item["index"] for item in stored_items(out / "val")]
    assert val == sorted(val)


def test_a_shard_item_is_its_stored_image_cut_where_its_own_seed_says(labeled):
    """Item p of epoch e: the stored photo (decoded here by PIL), cut and flipped as item_rng(seed, e, p) draws it;
    the same in any worker, any rank and after a resume."""
    _, out, _ = labeled
    stored = stored_items(out / "train")
    dm = ShardsDataModule(root=str(out), labels=True, crop_size=32, resize=64, seed=5)
    dm.setup("fit")
    for position in range(4):
        image = np.asarray(Image.open(io.BytesIO(stored[position]["image"])))
        rng = item_rng(5, 3, position)
        top, left = rng.randrange(image.shape[0] - 32 + 1), rng.randrange(image.shape[1] - 32 + 1)
        expected = image[top : top + 32, left : left + 32]
        expected = expected[:, ::-1] if rng.random() < 0.5 else expected
        got = dm.train_set[(position, 3)]
        assert got["label"] == stored[position]["label"]
        diff = np.abs(got["image"].permute(1, 2, 0).numpy().astype(int) - expected.astype(int))
        assert diff.mean() < 1.0, position  # torchvision's libjpeg against PIL's: the same decoder family
    assert not torch.equal(dm.train_set[(5, 2)]["image"], dm.train_set[(5, 3)]["image"])  # a new crop each epoch


def test_crop_plans_match_torchvision_resize_and_center_crop_and_a_hand_cut():
    image = torch.randint(0, 256, (3, 75, 100), dtype=torch.uint8)
    resized = v2.functional.resize(image, 48, antialias=True)  # torchvision's own shorter-side rule
    assert resized_size(75, 100, 32, 48) == tuple(resized.shape[1:])
    val = CropTransform(32, 48, train=False)(image)
    assert torch.equal(val, v2.CenterCrop(32)(resized))
    rng = item_rng(0, 1, 7)
    top, left, flip = rng.randrange(48 - 32 + 1), rng.randrange(64 - 32 + 1), rng.random() < 0.5
    expected = resized[:, top : top + 32, left : left + 32]
    expected = expected.flip(-1) if flip else expected
    assert torch.equal(CropTransform(32, 48)(image, item_rng(0, 1, 7)), expected)
    small = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)  # smaller than the crop: upscaled to it
    assert CropTransform(32, 48)(small, item_rng(0, 0, 0)).shape == (3, 32, 32)


def test_prior_sample_and_gpu_decode_read_shards_as_any_source(labeled):
    photos, out, _ = labeled
    kwargs = dict(root=str(out), labels=True, crop_size=32, resize=64, batch_size=4, num_workers=0)
    plain, fast = ShardsDataModule(**kwargs), ShardsDataModule(**kwargs, gpu_decode=True)
    for dm in (plain, fast):
        dm.setup("fit")
    a = [b for b in plain.sample_batches(6, seed=1)]
    b = [b for b in fast.sample_batches(6, seed=1)]
    assert sum(len(x) for x in a) == 6
    for x, y in zip(a, b, strict=True):  # the device decoder (libjpeg here) cuts the planned crops
        assert x.shape == y.shape and (x.int() - y.int()).abs().float().mean() < 1.0
    assert plain.classes == ["c0", "c1", "c2"]


def test_shards_errors_are_one_line(labeled, tmp_path):
    photos, out, _ = labeled
    with pytest.raises(ConfigError, match=r"data.resize=128: the shards .* shorter side at 64"):
        ShardsDataModule(root=str(out), resize=128).check_not_empty()
    with pytest.raises(ConfigError, match=r"data.root=.*nowhere: no such directory"):
        ShardsDataModule(root=str(tmp_path / "nowhere"), resize=64).check_not_empty()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no shards index at .*empty/train/index.json"):
        ShardsDataModule(root=str(tmp_path / "empty"), resize=64).check_not_empty()
    with pytest.raises(ConfigError, match=r"output=.* holds shards of another conversion"):
        convert(["data=folder", f"data.root={photos}", "data.resize=64", f"output={out}"], tmp_path)
    with pytest.raises(ConfigError, match=r"format='png' is not one of"):
        convert([f"output={tmp_path / 'x'}", "format=png"], tmp_path)


def test_ranks_read_disjoint_shards_and_the_same_number_of_batches(tmp_path):
    """LitData's split over 2 and 3 ranks (its distributed environment stood in for), 2 workers each."""
    from litdata.utilities.env import _DistributedEnv

    from colorization.data.crops import val_transform
    from colorization.data.shards import ShardImages, ShardLoader

    write_color_images(tmp_path / "colors", 40, size=40)
    out = tmp_path / "shards"
    convert(
        ["data=folder", f"data.root={tmp_path / 'colors'}", "data.resize=40", f"output={out}", "chunk_bytes=4kB"],
        tmp_path,
    )
    for world in (2, 3):
        seen, counts = [], []
        for rank in range(world):
            dataset = ShardImages(str(out / "train"), val_transform(32, 40), shuffle=True)
            dataset.distributed_env = _DistributedEnv(world_size=world, global_rank=rank, num_nodes=1)
            batches = [identify(b["image"]) for b in ShardLoader(dataset, batch_size=3, num_workers=2, drop_last=True)]
            counts.append(len(batches))
            seen += [i for b in batches for i in b]
        assert len(set(counts)) == 1 and counts[0] > 0, counts
        assert len(seen) == len(set(seen)), f"{world} ranks read an example twice"


@pytest.mark.slow
def test_an_interrupted_conversion_finishes_without_redoing_or_duplicating_work(tmp_path):
    """SIGKILL once the first of three parts is done; the rerun converts the other two only, and every image is
    stored once. A third run has nothing to do."""
    photos = photo_folder(tmp_path / "photos", 40)
    out = tmp_path / "shards"
    command = [sys.executable, "-m", "colorization.shards", "data=folder", f"data.root={photos}", "data.resize=48",
               f"output={out}", "part_size=12", "workers=1"]  # fmt: skip
    env = {**os.environ, "COLORIZATION_LOG_DIR": str(tmp_path / "logs")}
    first = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not (out / ".parts" / "train-00000" / "index.json").is_file():
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (out / "train" / "index.json").exists(), "killed too late: the conversion had finished"
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "train part 1/3" not in log and "train part 2/3" in log and "train part 3/3" in log
    names = [item["name"] for split in ("train", "val") for item in stored_items(out / split)]
    assert sorted(names) == sorted(str(p) for p in photos.glob("*.jpg"))
    assert not (out / ".parts").exists()
    third = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and " part " not in third.stdout + third.stderr
    assert sorted(item["name"] for split in ("train", "val") for item in stored_items(out / split)) == sorted(names)


@pytest.fixture
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_training_streams_shards_from_an_s3_bucket(labeled, s3_server, tmp_path, monkeypatch):
    """The same shards copied to a bucket of a local S3-compatible server (moto), read through LitData's own client."""
    import boto3

    _, out, _ = labeled
    keys = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_server, **keys)
    s3.create_bucket(Bucket="data")
    for path in out.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "data", f"imagenet/{path.relative_to(out)}")
    from colorization.train import train

    options = f"{{endpoint_url:'{s3_server}',aws_access_key_id:test,aws_secret_access_key:test,region_name:us-east-1}}"
    cfg = compose(
        [*TINY_SHARDS, "data=shards", "data.root=s3://data/imagenet", f"data.storage_options={options}",
         f"data.cache_dir={tmp_path / 'cache'}", "data.resize=64", "data.num_workers=2", "trainer.max_steps=4"],
        tmp_path / "run",
    )  # fmt: skip
    trainer = train(cfg)
    assert trainer.global_step == 4
    assert any((tmp_path / "cache").rglob("chunk-*.bin")), "the chunks came through the bucket's cache"


@pytest.mark.slow
def test_a_probe_and_a_study_read_shards_as_any_source(alexnet_ckpt, labeled_dir, tmp_path):
    """The linear probes train from labeled shards (stored at full size: data.resize=null); the perceptual study takes
    its photos from the shards' validation split, cut as the study's protocol says."""
    from colorization.probe import probe
    from colorization.study.make import make

    out = tmp_path / "shards"
    data = [f"data.root={labeled_dir / 'train'}", f"data.val_root={labeled_dir / 'val'}", "data.labels=true"]
    convert(["data=folder", *data, "data.resize=null", f"output={out}"], tmp_path)
    probed = compose(
        [f"ckpt_path={alexnet_ckpt}", *PROBE_TINY, "data=shards", f"data.root={out}", "trainer.max_steps=2"],
        tmp_path / "probe",
        "probe",
    )
    trainer, report = probe(probed)
    assert trainer.global_step == 2 and report["num_classes"] == 4
    assert all(0 <= report["results"]["checkpoint"][layer]["top1"] <= 1 for layer in report["layers"])

    small = tmp_path / "small"
    convert(["data=folder", *data, "data.resize=64", f"output={small}"], tmp_path)
    study = make(
        compose(
            ["data=shards", f"data.root={small}", "data.num_workers=0", f"study={tmp_path / 'study'}",
             "protocol.practice_trials=2", "protocol.test_trials=3", "protocol.size=64", "device=cpu"],
            tmp_path / "study_run",
            config_name="study",
        )
    )  # fmt: skip
    stored = stored_items(small / "val")
    for i in range(5):  # the study's photo i: the stored photo i, center-cropped to 64 (shorter side already 64)
        image = np.asarray(Image.open(io.BytesIO(stored[i]["image"])))
        top, left = round((image.shape[0] - 64) / 2), round((image.shape[1] - 64) / 2)
        real = np.asarray(Image.open(study / "images" / "real" / f"{i:04d}.png")).astype(int)
        assert np.abs(real - image[top : top + 64, left : left + 64]).mean() < 1.0
