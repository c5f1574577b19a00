"""Fine-tuning from the authors' released ECCV16 weights: ``model.init_from=colorization_release_v2-9b330a0b.pth``.

The state dict is made here from their file's keys and shapes, written out below (their PyTorch port's
``eccv16.py``: BatchNorm with gamma and beta after each block, ``model8.6`` the 313-way head, ``model_out`` the
fixed 313 -> 2 conv holding the bins / 110), not from this project's module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from colorization.errors import ConfigError
from colorization.train import train
from helpers.authors_file import authors_state, grid_313
from helpers.config import REFERENCE_DIR, REPO, TINY, compose


@pytest.fixture
def release(tmp_path, monkeypatch) -> tuple[Path, dict, np.ndarray]:
    """The authors' file with their own 313 bins when ../shared/reference has them, else grid bins (the bins can
    then not be checked: a warning, as for the real file without pts_in_hull.npy)."""
    if (REFERENCE_DIR / "pts_in_hull.npy").is_file():
        monkeypatch.setenv("COLORIZATION_REFERENCE_DIR", str(REFERENCE_DIR))
        bins = np.load(REFERENCE_DIR / "pts_in_hull.npy").astype(np.float64)
    else:
        monkeypatch.setenv("COLORIZATION_REFERENCE_DIR", str(tmp_path / "no_reference_here"))
        bins = grid_313()
    state = authors_state(bins)
    path = tmp_path / "colorization_release_v2-9b330a0b.pth"
    torch.save(state, path)
    return path, state, bins


FROZEN = ["model.optimizer.lr=0", "model.optimizer.weight_decay=0"]  # two steps that change no weight
# the authors' weights fix the layout: these runs train the full-width ECCV16 (TINY without model.width)
RUN = [
    *(o for o in TINY if not o.startswith("model.width")),
    "trainer.max_steps=2",
    "data.train_crops=8",
    "data.val_crops=4",
    "trainer.num_sanity_val_steps=0",
]
RUN += ["callbacks.colorization_grid=null", "color.download=false"]
# last.ckpt only, without Adam's moments: 129 MB instead of 2 x 0.39 GB of temporary files
RUN += ["callbacks.model_checkpoint=null", "+callbacks.last_checkpoint.save_weights_only=true"]


def checkpoint_of(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("loss", ["rebalanced", pytest.param("l2", marks=pytest.mark.slow)])
def test_training_starts_from_the_authors_weights(release, tmp_path, loss):
    """Default model (eccv16, Caffe BatchNorm) and color.bins (srgb): the run takes the port's layout and their bins;
    with a zero learning rate the trained network's parameters are exactly the file's (the head only for the
    classification losses)."""
    path, state, bins = release
    out = tmp_path / loss
    train(compose([*RUN, *FROZEN, f"model.init_from={path}", f"loss={loss}"], out))
    ckpt = checkpoint_of(out)
    hp = ckpt["hyper_parameters"]
    assert (hp["batchnorm"], float(hp["input_scale"]), hp["arch"]) == ("affine", 100.0, "eccv16")
    assert np.array_equal(ckpt["state_dict"]["encoder.bins"].numpy(), bins.astype(np.float32))  # their 313 bins
    params = [k for k in state if not k.startswith("model_out") and "running" not in k]
    for key in params:
        got = ckpt["state_dict"][f"net.{key}"]
        if key.startswith("model8.6.") and loss == "l2":
            assert got.shape[0] == 2  # a new 2-channel regression head
            continue
        assert torch.equal(got, state[key]), key


def test_bad_files_and_disagreeing_configs_fail_in_one_line(release, tmp_path, monkeypatch, capsys):
    path, state, _ = release
    wrong = dict(state)
    wrong["model1.0.weight"] = torch.zeros(32, 1, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ConfigError, match=r"not the authors' ECCV16 weights \(wrong shape: model1.0.weight"):
        train(compose([*RUN, f"model.init_from={tmp_path}/wrong.pth"], tmp_path / "a"))
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(ConfigError, match="neither a colorization.train checkpoint"):
        train(compose([*RUN, f"model.init_from={tmp_path}/foreign.pth"], tmp_path / "b"))
    with pytest.raises(ConfigError, match="model.width=0.5 disagrees"):
        train(compose([*RUN, f"model.init_from={path}", "model.width=0.5"], tmp_path / "c"))
    # values set on the command line: through the Hydra entry point (one line on stderr, exit status 2)
    from colorization.train import main

    for override, message in (
        ("color.bins=srgb", "color.bins=srgb disagrees with the 313 bins"),
        ("model.batchnorm=caffe", "model.batchnorm=caffe disagrees (it needs affine; use model=eccv16_port)"),
    ):
        argv = ["train", f"model.init_from={path}", override, *RUN, f"hydra.run.dir={tmp_path}/run"]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1, err


@pytest.mark.slow  # the issue's exact command: the full-size default run (crop 176, batch 40) for 2 steps on a CPU
@pytest.mark.timeout(3600)  # about 10-20 minutes on 2 shared cores: 2 training steps and 256 validation crops
def test_the_issues_command(release, tmp_path):
    path, state, _ = release
    src = str(REPO / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "WANDB_MODE": "offline",
    }
    cmd = [sys.executable, "-m", "colorization.train", f"model.init_from={path}", "trainer.max_steps=2"]
    cmd += ["trainer.accelerator=cpu", f"hydra.run.dir={tmp_path}/run", "color.download=false"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tensors of the authors' ECCV16 (every layer, their head included" in done.stdout + done.stderr
    got = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert (got["net.model8.6.weight"] - state["model8.6.weight"]).abs().max() < 1e-3  # started from theirs
