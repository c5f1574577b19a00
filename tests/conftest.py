"""Shared test fixtures. Tests run the real components: real photos, real Hydra configs, real Lightning."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from helpers.config import REFERENCE_DIR, TINY, compose


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Derived bins and estimated priors go to a per-session cache, never the user's."""
    os.environ["COLORIZATION_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _no_leaked_log_handlers():
    """Hydra apps run in-process (colorize, evaluate) attach a file and a console handler to the root logger. A later
    test would write to a run directory already removed (tmp_path_retention_policy) or to a closed capture stream."""
    yield
    for handler in list(logging.root.handlers):
        if not type(handler).__module__.startswith("_pytest"):
            logging.root.removeHandler(handler)
            handler.close()


@pytest.fixture
def reference_dir() -> Path:
    if not (REFERENCE_DIR / "pts_in_hull.npy").is_file():
        pytest.skip("../shared/reference is not present")
    return REFERENCE_DIR




@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint from a tiny real training run (2 steps, one epoch, one validation)."""
    from colorization.train import train

    out = tmp_path_factory.mktemp("tiny_run")
    overrides = [*TINY, "data.train_crops=8", "data.val_crops=4", "trainer.max_steps=2"]
    train(compose([*overrides, "trainer.num_sanity_val_steps=0", "callbacks.colorization_grid=null"], out))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def narrow_checkpoint(tmp_path_factory) -> Path:
    """Like ``trained_checkpoint``, with a quarter of the channels (model.width=0.25: 2 M parameters), for the tests
    that need a wider network than TINY's (the Python API, export and ONNX, the demo)."""
    from colorization.train import train

    out = tmp_path_factory.mktemp("narrow_run")
    overrides = [*TINY, "data.train_crops=8", "data.val_crops=4", "trainer.max_steps=2", "model.width=0.25"]
    train(compose([*overrides, "trainer.num_sanity_val_steps=0", "callbacks.colorization_grid=null"], out))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Runs colorization.train's main as `python -m colorization.train ARGS` would, in this process: (exit status,
    stderr). The one-line errors come from the same decorators as in a real process (a few tests run one too)."""
    import sys

    from hydra.core.global_hydra import GlobalHydra

    from colorization.train import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLORIZATION_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def call(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["colorization.train", *args])
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        finally:
            GlobalHydra.instance().clear()
        return code, capsys.readouterr().err

    return call


# ---- fixtures: a labeled set of real photo crops, and a (2-step) AlexNet colorization checkpoint --------------
@pytest.fixture(scope="session")
def labeled_dir(tmp_path_factory) -> Path:
    """<root>/{train,val}/<photo>/<i>.jpg: 128 x 128 JPEG crops of four bundled photos (16 train, 12 val each)."""
    from colorization.data.sources import write_labeled_samples

    return write_labeled_samples(tmp_path_factory.mktemp("labeled"))


@pytest.fixture(scope="session")
def alexnet_ckpt(tmp_path_factory) -> Path:
    from colorization.train import train

    out = tmp_path_factory.mktemp("alexnet_run")
    train(compose(["experiment=alexnet_rebalanced", *TINY, "data.crop_size=64", "trainer.max_steps=2"], out))
    return out / "checkpoints" / "last.ckpt"
