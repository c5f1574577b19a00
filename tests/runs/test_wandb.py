"""W&B dashboards: one offline run per multirun job (grouped, named, closed), holding config, git state, metrics
and the image panels, read back from the run files; the ab histograms and the temperature strip checked
against independent computations."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorization.callbacks import AbHistogram, TemperatureStrip
from colorization.callbacks.ab_histogram import AB_EDGES, ab_histogram, histogram_image
from colorization.callbacks.git_state import git_state
from colorization.callbacks.temperature_strip import decode_at_temperatures, temperature_strip
from colorization.color import ab_bins, lab_to_rgb
from helpers.config import TINY, compose
from helpers.multirun import job_dirs, run_train, sweep_dir


# ---- reading an offline run back: wandb's own record format (wandb.proto) ---------------------------------
def wandb_records(path: Path):
    """The records of a run-*.wandb file: a LevelDB-style log (7-byte header ':W&B' + version, 32 KiB blocks,
    each chunk: crc32c, length, type FULL/FIRST/MIDDLE/LAST), each record a wandb.proto Record message."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, payload = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too small for a chunk header
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += block - pos % block
            continue
        payload += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(payload)
            yield record
            payload = b""


def _items(items) -> dict:
    out = {}
    for item in items:
        keys = list(item.nested_key) or [item.key]
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = json.loads(item.value_json)
    return out


def read_offline_run(run_dir: Path) -> dict:
    """{"run": the run record, "config": merged config, "history": [rows], "exited": bool}"""
    (file,) = list(run_dir.glob("run-*.wandb"))
    out = {"run": None, "config": {}, "history": [], "exited": False}
    for record in wandb_records(file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            out["config"].update(_items(record.run.config.update))
        elif kind == "config":
            out["config"].update(_items(record.config.update))
        elif kind == "history":
            out["history"].append(_items(record.history.item))
        elif kind == "exit":
            out["exited"] = True
    return out


def _offline_run(job: Path) -> Path:
    (run,) = list((job / "wandb").glob("offline-run-*"))
    return run


# no val_check_interval: the epoch (250 batches) outlasts max_steps; FinalValidation still validates at step 2
WANDB_TINY = [*TINY[1:], "logger=wandb", "trainer.max_steps=2"]


def test_each_multirun_job_has_its_own_offline_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    code = run_train(["-m", "experiment=l2,rebalanced", *WANDB_TINY, f"paths.log_dir={tmp_path}"], monkeypatch)
    assert code == 0
    sweep = sweep_dir(tmp_path)
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0_experiment=l2", "1_experiment=rebalanced"]
    runs = [read_offline_run(_offline_run(job)) for job in jobs]
    assert runs[0]["run"].run_id != runs[1]["run"].run_id
    for job, run, variant in zip(jobs, runs, ("l2", "rebalanced"), strict=True):
        # grouped by sweep, named by the swept value, tagged, configured, closed
        assert run["run"].run_group == f"train_{sweep.name}"
        assert run["run"].display_name == f"experiment={variant}"
        assert variant in run["run"].tags
        assert run["config"]["loss"]["name"] == variant and run["config"]["trainer"]["max_steps"] == 2
        git = run["config"]["git"]
        assert isinstance(git["dirty"], bool) and len(git["commit"]) == 40 and int(git["commit"], 16) >= 0
        assert run["exited"], "the run was finished before the next job"
        # metrics
        rows = run["history"]
        train_loss = [r["train/loss"] for r in rows if "train/loss" in r]
        val_loss = [r["val/loss"] for r in rows if "val/loss" in r]
        assert train_loss and all(math.isfinite(v) for v in train_loss)  # the last step is always logged
        assert len(val_loss) == 1 and math.isfinite(val_loss[0])
        chroma = [r["val/chroma_true"] for r in rows if "val/chroma_true" in r]
        assert len(chroma) == 1 and chroma[0] > 0
        # image panels: in the history and as files of the run
        panels = {"val/colorizations", "val/ab_histogram"} | ({"val/temperature_strip"} if variant != "l2" else set())
        logged = {key for r in rows for key, value in r.items() if isinstance(value, dict) and "_type" in value}
        assert logged == panels
        for key in panels:
            (entry,) = [r[key] for r in rows if key in r]
            path = _offline_run(job) / "files" / entry["filenames"][0]
            with Image.open(path) as image:
                assert image.size == (entry["width"], entry["height"]), key
        assert (job / "images").is_dir() and len(list((job / "images").glob("*.png"))) == len(panels)


def test_checkpoints_are_uploaded_only_when_online(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose(["logger=wandb"], tmp_path)
    assert (cfg.logger.wandb.offline, cfg.logger.wandb.log_model) == (True, False)
    monkeypatch.setenv("WANDB_MODE", "online")
    cfg = compose(["logger=wandb"], tmp_path)
    assert (cfg.logger.wandb.offline, cfg.logger.wandb.log_model) == (False, True)
    assert cfg.logger.wandb.name is None and cfg.logger.wandb.group is None, "single runs: W&B picks the name"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_issue_command_multirun_leaves_two_wandb_runs(tmp_path):
    """The issue's exact command (batch 40 of 176 x 176 crops: minutes on 2 cores)."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    args = ["-m", "experiment=l2,rebalanced", "trainer.max_steps=2", "trainer.accelerator=cpu"]
    result = subprocess.run(
        [sys.executable, "-m", "colorization.train", *args, f"paths.log_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=3600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_dirs(sweep_dir(tmp_path))
    assert [j.name for j in jobs] == ["0_experiment=l2", "1_experiment=rebalanced"]
    for job in jobs:
        run = read_offline_run(_offline_run(job))
        assert any("train/loss" in r for r in run["history"]) and run["exited"]
        assert list((_offline_run(job) / "files" / "media" / "images").rglob("*.png"))


# ---- the ab histograms ---------------------------------------------------------------------------------
def test_ab_histogram_matches_numpy():
    g = torch.Generator().manual_seed(0)
    ab = torch.randn(3, 2, 5, 7, generator=g) * 60  # some values fall outside [-115, 115): not counted
    counts = ab_histogram(ab)
    a, b = ab[:, 0].flatten().numpy(), ab[:, 1].flatten().numpy()
    expected, _, _ = np.histogram2d(a, b, bins=[AB_EDGES.numpy(), AB_EDGES.numpy()])
    assert counts.shape == (23, 23)
    np.testing.assert_array_equal(counts.numpy(), expected)
    inside = ((np.abs(a + 0) <= 115) & (np.abs(b) <= 115)).sum()
    assert counts.sum().item() == inside


def test_ab_histogram_counts_values_on_the_edges_as_numpy():
    edges = AB_EDGES.tolist()
    values = torch.tensor([edges[0], edges[1], edges[-2], edges[-1], -5.0, 5.0, 115.5, -115.5])
    ab = torch.stack(torch.meshgrid(values, values, indexing="ij"))[None]  # every pair of them
    expected, _, _ = np.histogram2d(ab[0, 0].flatten().numpy(), ab[0, 1].flatten().numpy(), bins=[edges, edges])
    np.testing.assert_array_equal(ab_histogram(ab).numpy(), expected)


def test_histogram_image_puts_red_right_and_yellow_up():
    counts = torch.zeros(23, 23)
    counts[21, 11] = 5  # a = +100 (red), b = 0
    counts[11, 21] = 5  # a = 0, b = +100 (yellow)
    image = histogram_image(counts, cell=4)
    assert image.shape == (3, 92, 92)
    red_cell = image[:, 11 * 4 + 1, 21 * 4 + 1]  # row from the top = middle, column = right
    yellow_cell = image[:, 1 * 4 + 1, 11 * 4 + 1]  # row near the top (+b), column = middle
    assert red_cell[0] > red_cell[1] + 0.3 and red_cell[0] > red_cell[2] + 0.3
    assert yellow_cell[0] > yellow_cell[2] + 0.3 and yellow_cell[1] > yellow_cell[2] + 0.3
    assert torch.all(image[:, 0, 0] == 1), "empty cells are white"
    counts[11, 21] = 1
    paler = histogram_image(counts, cell=4)[:, 1 * 4 + 1, 11 * 4 + 1]
    assert torch.all(paler >= yellow_cell) and paler.sum() > yellow_cell.sum() + 0.2, "log density over white"


# ---- the temperature strip -----------------------------------------------------------------------------
def _annealed_mean_numpy(logits: np.ndarray, bins: np.ndarray, T: float) -> np.ndarray:
    """Written out per pixel: f_T(z) = exp(log z / T) / sum exp(log z / T) with z = softmax(logits)."""
    Q, h, w = logits.shape
    out = np.zeros((2, h, w))
    for i in range(h):
        for j in range(w):
            z = np.exp(logits[:, i, j] - logits[:, i, j].max())
            z /= z.sum()
            f = np.exp(np.log(z) / T)
            f /= f.sum()
            out[:, i, j] = f @ bins
    return out


def test_decoding_at_each_temperature_matches_the_papers_formula():
    bins = ab_bins("srgb").double()
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, len(bins), 3, 4, generator=g, dtype=torch.float64) * 3
    temperatures = (1.0, 0.38, 0.0)
    decoded = decode_at_temperatures(logits, bins, temperatures)
    assert decoded.shape == (3, 1, 2, 3, 4)
    for k, T in enumerate(temperatures[:2]):
        expected = _annealed_mean_numpy(logits[0].numpy(), bins.numpy(), T)
        np.testing.assert_allclose(decoded[k, 0].numpy(), expected, rtol=1e-4, atol=1e-3)
    mode = bins.numpy()[logits[0].numpy().argmax(0)]  # (h, w, 2): the most probable bin
    np.testing.assert_array_equal(decoded[2, 0].numpy(), mode.transpose(2, 0, 1))


def test_temperature_strip_joins_each_decoding_with_the_input_lightness():
    bins = ab_bins("srgb")
    logits = torch.randn(1, len(bins), 2, 3)
    L = torch.full((1, 1, 8, 12), 60.0)
    truth = torch.rand(1, 3, 8, 12)
    strip = temperature_strip(L, logits, bins, truth, temperatures=(1.0, 0.0))
    assert strip.shape == (3, 8, 12 * 3)
    torch.testing.assert_close(strip[:, :, 24:], truth[0])
    mode_ab = bins[logits[0].argmax(0)].movedim(-1, 0)  # (2, 2, 3), nearest-upsampled check at a block centre
    up = torch.nn.functional.interpolate(mode_ab[None], size=(8, 12), mode="bilinear", align_corners=False)
    expected = lab_to_rgb(torch.cat((L, up), dim=1))[0].clamp(0, 1)
    torch.testing.assert_close(strip[:, :, 12:24], expected, atol=1e-5, rtol=1e-5)


def test_wandb_callbacks_run_in_a_real_training_and_write_their_figures(tmp_path):
    from colorization.train import train

    trainer = train(compose([*TINY, "experiment=unbalanced", "trainer.max_steps=2"], tmp_path))
    # the epoch is 250 batches long: only FinalValidation makes step 2 validate (metrics, figures, checkpoint)
    assert trainer.num_training_batches > 2 and "val/loss" in trainer.callback_metrics
    assert (tmp_path / "checkpoints" / "best-step0000002.ckpt").is_file()
    names = sorted(p.name for p in (tmp_path / "images").glob("*.png"))
    assert names == ["ab_histogram_step0000002.png", "temperature_strip_step0000002.png", "val_step0000002.png"]
    with Image.open(next((tmp_path / "images").glob("temperature_strip_*.png"))) as strip:
        assert strip.size == (32 * 8, 32 + 12)  # 7 temperatures + the truth, 32 x 32 crops, a 12-pixel label band
        band = np.asarray(strip.convert("L"))[32:]
    for frame in range(8):  # each frame has its label (dark text on white) under it
        assert (band[:, 32 * frame : 32 * (frame + 1)] < 128).sum() > 5, frame
    assert AbHistogram().max_batches == 4 and TemperatureStrip().temperatures[-1] == 0.0


# ---- git state -----------------------------------------------------------------------------------------
def test_git_state_reports_commit_and_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    assert git_state(tmp_path) == {"commit": None, "dirty": None}
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert git_state(tmp_path) == {"commit": head.strip(), "dirty": False}
    (tmp_path / "notes.txt").write_text("untracked files do not make it dirty")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path) == {"commit": head.strip(), "dirty": True}
