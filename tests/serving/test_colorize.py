"""python -m colorization.colorize on real photos of every kind: sizes kept, inputs untouched, bad files skipped."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from PIL import Image
from skimage.color import rgb2lab

from colorization.colorize import colorize, main
from colorization.errors import ConfigError
from colorization.serving.outputs import plan
from helpers.authors_file import authors_state, grid_bins
from helpers.config import REPO, compose

FAST = ["size=64", "num_workers=0", "batch_size=3"]


def png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGB or RGBA PNG, written out by hand (Pillow cannot write 16-bit color)."""
    h, w, c = pixels.shape
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def photos(tmp_path) -> tuple[Path, dict[str, tuple[int, int]]]:
    """A folder of real photos in every format the command reads; returns it and each file's displayed (w, h)."""
    root, data = tmp_path / "photos", skimage.data
    (root / "more").mkdir(parents=True)
    Image.fromarray(data.rocket()).save(root / "rocket.jpg")  # JPEG
    Image.fromarray(data.chelsea()).save(root / "chelsea.png")  # PNG, 8-bit RGB
    coffee = data.coffee()[100:190, 200:320]
    png16(root / "more" / "coffee16.png", coffee.astype(np.uint16) * 257)  # PNG, 16-bit RGB
    alpha = np.linspace(0, 65535, 120, dtype=np.uint16)[None, :, None].repeat(90, 0)
    png16(root / "more" / "coffee16_alpha.png", np.concatenate([coffee.astype(np.uint16) * 257, alpha], 2))
    astronaut = np.asarray(Image.fromarray(data.astronaut()).resize((100, 100)))
    rgba = np.dstack([astronaut, np.linspace(0, 255, 100, dtype=np.uint8)[None].repeat(100, 0)])
    Image.fromarray(rgba, "RGBA").save(root / "astronaut_alpha.png")  # PNG, 8-bit with alpha
    Image.fromarray(data.camera()[::4, ::3]).save(root / "camera_gray.png")  # grayscale
    Image.fromarray(data.camera()[::5, ::4].astype(np.uint16) * 257).save(root / "camera_gray16.png")  # 16-bit gray
    Image.fromarray(data.coffee()[::2, ::2]).convert("CMYK").save(root / "more" / "coffee_cmyk.jpg")  # CMYK JPEG
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    Image.fromarray(data.chelsea()[:120, :200]).save(root / "rotated.jpg", exif=exif)
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "notes.txt").write_text("not an image, and not named like one")
    sizes = {}
    for f in root.rglob("*"):
        if f.suffix in (".jpg", ".png") and f.name != "broken.jpg":
            with Image.open(f) as im:
                w, h = im.size
                sizes[str(f.relative_to(root))] = (h, w) if f.name == "rotated.jpg" else (w, h)
    assert sizes["rotated.jpg"] == (120, 200)
    return root, sizes


def digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(overrides: list[str], out: Path):
    return colorize(compose([*FAST, *overrides], out, config_name="colorize"))


def test_the_command_on_every_format(trained_checkpoint, photos, tmp_path, monkeypatch, capsys):
    """The issue's command through the Hydra entry point: a folder of mixed photos in, one image out per readable
    input at its full (displayed) size, exit status 0, the unreadable file listed, the inputs untouched."""
    root, sizes = photos
    before = digest(root)
    monkeypatch.chdir(tmp_path)
    argv = [
        "colorize",
        f"ckpt_path={trained_checkpoint}",
        f"input={root}",
        "output=out",
        f"hydra.run.dir={tmp_path}/run",
    ]
    monkeypatch.setattr(sys, "argv", [*argv, *FAST])
    main()  # returns: no SystemExit
    printed = capsys.readouterr().out
    assert f"colorized {len(sizes)} image(s) into out" in printed
    assert "skipped 1 input(s)" in printed and "broken.jpg" in printed and "notes.txt" not in printed
    assert digest(root) == before
    written = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    # same relative paths, as PNG; and the record of what colorize wrote
    assert written == {Path(name).with_suffix(".png").as_posix() for name in sizes} | {".colorize-outputs.jsonl"}
    for name, size in sizes.items():
        with Image.open(tmp_path / "out" / Path(name).with_suffix(".png")) as im:
            assert (im.size, im.mode) == (size, "RGB"), name
    # the output's lightness is the input's own (the network only adds ab), up to 8-bit rounding and gamut clipping
    src = rgb2lab(np.asarray(Image.open(root / "chelsea.png").convert("RGB")))[..., 0]
    out = rgb2lab(np.asarray(Image.open(tmp_path / "out" / "chelsea.png")))[..., 0]
    assert np.abs(src - out).mean() < 1.0
    gray = np.asarray(Image.open(tmp_path / "out" / "camera_gray.png")).astype(int)
    assert np.abs(gray[..., 0] - gray[..., 2]).mean() > 0  # a gray input comes out in color


@pytest.mark.slow  # a fresh interpreter: most of a minute of imports on 2 shared cores
def test_the_command_line(trained_checkpoint, photos, tmp_path):
    root, sizes = photos
    src = str(REPO / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "colorization.colorize", f"ckpt_path={trained_checkpoint}", f"input={root}"]
    cmd += ["output=out", *FAST, f"hydra.run.dir={tmp_path}/run"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"colorized {len(sizes)} image(s) into out" in done.stdout
    assert len(list((tmp_path / "out").rglob("*.png"))) == len(sizes)


def test_nothing_readable_exits_non_zero(trained_checkpoint, tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG but not really")
    argv = ["colorize", f"ckpt_path={trained_checkpoint}", f"input=[{tmp_path}/bad.png,{tmp_path}/absent.jpg]"]
    monkeypatch.setattr(sys, "argv", [*argv, f"output={tmp_path}/out", f"hydra.run.dir={tmp_path}/run", *FAST])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    printed = capsys.readouterr().out
    assert "colorized 0 image(s)" in printed and "bad.png" in printed
    assert "absent.jpg: no such file or folder" in printed
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.png"))


def test_inputs_are_never_overwritten(trained_checkpoint, photos, tmp_path):
    root, sizes = photos
    before = digest(root)
    result = run([f"ckpt_path={trained_checkpoint}", f"input={root}/*.png", f"output={root}"], tmp_path)
    assert digest(root).items() >= before.items()  # every input still there, byte for byte
    names = sorted(p.name for p in result.images)
    assert names == ["astronaut_alpha_1.png", "camera_gray16_1.png", "camera_gray_1.png", "chelsea_1.png"]


def test_outputs_stay_inside_the_output_folder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for f in ("a/x.jpg", "b/x.png", "b/deep/y.png"):
        (tmp_path / f).write_bytes(b"")
    out = tmp_path / "out"
    inputs = [f"{tmp_path}/a/x.jpg", f"{tmp_path}/b/x.png", f"{tmp_path}/a/../b/**/*.png", f"{tmp_path}/b/x.png"]
    jobs = plan(inputs, out, ".png").jobs
    targets = [j.target.relative_to(out.resolve()).as_posix() for j in jobs]
    assert targets == ["x.png", "x_1.png", "deep/y.png"]  # same names told apart; the same file once; sub-folders kept
    assert all(j.target.resolve().is_relative_to(out.resolve()) for j in jobs)
    (out / "x_strip.png").parent.mkdir()
    (out / "x_strip.png").write_bytes(b"")  # an input named like the strip of x.png's output
    jobs = plan([f"{tmp_path}/a/x.jpg", str(out / "x_strip.png")], out, ".png", strip=True).jobs
    assert [(j.target.name, j.strip_target.name) for j in jobs] == [
        ("x_1.png", "x_1_strip.png"),
        ("x_strip_1.png", "x_strip_1_strip.png"),
    ]
    missing = plan([f"{tmp_path}/nothing/*.png", f"{tmp_path}/nope.jpg"], out, ".png").missing
    assert [why for _, why in missing] == ["the pattern matches no file", "no such file or folder"]


def test_temperature_strip(trained_checkpoint, tmp_path):
    Image.fromarray(skimage.data.chelsea()[50:250, 100:400]).save(tmp_path / "cat.png")
    common = [f"ckpt_path={trained_checkpoint}", f"input={tmp_path}/cat.png"]
    result = run([*common, f"output={tmp_path}/strip", "strip=true", "strip_temperatures=[1.0,0.38,0]"], tmp_path)
    plain = run([*common, f"output={tmp_path}/mean", "temperature=1.0"], tmp_path)
    strip = np.asarray(Image.open(result.strips[0])).astype(int)
    assert result.strips[0].name == "cat_strip.png" and strip.shape == (200, 3 * 300, 3)
    mean = np.asarray(Image.open(plain.images[0])).astype(int)
    assert np.abs(strip[:, :300] - mean).max() <= 1  # the first frame is the photo at T = 1
    assert np.abs(strip[:, :300] - strip[:, 600:]).mean() > 0.5  # and the mode (T = 0) differs from the mean


def test_bad_values_fail_in_one_line(trained_checkpoint, tmp_path):
    for override, key in (("format=gif", "format"), ("temperature=-0.5", "temperature"), ("size=3", "size")):
        with pytest.raises(ConfigError, match=key):
            run([f"ckpt_path={trained_checkpoint}", f"input={tmp_path}", override], tmp_path)
    with pytest.raises(ConfigError, match="input is not set"):
        run([f"ckpt_path={trained_checkpoint}"], tmp_path)
    with pytest.raises(ConfigError, match=r"no model: pass ckpt_path=CKPT \(a training checkpoint\), pretrained="):
        run([f"input={tmp_path}"], tmp_path)


def test_the_authors_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("COLORIZATION_REFERENCE_DIR", str(tmp_path / "no_reference_here"))
    torch.save(authors_state(grid_bins()), tmp_path / "release.pth")
    Image.fromarray(skimage.data.coffee()[::3, ::3]).save(tmp_path / "coffee.jpg")
    overrides = [f"model.weights={tmp_path}/release.pth", "color.download=false", f"input={tmp_path}/coffee.jpg"]
    result = run([*overrides, f"output={tmp_path}/out"], tmp_path)
    with Image.open(result.images[0]) as im:
        assert im.size == (200, 134)


def test_colorize_never_writes_through_a_planted_link_or_over_a_hard_linked_input(tmp_path):
    """The plan's outputs come from serving.safety.OutputPaths: a symbolic link planted under the natural output name
    (pointing outside), and an output name that is a hard link to an input, are both passed over."""
    photos, out = tmp_path / "in", tmp_path / "out"
    (photos / "sub").mkdir(parents=True)
    out.mkdir()
    for name in ("dog.jpg", "sub/cat.jpg", "bird.jpg"):
        (photos / name).write_bytes(b"")
    outside = tmp_path / "outside.png"
    (out / "dog.png").symlink_to(outside)
    os.link(photos / "bird.jpg", out / "bird.png")  # the natural output of bird.jpg is bird.jpg itself
    (out / "sub").symlink_to(tmp_path, target_is_directory=True)  # a folder that leads out of the output dir
    jobs = {j.source.name: j.target for j in plan(str(photos), out, ".png").jobs}
    assert jobs["dog.jpg"] == out.resolve() / "dog_1.png"
    assert jobs["bird.jpg"] == out.resolve() / "bird_1.png"
    assert jobs["cat.jpg"] == out.resolve() / "cat.png"  # not through out/sub -> tmp_path
    assert all(t.resolve().is_relative_to(out.resolve()) for t in jobs.values()) and not outside.exists()


def test_colorize_never_replaces_a_file_it_did_not_write(trained_checkpoint, tmp_path):
    """A user's file in output under an output's name, and a hard link planted there to a file elsewhere, are left as
    they are (the outputs take _1 names); colorize's own earlier output is replaced on a rerun, not duplicated."""
    photos, out = tmp_path / "in", tmp_path / "out"
    photos.mkdir()
    out.mkdir()
    Image.fromarray(skimage.data.chelsea()[::4, ::4]).save(photos / "cat.jpg")
    Image.fromarray(skimage.data.coffee()[::4, ::4]).save(photos / "cup.jpg")
    (out / "cat.png").write_bytes(b"the user's own file")
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(b"a file outside output")
    os.link(elsewhere, out / "cup.png")
    args = [f"ckpt_path={trained_checkpoint}", f"input={photos}", f"output={out}"]
    first = run(args, tmp_path / "1")
    assert sorted(p.name for p in first.images) == ["cat_1.png", "cup_1.png"]
    assert (out / "cat.png").read_bytes() == b"the user's own file"
    assert (
        elsewhere.read_bytes() == b"a file outside output" and (out / "cup.png").read_bytes() == elsewhere.read_bytes()
    )
    second = run(args, tmp_path / "2")  # the same names again: ours now, so replaced in place
    assert sorted(p.name for p in second.images) == ["cat_1.png", "cup_1.png"]
    assert sorted(p.name for p in out.iterdir()) == [
        ".colorize-outputs.jsonl",
        "cat.png",
        "cat_1.png",
        "cup.png",
        "cup_1.png",
    ]
    Image.open(out / "cat_1.png").verify()


def test_output_equal_to_input_colorizes_the_inputs_only_however_often_it_runs(trained_checkpoint, tmp_path):
    """Names alone cannot tell an earlier output from an input (cat.png of cat.jpg, cat_1.png of cat.png): the
    folder's record of what colorize wrote can. Three runs in a row add files the first time only."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage.data.chelsea()[::4, ::4]).save(photos / "cat.jpg")
    Image.fromarray(skimage.data.coffee()[::4, ::4]).save(photos / "cup.png")
    args = [f"ckpt_path={trained_checkpoint}", f"input={photos}", f"output={photos}"]
    counts = []
    for k in range(3):
        result = run(args, tmp_path / str(k))
        assert sorted(p.name for p in result.images) == ["cat.png", "cup_1.png"], k
        counts.append(len([p for p in photos.iterdir() if p.suffix in (".png", ".jpg")]))
    assert counts == [4, 4, 4]
    assert np.asarray(Image.open(photos / "cup.png")).shape == (skimage.data.coffee()[::4, ::4]).shape  # the input


def test_pretrained_gives_the_apis_pixels(narrow_checkpoint, tmp_path):
    """``colorize pretrained=DIR`` (an exported model, as the demo, evaluate and export take it) and the Python API on
    the same directory write the same pixels."""
    from colorization import Colorizer
    from colorization.export import export

    model = export(compose([f"ckpt_path={narrow_checkpoint}", f"output={tmp_path / 'model'}"], tmp_path / "run", "export"))
    (tmp_path / "in").mkdir()
    photo = tmp_path / "in" / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()[::2, ::2]).save(photo)
    result = run([f"pretrained={model}", f"input={photo}", f"output={tmp_path / 'out'}", "size=64"], tmp_path / "c")
    expected = Colorizer.from_pretrained(model, device="cpu", size=64)(Image.open(photo))
    (written,) = result.images
    assert np.array_equal(np.asarray(Image.open(written)), np.asarray(expected))
    with pytest.raises(ConfigError, match=r"pass one model, not ckpt_path=.* and pretrained="):
        run([f"ckpt_path={narrow_checkpoint}", f"pretrained={model}", f"input={photo}"], tmp_path / "d")
