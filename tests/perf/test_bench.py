"""The benchmark: its 2016-style reference computes what the device-side path computes (so the speed
comparison compares equal work), its inputs look like ImageNet files, and a tiny run reports every number."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import lightning as L
import numpy as np
import pytest
import skimage
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from colorization.bench import run
from colorization.color import ab_bins
from colorization.models.losses import ColorizationLoss
from colorization.models.module import ColorizationModule
from colorization.perf.reference2016 import DenseSoftCrossEntropy, Reference2016, write_jpegs
from colorization.perf.report import report
from colorization.perf.timing import LoopTimer
from helpers.config import REPO, compose


@pytest.fixture(scope="module")
def module() -> ColorizationModule:
    bins = ab_bins("srgb")
    prior = torch.from_numpy(np.random.default_rng(0).dirichlet(np.ones(len(bins)))).float()  # uneven weights
    return ColorizationModule(bins=bins, prior=prior)


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    rng = np.random.default_rng(1)
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    gray = np.repeat(skimage.data.camera()[..., None], 3, 2)  # a gray image: masked
    out = []
    for photo in [*photos, gray]:
        top, left = rng.integers(0, photo.shape[0] - 64), rng.integers(0, photo.shape[1] - 64)
        out.append(photo[top : top + 64, left : left + 64])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def test_the_2016_reference_computes_what_the_device_side_path_computes(module, crops):
    device = module.on_after_batch_transfer({"image": crops})
    reference = Reference2016(module.bins, 5, 5.0, module.class_weights, 5.0)
    ref = [reference(c.permute(1, 2, 0).numpy()) for c in crops]
    np.testing.assert_allclose(device["L"].numpy(), np.stack([r["L"] for r in ref]), atol=1e-3)
    dense = torch.zeros(len(crops), len(module.bins), 16, 16).scatter_(1, device["idx"], device["wts"])
    np.testing.assert_allclose(dense.numpy(), np.stack([r["z"] for r in ref]), atol=1e-4)
    same_weight = np.isclose(device["pixel_weight"].numpy(), np.stack([r["pixel_weight"] for r in ref]))
    assert same_weight.mean() > 0.99  # the argmax may pick the other of two equally near bins
    assert device["mask"].tolist() == [r["mask"] for r in ref] == [1, 1, 1, 0]


def test_dense_loss_of_the_2016_configuration_equals_the_sparse_loss(module, crops):
    batch = module.on_after_batch_transfer({"image": crops})
    batch["z"] = torch.zeros(len(crops), len(module.bins), 16, 16).scatter_(1, batch["idx"], batch["wts"])
    logits = torch.randn(len(crops), len(module.bins), 16, 16)
    dense, sparse = DenseSoftCrossEntropy()(logits, batch), ColorizationLoss("rebalanced")(logits, batch)
    for key in ("loss", "loss_per_pixel", "ce"):
        torch.testing.assert_close(dense[key], sparse[key])


def test_benchmark_files_look_like_imagenet_and_are_reused(tmp_path):
    files = write_jpegs(tmp_path, 6, 500, 375, 90)
    assert len(files) == 6
    for f in files:
        with Image.open(f) as image:
            assert image.size == (500, 375) and image.format == "JPEG"
    assert 20e3 < np.mean([f.stat().st_size for f in files]) < 300e3
    stamps = [f.stat().st_mtime_ns for f in files]
    assert [f.stat().st_mtime_ns for f in write_jpegs(tmp_path, 6, 500, 375, 90)] == stamps


def test_tiny_benchmark_run_reports_every_number(tmp_path):
    overrides = [
        "preset=quick",
        "bench.files=12",
        "bench.encode_images=8",
        "bench.encode_repeats=1",
        "bench.matmul_size=128",
        "bench.steps=1",
        "bench.legacy_batch_size=4",
        "data.batch_size=2",
        f"bench.image_dir={tmp_path / 'jpegs'}",
    ]
    cfg = compose(overrides, tmp_path / "run", config_name="bench")
    results = run(cfg)
    encoding = results["encoding"]
    assert encoding["check_max_abs_L"] < 1e-3 and encoding["check_max_abs_z"] < 1e-4
    assert encoding["device_img_s"] > 0 and encoding[f"reference_{os.cpu_count()}proc_img_s"] > 0
    assert results["network"]["batch_size"] == results["end_to_end"]["batch_size"] == 2  # the override won
    assert results["legacy_2016"]["batch_size"] == 4 and results["legacy_2016"]["precision"] == "32-true"
    for key in ("network", "end_to_end", "legacy_2016"):
        r = results[key]
        assert r["img_s"] > 0 and r["flop_utilization"] > 0
        assert r["schedule_hours"] == pytest.approx(18e6 / r["img_s"] / 3600)
    assert 0 <= results["end_to_end"]["data_wait_fraction"] <= 1
    text = report(results)
    assert "faster on the same" in text and "2016-style end-to-end" in text and "schedule" in text
    json.dumps(results)  # the result file is plain JSON


@pytest.mark.slow
def test_quick_benchmark_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLORIZATION_LOG_DIR": str(tmp_path / "logs")}
    result = subprocess.run(
        [sys.executable, "-m", "colorization.bench", "preset=quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "faster on the same" in result.stdout
    (out,) = (tmp_path / "logs" / "bench" / "runs").iterdir()
    assert json.loads((out / "bench.json").read_text())["encoding"]["device_img_s"] > 0


class SleepyHooks(L.LightningModule):
    """Host-side batch hooks of known duration: 10 ms before the transfer, 50 ms after."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def on_before_batch_transfer(self, batch, dataloader_idx):
        time.sleep(0.01)
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx):
        time.sleep(0.05)
        return batch

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(8, 1)), batch_size=1)


def test_the_host_hook_time_counts_each_hook_once(tmp_path):
    """Lightning runs on_after_batch_transfer inside batch_to_device: adding both spans would count it twice
    (6 x 110 ms here instead of 6 x 60 ms)."""
    timer = LoopTimer()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, profiler=timer, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(SleepyHooks())
    assert len(timer.spans["on_after_batch_transfer"]) == 6 and len(timer.spans["batch_to_device"]) == 6
    assert 6 * 0.06 <= timer.host_hooks(0.0, float("inf")) < 6 * 0.06 + 0.2


def test_fast_switches_are_trainer_gpu_fast(tmp_path):
    """bench.fast composes trainer=gpu_fast (not a copy of it): its switches, with the command line winning."""
    cfg = compose(["trainer=gpu_fast", "model.compile=false"], tmp_path, config_name="bench")
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.benchmark is True
    assert cfg.model.channels_last is True and cfg.data.gpu_decode is True
    assert cfg.model.compile is False
