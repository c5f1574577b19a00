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
    from helpers.config import PROBE_TINY, compose

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


# ---- exported models that are truncated, mis-shaped or non-finite ----------------------------------------------------
@pytest.fixture
def exported(narrow_checkpoint, tmp_path) -> Path:
    from colorization.api import Colorizer

    out = tmp_path / "exported"
    Colorizer.from_checkpoint(narrow_checkpoint, device="cpu").save_pretrained(out)
    return out


def damaged(exported: Path, how: str) -> Path:
    import struct

    from safetensors.torch import load_file, save_file

    weights = exported / "model.safetensors"
    raw = weights.read_bytes()
    if how == "truncated":
        weights.write_bytes(raw[: len(raw) // 2])
    elif how == "header_2_62":
        weights.write_bytes(struct.pack("<Q", 2**62) + raw[8:])
    elif how in ("misshaped", "nan"):
        tensors = load_file(weights)
        name = next(k for k in tensors if k.endswith("weight") and tensors[k].ndim == 4)
        tensors[name] = tensors[name][:1] if how == "misshaped" else torch.full_like(tensors[name], float("nan"))
        save_file(tensors, weights)
    return exported


@pytest.mark.parametrize("how", ["truncated", "header_2_62", "misshaped", "nan"])
def test_a_damaged_exported_model_is_refused_in_one_line_on_every_path(exported, tmp_path, how):
    from colorization.api import Colorizer
    from colorization.demo import load_colorizer
    from helpers.config import compose

    model = damaged(exported, how)
    with pytest.raises(ConfigError, match=r"from_pretrained\(.*exported.*\): (not a readable|refused)") as info:
        Colorizer.from_pretrained(model, device="cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"pretrained=.*exported") as info:
        load_colorizer(compose([f"pretrained={model}", "device=cpu"], tmp_path / "demo", "demo"))
    assert "\n" not in str(info.value)


def test_a_checkpoint_with_non_finite_weights_is_refused_by_colorize_and_evaluate(trained_checkpoint, tmp_path):
    from colorization.serving.model_choice import load_spec

    checkpoint = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    name = next(k for k in checkpoint["state_dict"] if k.endswith("weight"))
    checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], float("inf"))
    torch.save(checkpoint, tmp_path / "diverged.ckpt")
    with pytest.raises(ConfigError, match=r"ckpt_path=.*diverged.ckpt: refused: its weights hold NaN or infinite"):
        load_spec(str(tmp_path / "diverged.ckpt"), "ckpt_path")  # what every inference command loads through


# ---- images from strangers: bounded memory, one line for what cannot be read ----------------------------------------
GIANT_SCRIPT = """
import sys
from pathlib import Path

import torch
from PIL import Image

from colorization.api import Colorizer
from colorization.serving.demo_page import colorize_file

def peak_gb():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork and exec)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1e6

colorizer = Colorizer.from_checkpoint(sys.argv[1], device="cpu")
before = peak_gb()
api = colorizer(sys.argv[2]).size
after_api = peak_gb()
demo = Image.open(colorize_file(colorizer, sys.argv[2], 0.38, [1.0, 0.38, 0.0], Path(sys.argv[3])).download).size
print(*api, *demo, before, after_api, peak_gb())
"""


def test_a_258_kb_9400_pixel_png_stays_under_3_gb_through_the_api_and_the_demo(narrow_checkpoint, tmp_path):
    """The PNG passes the decompression-bomb guard (88.4 of 89.5 megapixels); in one piece, the float work of joining
    L and ab at full resolution took 9.7-11 GB. Peak resident memory of a fresh process, measured."""
    import subprocess
    import sys

    from PIL import Image, ImageDraw

    giant = tmp_path / "giant.png"
    image = Image.new("RGB", (9400, 9400), (120, 90, 60))
    ImageDraw.Draw(image).ellipse((1000, 1000, 8000, 8000), fill=(30, 140, 200))
    image.save(giant)
    assert giant.stat().st_size < 400_000
    done = subprocess.run(
        [sys.executable, "-c", GIANT_SCRIPT, str(narrow_checkpoint), str(giant), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    *sizes, before, after_api, after_demo = done.stdout.split()
    assert [int(v) for v in sizes] == [9400] * 4
    assert float(after_api) < 3.0, f"API: peak resident memory {float(after_api):.2f} GB (model loaded: {before})"
    assert float(after_demo) < 3.0, f"demo: peak resident memory {float(after_demo):.2f} GB"


def test_the_robustness_corpus_through_the_api_and_the_demo(narrow_checkpoint, tmp_path):
    """Every readable file comes back colorized at its displayed size; every bad one is a one-line error."""
    from colorization.api import Colorizer
    from colorization.data.image_files import BadImageError
    from colorization.serving.demo_page import colorize_file
    from helpers.hostile_files import make_corpus

    good, bad = make_corpus(tmp_path / "corpus")
    colorizer = Colorizer.from_checkpoint(narrow_checkpoint, device="cpu", size=64)
    for name, path in good.items():
        from PIL import Image, ImageOps

        size = ImageOps.exif_transpose(Image.open(path)).size
        assert colorizer(path).size == size, name
        photo, gray, color, strip, saved = colorize_file(colorizer, str(path), 0.38, [0.0], tmp_path)
        assert Image.open(saved).size == size, name
    for name, path in bad.items():
        with pytest.raises(BadImageError) as info:
            colorizer(path)
        assert "\n" not in str(info.value), name
        with pytest.raises(ValueError, match="is not an image this demo can read") as info:
            colorize_file(colorizer, str(path), 0.38, [0.0], tmp_path)
        assert "\n" not in str(info.value), name


def test_the_demo_runs_one_colorization_at_a_time_with_a_bounded_queue(narrow_checkpoint):
    from colorization.api import Colorizer
    from colorization.serving.demo_page import QUEUE_SIZE, app

    page = app(Colorizer.from_checkpoint(narrow_checkpoint, device="cpu", size=64))
    assert page._queue.max_size == QUEUE_SIZE and page._queue.default_concurrency_limit == 1
    events = [fn for fn in page.fns.values() if fn.name == "run"]
    assert len(events) == 3 and {fn.concurrency_id for fn in events} == {"colorize"}  # upload, T, resolution
    assert all(fn.concurrency_limit == 1 for fn in events)


def test_max_pixels_refuses_larger_images_in_one_line(trained_checkpoint, tmp_path):
    from PIL import Image

    from colorization.colorize import colorize
    from helpers.config import compose

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "small.png")
    Image.new("RGB", (400, 300), (10, 200, 10)).save(tmp_path / "large.png")
    args = [f"ckpt_path={trained_checkpoint}", f"input={tmp_path}", f"output={tmp_path / 'out'}", "size=32",
            "num_workers=0", "max_pixels=10000"]  # fmt: skip
    try:
        result = colorize(compose(args, tmp_path / "run", "colorize"))
    finally:
        Image.MAX_IMAGE_PIXELS = 89_478_485  # PIL's default: this process goes on with other tests
    assert [p.name for p in result.images] == ["small.png"]
    ((name, reason),) = result.skipped
    assert name.endswith("large.png") and "DecompressionBomb" in reason and "\n" not in reason
    with pytest.raises(ConfigError, match="max_pixels=0 must be a positive integer"):
        colorize(compose([*args[:-1], "max_pixels=0"], tmp_path / "run2", "colorize"))
