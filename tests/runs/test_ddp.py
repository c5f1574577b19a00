"""DDP for real: `python -m colorization.train` with 2 CPU processes (gloo), as Lightning launches it under
Hydra. The global batch is split over the ranks, the ranks train on disjoint examples, SyncBatchNorm is
an option, and Hydra plus Lightning's relaunch of rank 1 leave exactly one run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from colorization.errors import ConfigError
from helpers.config import TINY, compose
from helpers.processes import run_train
from helpers.seen import write_color_images

TINY_FOLDER = [o for o in TINY if not o.startswith("data.val_crops")]  # a samples-only key




def run_dirs(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "logs").glob("*/*/*") if p.is_dir())


def test_global_batch_that_does_not_split_over_the_ranks_fails_in_one_line(tmp_path):
    from colorization.train import train

    cfg = compose([*TINY, "trainer.strategy=ddp", "trainer.devices=2", "data.batch_size=5"], tmp_path)
    with pytest.raises(ConfigError, match=r"data.batch_size=5 is the global batch .* 2 processes"):
        train(cfg)


def test_two_ranks_train_on_disjoint_examples_with_half_the_global_batch_each(tmp_path):
    images = tmp_path / "images"
    write_color_images(images, 24)  # 2 held out for validation, 22 for training: 5 steps of 2 x 2
    seen = tmp_path / "seen"
    result = run_train(
        [
            *TINY_FOLDER,
            "data=folder",
            f"data.root={images}",
            "data.batch_size=4",
            "trainer.strategy=ddp",
            "trainer.devices=2",
            "trainer.max_steps=3",
            "+callbacks.seen._target_=helpers.seen.SeenRecorder",
            f"+callbacks.seen.out_dir={seen}",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((seen / f"run_rank{r}.json").read_text()) for r in (0, 1)]
    for record in ranks:
        assert record["world_size"] == 2
        assert record["batch_sizes"] == [2, 2, 2]  # data.batch_size=4 is the global batch
        assert not record["sync_batchnorm"]
    ids0, ids1 = (set(r["ids"]) for r in ranks)
    assert len(ids0) == len(ids1) == 6, ranks
    assert not ids0 & ids1, f"both ranks trained on {ids0 & ids1}"
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 1, f"expected one run directory, got {dirs}"
    assert (dirs[0] / "checkpoints" / "last.ckpt").is_file()


def test_sync_batchnorm_option_converts_the_network_and_is_refused_on_cpu(tmp_path):
    import hydra
    import torch

    from colorization.models.eccv16 import ECCV16
    from colorization.train import train

    cfg = compose(
        [*TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=true"], tmp_path
    )
    trainer = hydra.utils.instantiate(cfg.trainer)
    synced = trainer.strategy._layer_sync.apply(ECCV16(8))  # what DDPStrategy.setup does to the model
    kinds = {type(m) for m in synced.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert kinds == {torch.nn.SyncBatchNorm}
    with pytest.raises(ConfigError, match="trainer.sync_batchnorm=true needs CUDA"):
        train(cfg)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_sync_batchnorm_on_one_gpu(tmp_path):
    images = tmp_path / "images"
    write_color_images(images, 24)
    seen = tmp_path / "seen"
    args = [*TINY_FOLDER, "data=folder", f"data.root={images}", "trainer=ddp", "trainer.accelerator=gpu"]
    args += ["trainer.devices=1", "trainer.max_steps=2", "trainer.sync_batchnorm=true"]
    args += ["+callbacks.seen._target_=helpers.seen.SeenRecorder", f"+callbacks.seen.out_dir={seen}"]
    result = run_train(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((seen / "run_rank0.json").read_text())["sync_batchnorm"]


@pytest.mark.slow
def test_exact_command_ddp_two_cpu_processes(tmp_path):
    """The issue's command at full size (176 x 176 crops, global batch 40): minutes on 2 CPU cores."""
    args = "experiment=rebalanced trainer.accelerator=cpu trainer.devices=2 trainer.strategy=ddp trainer.max_steps=3"
    result = run_train(args.split(), tmp_path, timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 1, f"expected one run directory, got {dirs}"


@pytest.mark.slow
def test_ddp_in_a_multirun_keeps_one_directory_per_job(tmp_path):
    """Lightning relaunches rank 1 with sys.argv: in a multirun that must be this job, not the sweep."""
    images = tmp_path / "images"
    write_color_images(images, 24)
    result = run_train(
        [
            "-m",
            *TINY_FOLDER,
            "data=folder",
            f"data.root={images}",
            "trainer.strategy=ddp",
            "trainer.devices=2",
            "trainer.max_steps=2",
            "callbacks.colorization_grid=null",
            "loss=unbalanced,rebalanced",
        ],
        tmp_path,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweeps = sorted((tmp_path / "logs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1 and not (tmp_path / "logs" / "train" / "runs").exists()
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    assert len(jobs) == 2, jobs
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file()
    assert len(list(sweeps[0].rglob("last.ckpt"))) == 2  # and nothing from a rerun sweep
