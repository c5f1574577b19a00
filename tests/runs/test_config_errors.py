"""Bad configurations end in ONE line naming the key (exit status 2), before any heavy work.

Command-line mistakes that Hydra itself catches (unknown key, unknown group option, unparsable override)
go through the real entry point (in-process and in subprocesses); wrong values go through train() wrapped
exactly as the entry point wraps it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from colorization.errors import ConfigError
from colorization.runs.entry import one_line_errors
from colorization.train import train
from helpers.config import REPO, TINY, compose

FOLDER = [arg for arg in TINY if not arg.startswith("data.val_crops")]  # TINY for data=folder


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["foo=1"], "error: foo: no such config key (a new key needs a '+': +foo=VALUE)"),
        (["data=folder", "data.rot=/x"], "error: data.rot: no such config key (did you mean data.root? "),
        (["loss.lamda=0.5"], "error: loss.lamda: no such config key (did you mean loss.lam? "),
        (["data=nope"], "error: In 'train': Could not find 'data/nope' (options: folder, hf, samples, shards)"),
        (["loss.lam"], "error: Error parsing override 'loss.lam': missing EQUAL at '<EOF>'"),
        (["+loss.lam=1"], "error: Could not append to config. An item is already at 'loss.lam'."),
    ],
)
def test_command_line_mistakes_give_one_line_naming_the_key(cli, tmp_path, args, expected):
    code, err = cli(*args)
    assert code == 2
    assert _one_line(err).startswith(expected)
    assert not (tmp_path / "logs").exists()  # no run directory: nothing started


def test_hydra_full_error_set_by_the_user_still_shows_the_full_error(cli, monkeypatch):
    from hydra.errors import ConfigCompositionException

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigCompositionException):
        cli("foo=1")
    assert os.environ["HYDRA_FULL_ERROR"] == "1"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.temperature=0"], "error: model.temperature=0"),
        (["model.temperature=-0.5"], "error: model.temperature=-0.5"),
        (["loss.lam=1.5"], "error: loss.lam=1.5 must be in [0, 1]"),
        (["loss.lam=-0.1"], "error: loss.lam=-0.1 must be in [0, 1]"),
        (["loss.lam=abc"], "error: loss.lam='abc' must be a number"),
        (["loss.sigma=0"], "error: loss.sigma=0"),
        (["loss.name=huber"], "error: loss.name='huber'"),
        (["loss.k=0"], "error: loss.k=0 must be >= 1"),
        (["loss.k=100000"], "error: loss.k=100000 is larger than the number of bins Q="),
        (["data.crop_size=36"], "error: data.crop_size=36: model.arch=eccv16 needs a multiple of 8"),
        (["data.crop_size=0"], "error: data.crop_size=0"),
        (["data.batch_size=four"], "error: data.batch_size='four' must be an integer"),
        (["data.num_workers=-1"], "error: data.num_workers=-1 must be >= 0"),
        (["data.on_error=ignore"], "error: data.on_error='ignore' is not one of ('skip', 'raise')"),
        (["data=folder"], "error: data.root is not set"),
        (["data=folder", "data.root=/no/such/dir"], "error: data.root=/no/such/dir: no such directory"),
        (["ckpt_path=/no/such.ckpt"], "error: ckpt_path=/no/such.ckpt: no such file"),
        (["callbacks.fault_tolerance.max_nonfinite=0"], "error: callbacks.fault_tolerance.max_nonfinite=0"),
        (["color.bins=/no/such/pts_in_hull.npy", "color.download=false"], "error: "),
    ],
)
def test_invalid_values_give_one_line_naming_the_key_before_any_work(tmp_path, capsys, overrides, expected):
    out = tmp_path / "run"
    cfg = compose([*(FOLDER if "data=folder" in overrides else TINY), *overrides], out)
    with pytest.raises(SystemExit) as exit_:
        one_line_errors(train)(cfg)  # what the entry point runs
    assert exit_.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(expected)
    if expected == "error: ":  # a path given for the bins: the message names it
        assert "/no/such/pts_in_hull.npy" in line
    assert not out.exists()  # failed before any run directory, logger or checkpoint


def test_data_folder_with_a_missing_val_root(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photos / "a.png")  # a valid root: only val_root is wrong
    cfg = compose([*FOLDER, "data=folder", f"data.root={photos}", "data.val_root=/no/val"], tmp_path / "run")
    with pytest.raises(SystemExit):
        one_line_errors(train)(cfg)
    assert _one_line(capsys.readouterr().err) == "error: data.val_root=/no/val: no such directory"


def test_the_real_command_prints_one_line_for_each_kind_of_mistake(tmp_path):
    """Subprocesses, started together: an unknown key (Hydra's error) and a malicious checkpoint (ours)."""
    from helpers.hostile_files import malicious_checkpoint

    marker = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    cases = {
        "unknown key": (
            ["data.roots=/x", "data=folder"],
            "error: data.roots: no such config key (did you mean data.root?",
        ),
        "malicious": ([f"ckpt_path={evil}"], f"error: ckpt_path={evil}: refused"),
    }
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLORIZATION_LOG_DIR": str(tmp_path / "logs")}
    env.pop("HYDRA_FULL_ERROR", None)
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "colorization.train", "logger=csv", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in cases.items()
    }
    for name, process in processes.items():
        out, err = process.communicate(timeout=600)
        assert process.returncode == 2, (name, err[-2000:])
        assert _one_line(err).startswith(cases[name][1]), name
    assert not marker.exists()


def test_a_run_that_cannot_make_one_training_batch_fails_in_one_line(tmp_path, cli):
    """The issue's case: 28 photos, the default batch of 40 (the loader drops the last partial batch)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(28):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    code, err = cli(
        "data=folder", f"data.root={photos}", "trainer.max_steps=5", "trainer.accelerator=cpu", "logger=csv"
    )
    assert code == 2
    line = _one_line(err)
    assert line.startswith("error: data.batch_size=40 is larger than the ") and "training images" in line, line
    assert not list((tmp_path / "logs").rglob("*.ckpt"))


COMMANDS = ["train", "evaluate", "probe", "prior", "colorize", "demo", "export", "bench", "shards", "study"]


def run_main(command: str, args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """``python -m colorization.<command> ARGS`` in this process: (exit status, stdout, stderr)."""
    import importlib
    import sys

    from hydra.core.global_hydra import GlobalHydra

    module = importlib.import_module(f"colorization.{command}" + (".__main__" if command == "study" else ""))
    monkeypatch.setattr(sys, "argv", [f"colorization.{command}", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    try:
        module.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    finally:
        GlobalHydra.instance().clear()
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_gives_one_line_and_exit_2_for_a_mistyped_key_and_exit_0_for_help(
    command, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLORIZATION_LOG_DIR", str(tmp_path / "logs"))
    action = ["make"] if command == "study" else []
    code, _, err = run_main(command, [*action, "nosuchkey=1"], monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and lines == ["error: nosuchkey: no such config key (a new key needs a '+': +nosuchkey=VALUE)"], (
        err
    )
    code, out, _ = run_main(command, ["--help"], monkeypatch, capsys)
    assert code == 0 and ("usage" in out or "powered by Hydra" in out), out[:300]


@pytest.mark.parametrize(
    ("command", "args", "missing", "extra"),
    [("demo", ["ckpt_path=model.ckpt"], "gradio", "demo"), ("study", ["serve", "study=somewhere"], "fastapi", "study")],
)
def test_a_missing_extra_is_one_line_naming_it(command, args, missing, extra, tmp_path, monkeypatch, capsys):
    """The web and export dependencies are extras: a command that lacks its extra names it, exit status 2."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else find_spec(name, *a))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLORIZATION_LOG_DIR", str(tmp_path / "logs"))
    code, _, err = run_main(command, args, monkeypatch, capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {missing} is not installed: pip install 'colorization[{extra}]' (or colorization[all])"
    ], err


def test_export_onnx_without_onnx_names_the_extra(monkeypatch):
    import importlib.util

    from colorization.serving.onnx import export_onnx

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"colorization\[export\]"):
        export_onnx(None, "model.onnx")


BLOCK_EXTRAS = """
import sys
for name in ("gradio", "fastapi", "uvicorn", "onnx"):
    sys.modules[name] = None  # as if not installed: importing it raises, find_spec says None
import runpy
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
"""


def test_training_and_evaluating_need_no_extra(tmp_path):
    """``pip install colorization`` trains and evaluates: no web or export package is imported on the way."""
    from helpers.config import REPO, TINY

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLORIZATION_LOG_DIR": str(tmp_path / "logs")}
    train = [sys.executable, "-c", BLOCK_EXTRAS, "colorization.train", *TINY, "trainer.max_steps=2"]
    result = subprocess.run(train, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (ckpt,) = (tmp_path / "logs").rglob("last.ckpt")
    evaluate = [sys.executable, "-c", BLOCK_EXTRAS, "colorization.evaluate", f"ckpt_path={ckpt}", "logger=csv",
                "trainer.accelerator=cpu", "protocol.size=64", "data.num_workers=0"]  # fmt: skip
    result = subprocess.run(evaluate, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (next((tmp_path / "logs").rglob("metrics.json"))).is_file()


def test_a_run_stopped_by_a_one_line_error_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLORIZATION_LOG_DIR", str(tmp_path / "logs"))
    code, _, err = run_main("evaluate", [f"ckpt_path={tmp_path / 'missing.ckpt'}"], monkeypatch, capsys)
    assert code == 2 and "no such file" in err
    assert not list((tmp_path / "logs").glob("evaluate/runs/*")), "an empty run folder was left behind"


def test_the_console_leaves_out_lightnings_start_up_lines_unless_verbose(tmp_path):
    """GPU/TPU availability, Lightning's adverts and "Seed set to" are not the user's business; W&B's end-of-run
    summary neither; hydra.verbose=true (Hydra's own switch) shows them."""
    from helpers.config import TINY

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLORIZATION_LOG_DIR": str(tmp_path / "logs")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="false")
    args = [sys.executable, "-m", "colorization.train", *TINY, "logger=wandb", "trainer.max_steps=1"]
    quiet = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    loud = subprocess.run([*args, "hydra.verbose=true"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert quiet.returncode == loud.returncode == 0, quiet.stderr[-2000:] + loud.stderr[-2000:]
    assert "W&B: offline run in " in quiet.stdout + quiet.stderr  # wandb's lines replaced by one saying where
    for noise in ("GPU available", "TPU available", "Seed set to", "Run summary", "wandb: Run data is saved"):
        assert noise not in quiet.stdout + quiet.stderr, noise
        assert noise in loud.stdout + loud.stderr, noise
