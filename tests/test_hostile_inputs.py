"""Files from strangers: settings that name callables, pickles that run code. Each attack runs for real against a
real checkpoint, and the file it would create must not appear."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from colorization.checkpoints import UnsafeFileError, checked_settings
from colorization.errors import ConfigError
from colorization.models.module import ColorizationModule

FILE_MAKERS = [  # callables that Hydra's blocklist lets through and that create or truncate a file
    ("builtins.open", lambda victim: {"_args_": [str(victim), "w"]}),
    ("io.open", lambda victim: {"_args_": [str(victim), "w"]}),
    ("logging.FileHandler", lambda victim: {"filename": str(victim)}),
    ("shutil.copyfile", lambda victim: {"src": __file__, "dst": str(victim)}),
    ("os.makedirs", lambda victim: {"name": str(victim)}),
    ("pathlib.Path.mkdir", lambda victim: {"_args_": [str(victim)]}),
]


def hostile_checkpoint(clean: Path, out: Path, key: str, setting: dict) -> Path:
    checkpoint = torch.load(clean, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"][key] = setting
    torch.save(checkpoint, out)
    return out


@pytest.mark.parametrize("target, args", FILE_MAKERS, ids=[t for t, _ in FILE_MAKERS])
@pytest.mark.parametrize("nested", [False, True], ids=["top", "nested"])
def test_a_checkpoint_whose_settings_name_a_file_maker_is_refused_and_nothing_is_made(
    trained_checkpoint, tmp_path, target, args, nested
):
    victim = tmp_path / "victim"
    setting = {"_target_": target, **args(victim)}
    if nested:  # inside an allowed optimizer
        setting = {"_target_": "torch.optim.Adam", "_partial_": True, "betas": setting}
    path = hostile_checkpoint(trained_checkpoint, tmp_path / "evil.ckpt", "optimizer", setting)
    with pytest.raises(ConfigError, match=r"model\.optimizer.*_target_.*refused") as info:
        ColorizationModule.load_from_checkpoint(path)
    assert "\n" not in str(info.value)
    from colorization.api import Colorizer
    from colorization.models.pretrained import load_module

    for load in (load_module, Colorizer.from_checkpoint):  # every loader builds the module, and refuses
        with pytest.raises(ConfigError, match="refused"):
            load(path)
    # a clean module whose settings are changed afterwards refuses at configure_optimizers (Trainer.fit's call)
    module = ColorizationModule.load_from_checkpoint(trained_checkpoint)
    module.hparams.scheduler = setting
    with pytest.raises(ConfigError, match=r"model\.scheduler.*refused"):
        module.configure_optimizers()
    assert not victim.exists()


def test_the_allowed_settings_are_torch_optimizers_and_schedulers():
    for target in ("torch.optim.Adam", "torch.optim.SGD", "torch.optim.lr_scheduler.StepLR",
                   "colorization.models.schedules.PiecewiseConstantLR"):  # fmt: skip
        assert checked_settings({"_target_": target, "_partial_": True}, "model.optimizer")
    for target in ("torch.optim.Optimizer.zero_grad", "torch.save", "torch.optim", 7, None, "antigravity.fly"):
        with pytest.raises(ConfigError, match="refused"):
            checked_settings({"_target_": target}, "model.optimizer")
    with pytest.raises(ConfigError, match=r"model\.optimizer\.params\[0\]\._target_: refused"):
        checked_settings(
            {"_target_": "torch.optim.SGD", "params": [{"_target_": "torch.optim.Adam"}]}, "model.optimizer"
        )


def test_the_probe_refuses_hostile_settings_and_a_pickle_given_to_resume(alexnet_ckpt, labeled_dir, tmp_path):
    from colorization.models.probe import LinearProbes
    from colorization.probe import probe
    from conftest import compose
    from test_probe import PROBE_TINY

    victim = tmp_path / "victim"
    with pytest.raises(ConfigError, match=r"probe\.optimizer.*refused"):
        LinearProbes({}, 2, {"conv1": None}, optimizer={"_target_": "builtins.open", "_args_": [str(victim), "w"]})

    class Payload:  # what a stranger's "checkpoint" may hold: a pickle that runs a command when loaded
        def __reduce__(self):
            return (os.system, (f"touch {victim}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": Payload()}, evil)  # a real checkpoint file whose pickle would call os.system
    cfg = compose(
        [f"ckpt_path={alexnet_ckpt}", f"data.root={labeled_dir / 'train'}", f"data.val_root={labeled_dir / 'val'}",
         *PROBE_TINY, f"resume={evil}", "trainer.max_steps=1"],
        tmp_path / "run",
        "probe",
    )  # fmt: skip
    with pytest.raises(UnsafeFileError, match=r"resume=.*evil.ckpt: refused"):
        probe(cfg)
    assert not victim.exists()
