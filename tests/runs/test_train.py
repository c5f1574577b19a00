"""Training end to end: configs compose, every loss variant runs, the loss goes down, runs resume, bad input fails fast."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from colorization.runs.entry import config_dir
from colorization.train import train
from helpers.config import TINY, compose

EXPERIMENTS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose([f"experiment={experiment}"], tmp_path)
    assert cfg.loss.name in ("l2", "unbalanced", "rebalanced")
    assert cfg.model._target_ and cfg.data._target_ and cfg.trainer._target_


def test_authors_preset_reproduces_the_released_setup(tmp_path):
    cfg = compose(["experiment=authors"], tmp_path)
    assert (cfg.loss.k, cfg.color.bins, cfg.color.prior) == (10, "official", "official")
    assert cfg.model.optimizer.lr == pytest.approx(3.16e-5)
    assert (list(cfg.model.scheduler.milestones), cfg.model.scheduler.gamma) == ([215000, 430000], 0.316)
    assert list(cfg.model.optimizer.betas) == [0.9, 0.99] and cfg.model.optimizer.weight_decay == pytest.approx(1e-3)
    assert (cfg.model.batchnorm, cfg.model.input_scale, cfg.model.init) == ("caffe", 1.0, "kmeans")
    assert (cfg.data.batch_size, cfg.data.crop_size, cfg.trainer.max_steps) == (40, 176, 450000)


@pytest.mark.parametrize("variant", ["l2", "unbalanced", "rebalanced"])
def test_each_loss_variant_runs_fast_dev_run(variant, tmp_path):
    trainer = train(compose([f"experiment={variant}", *TINY, "+trainer.fast_dev_run=true"], tmp_path))
    assert trainer.state.finished and trainer.global_step == 1
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def _logged(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def test_short_training_on_the_sample_photos_lowers_the_loss(tmp_path):
    overrides = [
        *TINY,
        "experiment=unbalanced",
        "trainer.max_steps=30",
        "trainer.log_every_n_steps=1",
        "model.optimizer.lr=1e-3",
        "data.batch_size=6",
        "trainer.val_check_interval=30",
    ]
    train(compose(overrides, tmp_path))
    ce = _logged(tmp_path, "train/ce")
    assert len(ce) == 30
    first, last = sum(ce[:6]) / 6, sum(ce[-6:]) / 6
    assert last < 0.8 * first, (first, last)  # from about log(Q) towards the entropy of the photos' colors
    assert list((tmp_path / "images").glob("val_step*.png")), "the validation grid is written as a PNG"
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_resumed_run_continues_from_the_checkpoint_step(tmp_path):
    first = tmp_path / "first"
    train(compose([*TINY, "trainer.max_steps=3", "trainer.val_check_interval=3"], first))
    ckpt = first / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 3
    second = tmp_path / "second"
    trainer = train(
        compose([*TINY, "trainer.max_steps=5", "trainer.val_check_interval=5", f"ckpt_path={ckpt}"], second)
    )
    assert trainer.global_step == 5
    steps = {int(float(s)) for s in _logged(second, "step")}
    assert min(steps) >= 3, "the resumed run logs only steps after the checkpoint"


def _cli(*args, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "colorization.train", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_cli_runs_in_unique_directories_even_in_the_same_second(tmp_path):
    args = [*TINY, "+trainer.fast_dev_run=true", f"paths.log_dir={tmp_path}"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "colorization.train", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    runs = list((tmp_path / "train" / "runs").iterdir())
    assert len(runs) == 2
    assert all((r / ".hydra" / "config.yaml").is_file() for r in runs)


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["data=folder"], "data.root"),
        (["loss.k=1000"], "loss.k"),  # found only once the bins are known, still before any heavy work
    ],  # every other key: tests/runs/test_config_errors.py (which also runs the real command once)
)
def test_bad_config_gives_one_line_error_naming_the_key(args, key, cli):
    code, err = cli(*args, "logger=csv")
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and key in lines[0], err


def test_empty_folder_is_refused_naming_the_key(tmp_path, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    code, err = cli("data=folder", f"data.root={empty}", "logger=csv")
    assert code == 2
    assert err.strip().count("\n") == 0 and "data.root" in err


def test_unknown_option_is_refused_naming_the_key(cli):
    code, err = cli("data.no_such_key=3")
    assert code != 0 and "data.no_such_key" in err


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["l2", "unbalanced", "rebalanced"])
def test_issue_command_two_steps_on_cpu(variant, tmp_path):
    """The exact command from the foundation issue (batch 40 of 176 x 176 crops: minutes on 2 cores)."""
    result = _cli(
        f"experiment={variant}",
        "trainer.max_steps=2",
        "trainer.accelerator=cpu",
        f"paths.log_dir={tmp_path}",
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_readme_quickstart_leaves_checkpoints_logs_and_grid(tmp_path):
    result = _cli("experiment=quickstart", f"paths.log_dir={tmp_path}", timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = list((tmp_path / "train" / "runs").iterdir())
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "images").glob("*.png")) and list((run / "wandb").glob("offline-run-*"))


def hand_counted_flops(net: torch.nn.Module, size: int) -> int:
    """2 x multiply-accumulates of every convolution, from each layer's weight shape and output size (forward hooks):
    Conv2d: out elements x C_in / groups x k x k; ConvTranspose2d: in elements x C_out / groups x k x k."""
    total = 0

    def count(layer, inputs, output):
        nonlocal total
        k = layer.kernel_size[0] * layer.kernel_size[1]
        if isinstance(layer, torch.nn.ConvTranspose2d):
            total += 2 * inputs[0].numel() * layer.out_channels // layer.groups * k
        else:
            total += 2 * output.numel() * layer.in_channels // layer.groups * k

    hooks = [
        m.register_forward_hook(count)
        for m in net.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 1, size, size))
    for hook in hooks:
        hook.remove()
    return total


def test_the_console_of_a_run_is_clean_and_the_summary_shows_the_flops(tmp_path):
    """What a newcomer reads: none of the warnings every run printed (Lightning's hook notice and pytree
    deprecation, W&B's "anonymous"), no "Epoch 0/-2", and the model summary's FLOPs at the training crop."""
    from colorization.models.eccv16 import ECCV16

    overrides = ["experiment=quickstart", "model.width=0.125", "trainer.max_steps=2", f"paths.log_dir={tmp_path}"]
    result = _cli(*overrides)  # the default logger: W&B, offline here
    console = result.stdout + result.stderr
    assert result.returncode == 0, console
    for noise in ("on_after_batch_transfer", "anonymous setting", "LeafSpec", "Epoch 0/-", "Total FLOPs: 0 "):
        assert noise not in console, noise
    assert "Epoch 0" in console
    flops = float(re.search(r"Total FLOPs: ([\d.]+) M", console).group(1)) * 1e6
    expected = hand_counted_flops(ECCV16(261, width=0.125), 64)  # quickstart: 64 x 64 crops, the 261 sRGB bins
    assert abs(flops - expected) <= 0.05e6, (flops, expected)


def test_the_run_wrapper_logs_the_config_and_closes_the_wandb_run_whatever_happens(tmp_path):
    """runs.trainer.logged_run (train, evaluate, probe): the whole config first, then finish(exit_code=0), or 1 after a
    failure, which it lets through."""
    from lightning.pytorch.loggers import Logger
    from omegaconf import OmegaConf

    from colorization.runs.trainer import logged_run

    class Recorder(Logger):  # a logger whose experiment has W&B's finish(exit_code=...)
        name, version = "recorder", "0"

        def __init__(self):
            super().__init__()
            self.config, self.exit_codes = None, []
            self.experiment = type("Run", (), {"finish": lambda _, exit_code: self.exit_codes.append(exit_code)})()

        def log_hyperparams(self, params, *args, **kwargs):
            self.config = params

        def log_metrics(self, metrics, step=None):
            pass

    cfg = OmegaConf.create({"seed": 3, "model": {"width": "${seed}"}})
    for fails in (False, True):
        recorder = Recorder()
        trainer = L.Trainer(logger=recorder, default_root_dir=tmp_path, enable_progress_bar=False)
        with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
            with logged_run(trainer, cfg):
                assert recorder.config == {"seed": 3, "model": {"width": 3}}  # resolved, before the body runs
                if fails:
                    raise RuntimeError("the run failed")
        assert recorder.exit_codes == [1 if fails else 0]
