"""Faults during training: non-finite losses, SIGTERM / SIGINT, and resuming with ckpt_path=last.

Real (tiny) Lightning runs on CPU. The interrupted-and-resumed run must end with exactly the weights of a
run that was never interrupted, so its data does not depend on order or random augmentation: one
left-right symmetric photo, exactly the crop size (random crop and flip leave it unchanged), batch 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import skimage
import torch
from PIL import Image

from colorization.callbacks import FaultTolerance, NonFiniteLossError
from colorization.checkpoints import load_checkpoint
from colorization.models.module import ColorizationModule
from colorization.train import train
from helpers.config import REPO, compose
from helpers.photos import photo_folder


class SignalAt(L.Callback):
    """Sends this process a signal at the end of a given training step, as a scheduler or a user would."""

    def __init__(self, step: int, signum: int = signal.SIGTERM):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class NanAt(L.Callback):
    """Makes the loss of the given training batches (counted from 0) NaN; records a parameter and a BatchNorm
    buffer after every batch. The instance the config builds is NanAt.last."""

    last: NanAt | None = None

    def __init__(self, batches: list[int]):
        self.batches, self.calls, self.params, self.buffers, self.steps = set(batches), 0, [], [], []
        NanAt.last = self

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.calls in self.batches:
            batch["L"].fill_(float("nan"))
        self.calls += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.params.append(pl_module.net.model1[0].weight.detach().clone())
        self.buffers.append(pl_module.net.model1[-1].running_mean.detach().clone())
        self.steps.append(trainer.global_step)


def symmetric_photos(root: Path, names: list[str], size: int = 32) -> Path:
    root.mkdir(parents=True)
    for name in names:
        photo = np.asarray(Image.fromarray(getattr(skimage.data, name)()).resize((size // 2, size)))
        Image.fromarray(np.concatenate([photo, photo[:, ::-1]], axis=1)).save(root / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return symmetric_photos(root / "train", ["chelsea"]), symmetric_photos(root / "val", ["coffee"])


def overrides(photos, log_dir: Path, max_steps: int) -> list[str]:
    train_dir, val_dir = photos
    return [
        "logger=csv",
        "model.width=0.125",  # as TINY: 6 MB checkpoints (the bit-identical resume holds at any width)
        "trainer.accelerator=cpu",
        "data=folder",
        f"data.root={train_dir}",
        f"data.val_root={val_dir}",
        "data.crop_size=32",
        "data.resize=null",
        "data.batch_size=1",
        "data.num_workers=0",
        "color.prior_images=4",
        "+trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "callbacks.model_checkpoint.monitor=null",
        "callbacks.colorization_grid=null",
        f"trainer.max_steps={max_steps}",
        f"paths.log_dir={log_dir}",
    ]


def run(args: list[str], log_dir: Path, name: str):
    cfg = compose(args, log_dir / "train" / "runs" / name)
    return train(cfg), log_dir / "train" / "runs" / name


def test_interrupted_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(photos, tmp_path):
    full, _ = run(overrides(photos, tmp_path / "a", 2), tmp_path / "a", "full")
    assert full.global_step == 2

    logs = tmp_path / "b"
    interrupted = [
        *overrides(photos, logs, 2),
        "+callbacks.stop._target_=test_resume.SignalAt",
        "+callbacks.stop.step=1",
    ]
    with pytest.raises(SystemExit) as exit_info:
        run(interrupted, logs, "first")
    assert exit_info.value.code in (None, 0)  # a clean exit
    checkpoint = logs / "train" / "runs" / "first" / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(checkpoint)  # weights_only: our checkpoints are plain containers
    assert saved["global_step"] == 1

    # the second step needs everything restored exactly: weights, Adam's moments and step count, loop state
    resumed, _ = run([*overrides(photos, logs, 2), "ckpt_path=last"], logs, "second")
    assert resumed.global_step == 2
    final_full = full.lightning_module.state_dict()
    final_resumed = resumed.lightning_module.state_dict()
    assert final_full.keys() == final_resumed.keys()
    for key, value in final_full.items():
        assert torch.equal(value, final_resumed[key]), key
    # the resumed run did train: its weights moved on from the checkpoint's
    moved = [not torch.equal(saved["state_dict"][k], v) for k, v in final_resumed.items() if "weight" in k]
    assert any(moved)
    # and Lightning's own loader, with our safe default, reads our checkpoints
    loaded = ColorizationModule.load_from_checkpoint(logs / "train" / "runs" / "second" / "checkpoints" / "last.ckpt")
    assert torch.equal(loaded.net.model1[0].weight, final_resumed["net.model1.0.weight"])


def test_sigint_saves_a_checkpoint_and_stops_after_the_batch(photos, tmp_path):
    before = signal.getsignal(signal.SIGINT)
    args = [
        *overrides(photos, tmp_path, 5),
        "+callbacks.stop._target_=test_resume.SignalAt",
        "+callbacks.stop.step=1",
        f"+callbacks.stop.signum={int(signal.SIGINT)}",
    ]
    with pytest.raises(SystemExit) as exit_info:
        run(args, tmp_path, "interrupted")
    assert exit_info.value.code in (None, 0)
    saved = load_checkpoint(tmp_path / "train" / "runs" / "interrupted" / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 1
    assert signal.getsignal(signal.SIGINT) == before  # Ctrl+C behaves normally again after the run


def test_ckpt_path_last_picks_the_newest_run_and_starts_fresh_without_one(tmp_path, caplog):
    from colorization.runs.trainer import resolve_ckpt_path

    cfg = compose(["ckpt_path=last", f"paths.log_dir={tmp_path}"], tmp_path / "train" / "runs" / "now")
    assert resolve_ckpt_path(cfg) is None  # none yet: a requeued job can always pass ckpt_path=last
    for age, run_name in enumerate(["newest", "older", "oldest"]):
        path = tmp_path / "train" / "runs" / run_name / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        os.utime(path, (time.time() - 100 * age, time.time() - 100 * age))
    assert resolve_ckpt_path(cfg) == str(tmp_path / "train" / "runs" / "newest" / "checkpoints" / "last.ckpt")


def test_nonfinite_losses_skip_their_step_and_a_run_of_them_stops_with_a_checkpoint(photos, tmp_path):
    args = [
        *overrides(photos, tmp_path, 8),
        "callbacks.fault_tolerance.max_nonfinite=2",
        "callbacks.fault_tolerance.check_every_n_steps=1",  # read the device counts each step
        "+callbacks.nan._target_=test_resume.NanAt",
        "+callbacks.nan.batches=[1,3,4]",  # one lone NaN (skipped, training goes on), then two in a row
    ]
    with pytest.raises(NonFiniteLossError) as info:
        run(args, tmp_path, "nan")
    nan = NanAt.last
    message = str(info.value)
    assert "2 non-finite losses in a row" in message and "model.optimizer.lr" in message
    assert "callbacks.fault_tolerance.max_nonfinite" in message and "\n" not in message
    assert nan.calls == 5  # stopped right after the second NaN in a row
    # a skipped batch changes nothing: not the weights, not the BatchNorm statistics
    for skipped in (1, 3, 4):
        assert torch.equal(nan.params[skipped], nan.params[skipped - 1]), skipped
        assert torch.equal(nan.buffers[skipped], nan.buffers[skipped - 1]), skipped
    assert not torch.equal(nan.params[2], nan.params[1])  # a finite batch after a NaN one trains again
    assert all(torch.isfinite(p).all() for p in nan.params)
    checkpoint = load_checkpoint(tmp_path / "train" / "runs" / "nan" / "checkpoints" / "last.ckpt")
    assert torch.equal(checkpoint["state_dict"]["net.model1.0.weight"], nan.params[-1])
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


def test_max_nonfinite_must_be_a_positive_integer():
    from colorization.errors import ConfigError

    with pytest.raises(ConfigError, match=r"callbacks\.fault_tolerance\.max_nonfinite=0"):
        FaultTolerance(max_nonfinite=0)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_from_outside_stops_the_cli_cleanly_with_a_checkpoint(photos, tmp_path, signum):
    """The real command, signalled by another process while it trains, then resumed with ckpt_path=last."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    args = [arg for arg in overrides(photos, tmp_path, 10_000) if not arg.startswith("paths.log_dir")]
    env["COLORIZATION_LOG_DIR"] = str(tmp_path)
    command = [sys.executable, "-m", "colorization.train", *args]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline and not list(tmp_path.glob("train/runs/*/checkpoints/last.ckpt")):
        time.sleep(0.5)  # ModelCheckpoint writes last.ckpt after each (one-batch) epoch: training is under way
    process.send_signal(signum)
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 0, output[-3000:]
    (checkpoint,) = tmp_path.glob("train/runs/*/checkpoints/last.ckpt")
    step = load_checkpoint(checkpoint)["global_step"]
    assert step >= 1 and f"stopped by a signal at step {step}; checkpoint {checkpoint}" in output

    resume = [sys.executable, "-m", "colorization.train", *args, "ckpt_path=last", f"trainer.max_steps={step + 1}"]
    done = subprocess.run(resume, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {checkpoint}" in done.stdout + done.stderr


# ---- exact resume after SIGKILL, mid-epoch ----------------------------------------------------------------------
def killed_and_resumed(
    args: list[str], tmp_path: Path, kill_step: int, ckpt_step: int, resume_args: tuple[str, ...] = (), timeout=900
):
    """The run of ``args`` three times, as `python -m colorization.train` processes: uninterrupted; killed with SIGKILL
    (its whole process group) at the end of ``kill_step``; resumed (with ``resume_args`` too) from the last
    checkpoint, which must be ``ckpt_step``'s. Returns the final state dicts of the uninterrupted and resumed run."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
        "WANDB_MODE": "offline",
    }

    def command(name: str, *extra: str) -> subprocess.CompletedProcess:
        run_env = {**env, "COLORIZATION_LOG_DIR": str(tmp_path / name)}
        return subprocess.run(
            [sys.executable, "-m", "colorization.train", *args, *extra],
            cwd=tmp_path,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,  # its own process group: the kill takes the workers and ranks, not pytest
        )

    full = command("full")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = command("killed", "+callbacks.kill._target_=helpers.kill.KillAt", f"+callbacks.kill.step={kill_step}")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    (checkpoint,) = (tmp_path / "killed").glob("train/runs/*/checkpoints/last.ckpt")
    assert load_checkpoint(checkpoint)["global_step"] == ckpt_step
    resumed = command("killed", "ckpt_path=last", *resume_args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {checkpoint}" in resumed.stdout + resumed.stderr

    def final(name: str) -> dict:
        runs = sorted((tmp_path / name).glob("train/runs/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        return load_checkpoint(runs[-1])

    killed_and_resumed.log = resumed.stdout + resumed.stderr
    return final("full"), final("killed")


def assert_same_weights(full: dict, resumed: dict) -> None:
    assert full["global_step"] == resumed["global_step"]
    a, b = full["state_dict"], resumed["state_dict"]
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    assert worst <= 1e-6, f"the resumed run's weights differ from the uninterrupted run's by up to {worst}"


def resume_args(root: Path, val: Path, max_steps: int, every: int, workers: int = 2) -> list[str]:
    return [
        "logger=csv",
        "model.width=0.125",
        "trainer.accelerator=cpu",
        "data=folder",
        f"data.root={root}",
        f"data.val_root={val}",
        "data.crop_size=32",
        "data.resize=48",  # the 72 px photos are resized, then cropped at random and flipped: order and crops matter
        "data.batch_size=4",
        f"data.num_workers={workers}",
        "color.prior_images=8",
        "callbacks.colorization_grid=null",
        "callbacks.temperature_strip=null",
        f"callbacks.last_checkpoint.every_n_train_steps={every}",
        f"trainer.max_steps={max_steps}",
    ]


@pytest.fixture(scope="module")
def real_photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    return photo_folder(root / "train", 24), photo_folder(root / "val", 4, seed=1)


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_runs_weights(real_photos, tmp_path):
    """24 photos, batch 4: epochs of 6 steps. Checkpoints every 3 steps; SIGKILL at step 11 (mid-epoch 1, after the
    step-9 checkpoint); the resumed run trains steps 10-16 across the epoch boundary, with 2 loader workers."""
    train_dir, val_dir = real_photos
    full, resumed = killed_and_resumed(resume_args(train_dir, val_dir, 16, 3), tmp_path, kill_step=11, ckpt_step=9)
    assert_same_weights(full, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("kill_step, ckpt_step", [(7, 6), (4, 3)])
def test_a_run_killed_after_an_epoch_end_checkpoint_or_in_epoch_0_resumes_exactly(
    real_photos, tmp_path, kill_step, ckpt_step
):
    """The other places a checkpoint can fall: at an epoch's last step (6: the resumed run starts epoch 1, not an
    empty epoch), and in the first epoch."""
    train_dir, val_dir = real_photos
    args = resume_args(train_dir, val_dir, 10, 3)
    full, resumed = killed_and_resumed(args, tmp_path, kill_step=kill_step, ckpt_step=ckpt_step)
    assert_same_weights(full, resumed)


@pytest.fixture(scope="module")
def photo_shards(real_photos, tmp_path_factory):
    """The same photos as shards (resize 48: the run's data.resize)."""
    from colorization.shards import convert

    train_dir, val_dir = real_photos
    out = tmp_path_factory.mktemp("shards") / "shards"
    data = ["data=folder", f"data.root={train_dir}", f"data.val_root={val_dir}", "data.resize=48"]
    convert(compose([*data, f"output={out}", "chunk_bytes=16kB"], out.parent / "hydra", config_name="shards"))
    return out


def shard_args(shards: Path, max_steps: int, every: int) -> list[str]:
    args = [
        a
        for a in resume_args(Path("-"), Path("-"), max_steps, every)
        if not a.startswith(("data=", "data.root", "data.val_root"))
    ]
    return ["data=shards", f"data.root={shards}", *args]


@pytest.mark.slow
def test_a_run_on_shards_killed_mid_epoch_resumes_exactly(photo_shards, tmp_path):
    """LitData's loader with 2 workers: killed at step 11 (mid-epoch 1), resumed from step 9, on to step 16."""
    full, resumed = killed_and_resumed(shard_args(photo_shards, 16, 3), tmp_path, kill_step=11, ckpt_step=9)
    assert_same_weights(full, resumed)


@pytest.mark.slow
def test_a_ddp_run_on_shards_killed_mid_epoch_resumes_exactly(photo_shards, tmp_path):
    """trainer=ddp with 2 CPU processes (gloo): each rank's loader position and random states are its own in the
    checkpoint (rank 0 writes it). The resumed run asks for 1 loader worker and gets the checkpoint's 2 back."""
    args = [*shard_args(photo_shards, 10, 2), "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    full, resumed = killed_and_resumed(args, tmp_path, kill_step=5, ckpt_step=4, resume_args=("data.num_workers=1",))
    assert_same_weights(full, resumed)
    assert "data.num_workers=1: resuming with the checkpoint's 2 loader workers" in killed_and_resumed.log


@pytest.mark.slow
@pytest.mark.parametrize("source", ["samples", "hf", "hf_streaming"])
def test_a_run_killed_mid_epoch_resumes_exactly_on_every_other_source(real_photos, tmp_path, source):
    """The bundled photos (the issue's quickstart, killed at step 26, resumed from the validation-time checkpoint at
    step 20), a Hugging Face imagefolder, map-style and streaming (2 workers; the stream's crops come from each
    worker's count of examples, which travels in the checkpoint)."""
    train_dir, val_dir = real_photos
    if source == "samples":
        args = ["experiment=quickstart", "trainer.max_steps=40", "model.width=0.125", "logger=csv"]
        full, resumed = killed_and_resumed(args, tmp_path, kill_step=26, ckpt_step=20)
    else:
        folder = [
            a
            for a in resume_args(train_dir, val_dir, 16, 3)
            if not a.startswith(("data=", "data.root", "data.val_root"))
        ]
        args = ["data=hf", "data.path=imagefolder", f"data.data_dir={train_dir.parent}", "data.split=train",
                "data.val_split=validation", *folder]  # fmt: skip
        if source == "hf_streaming":
            args += ["data.streaming=true", "data.batches_per_epoch=6"]
        full, resumed = killed_and_resumed(args, tmp_path, kill_step=11, ckpt_step=9)
    assert_same_weights(full, resumed)


def test_last_ckpt_is_the_newest_state_even_when_val_loss_stops_improving(tmp_path):
    """Lightning's save_last follows its top-k saves: with a metric that stops improving, last.ckpt stayed behind.
    Here the best checkpoint is the first validation's (mode=max on a falling loss), last.ckpt the final step's."""
    from helpers.config import TINY

    args = [*TINY, "trainer.max_steps=6", "trainer.val_check_interval=2", "callbacks.model_checkpoint.mode=max",
            "callbacks.last_checkpoint.every_n_train_steps=null"]  # fmt: skip
    run(args, tmp_path, "run")
    checkpoints = tmp_path / "train" / "runs" / "run" / "checkpoints"
    assert load_checkpoint(checkpoints / "last.ckpt")["global_step"] == 6
    (best,) = checkpoints.glob("best-step*.ckpt")
    assert load_checkpoint(best)["global_step"] < 6
