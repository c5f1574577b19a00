"""Bad images, untrusted files: every odd file is converted or skipped (counted, named), nothing unsafe runs.

The corpus is made here from scikit-image's photos with PIL: CMYK JPEG, palette / RGBA / LA / 16-bit /
gray PNGs, an EXIF-rotated JPEG, a tiny image, an animated GIF; and truncated, empty, text, garbage and
decompression-bomb files with image extensions.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from PIL import Image
from torch.utils.data import DataLoader

from colorization.checkpoints import UnsafeFileError, load_checkpoint
from colorization.data.datasets import (
    SKIPPED,
    BadImageError,
    HFImages,
    HFImageStream,
    ImageFiles,
    load_image,
    retry_transient,
    skipped_files,
    val_transform,
)
from colorization.errors import ConfigError
from colorization.serving.safety import safe_name, safe_output_path
from helpers.config import REPO
from helpers.hostile_files import make_corpus, malicious_checkpoint


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


# ---- decoding: converted correctly -------------------------------------------------------------------
def _raw(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_rgb_files_load_unchanged(corpus):
    good, _ = corpus
    for kind in ("rgb_png", "rgb_jpeg"):
        loaded = load_image(good[kind])
        assert loaded.dtype == torch.uint8 and loaded.shape[0] == 3
        np.testing.assert_array_equal(loaded.permute(1, 2, 0).numpy(), _raw(good[kind]))


def test_gray_and_16_bit_become_three_equal_channels(corpus):
    good, _ = corpus
    gray = _raw(good["gray"])
    for kind in ("gray", "gray16"):  # 16-bit values are v * 257: exactly v after scaling
        loaded = load_image(good[kind]).numpy()
        for channel in loaded:
            np.testing.assert_array_equal(channel, gray)


def test_alpha_is_composited_on_white(corpus):
    good, _ = corpus
    for kind in ("rgba", "la"):
        raw = _raw(good[kind]).astype(np.float64)
        color = raw[..., :-1] if raw.shape[-1] == 4 else np.repeat(raw[..., :1], 3, axis=-1)
        a = raw[..., -1:] / 255
        expected = color * a + 255 * (1 - a)
        loaded = load_image(good[kind]).permute(1, 2, 0).numpy().astype(np.float64)
        assert np.abs(loaded - expected).max() <= 1.0, kind
    # fully transparent pixels are white, not black
    assert (load_image(good["rgba"])[:, :, 0] == 255).all()


def test_cmyk_and_palette_convert_close_to_the_original(corpus):
    good, _ = corpus
    coffee = skimage.data.coffee()[::5, ::5][:64, :96]
    chelsea = skimage.data.chelsea()[::3, ::3][:64, :96]
    for kind, original, tolerance in (("cmyk", coffee, 4.0), ("palette", chelsea, 6.0)):
        loaded = load_image(good[kind]).permute(1, 2, 0).numpy().astype(np.float64)
        assert np.abs(loaded - original).mean() < tolerance, kind  # JPEG loss / 64-color quantization only


def test_exif_orientation_is_applied(corpus):
    good, _ = corpus
    stored = _raw(good["exif"])  # pixels as stored, 64 x 96
    loaded = load_image(good["exif"]).permute(1, 2, 0).numpy()
    assert loaded.shape[:2] == (96, 64)
    np.testing.assert_array_equal(loaded, np.rot90(stored, k=-1))  # orientation 6: 90 degrees clockwise


def test_animated_gif_gives_its_first_frame(corpus):
    good, _ = corpus
    loaded = load_image(good["gif"])
    assert loaded.shape == (3, 24, 40)
    assert (loaded[0] == 255).all() and (loaded[1:] == 0).all()


def test_tiny_image_is_upscaled_to_the_crop(corpus):
    good, _ = corpus
    item = ImageFiles([good["tiny"]], val_transform(32, 64))[0]
    assert item["image"].shape == (3, 32, 32) and item[SKIPPED] == ""


# ---- decoding: refused, naming the file ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "garbage", "bomb", "bomb_warn"])
def test_bad_files_raise_naming_the_file(corpus, kind):
    _, bad = corpus
    with pytest.raises(BadImageError) as info:
        load_image(bad[kind])
    assert str(bad[kind]) in str(info.value) and info.value.name == str(bad[kind])
    assert "\n" not in str(info.value)


def test_pil_alone_only_warns_on_the_smaller_bomb(corpus):
    """The control for bomb_warn: PIL opens it with a warning; load_image is what refuses it."""
    _, bad = corpus
    with pytest.warns(Image.DecompressionBombWarning), Image.open(bad["bomb_warn"]) as image:
        assert image.size == (10_000, 10_000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bad["bomb"])


# ---- datasets: skip and count, or raise ------------------------------------------------------------------
def test_folder_dataset_skips_bad_files_and_names_them_across_workers(corpus, caplog):
    good, bad = corpus
    files = sorted([*good.values(), *bad.values()])
    dataset = ImageFiles(files, val_transform(32, 64))
    loader = DataLoader(dataset, batch_size=4, num_workers=2, shuffle=False)
    images, names = [], []
    for batch in loader:
        images.append(batch["image"])
        names += skipped_files(batch)
    images = torch.cat(images)
    assert images.shape == (len(files), 3, 32, 32) and images.dtype == torch.uint8
    # every bad file was requested once and skipped at least once (a replacement may hit one again)
    assert set(names) == {str(p) for p in bad.values()}
    assert len(names) >= len(bad)


def test_in_process_skip_logs_a_warning_naming_the_file(corpus, caplog):
    good, bad = corpus
    dataset = ImageFiles([bad["text"], good["rgb_png"]], val_transform(32, 64))
    with caplog.at_level(logging.WARNING, logger="colorization.data.datasets"):
        item = dataset[0]
    assert item["image"].shape == (3, 32, 32)
    assert str(bad["text"]) in item[SKIPPED].split("\0")
    assert any(str(bad["text"]) in r.getMessage() for r in caplog.records)


def test_on_error_raise_fails_fast(corpus):
    _, bad = corpus
    dataset = ImageFiles([bad["truncated"], bad["empty"]], val_transform(32, 64), on_error="raise")
    with pytest.raises(BadImageError, match=r"truncated\.jpg.*data\.on_error=raise"):
        dataset[0]


def test_a_folder_of_non_images_is_an_error_not_an_endless_loop(corpus):
    _, bad = corpus
    dataset = ImageFiles([bad["text"], bad["empty"]], val_transform(32, 64))
    with pytest.raises(BadImageError, match="in a row could not be read"):
        dataset[0]


def test_validation_hold_out_is_never_made_of_unreadable_files(corpus, tmp_path):
    from colorization.data.datasets import readable
    from colorization.data.sources import folder_split

    good, bad = corpus
    root = good["rgb_png"].parent
    everything = {*good.values(), *bad.values()}
    held_out_bad = 0
    for seed in range(6):
        plain = folder_split(root, val_size=4, seed=seed)  # the control: a random hold-out can hit bad files
        held_out_bad += len(set(plain.val) & set(bad.values()))
        split = folder_split(root, val_size=4, seed=seed, usable=readable)
        assert len(split.val) == len(plain.val) and set(split.val) <= set(good.values())
        assert set(split.train) | set(split.val) == everything and not set(split.train) & set(split.val)
    assert held_out_bad > 0


def test_a_folder_with_no_readable_image_is_a_config_error(corpus, tmp_path):
    from colorization.data.datasets import readable
    from colorization.data.sources import folder_split

    _, bad = corpus
    for path in (bad["text"], bad["empty"]):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ConfigError, match=r"data\.root=.*: none of its 2 files could be read as an image"):
        folder_split(tmp_path, usable=readable)


def test_invalid_on_error_is_a_one_line_config_error(tmp_path):
    from colorization.data import SamplesDataModule

    with pytest.raises(ConfigError, match=r"data\.on_error='ignore'"):
        SamplesDataModule(on_error="ignore")


def test_hf_datasets_skip_bad_images_map_style_and_streaming(corpus):
    datasets = pytest.importorskip("datasets")
    good, bad = corpus
    files = [*sorted(bad.values()), *sorted(good.values())]  # a good file last: streaming names skips in the next item
    ds = datasets.Dataset.from_dict({"image": [str(f) for f in files]}).cast_column("image", datasets.Image())
    mapped = HFImages(ds, val_transform(32, 64))
    items = [mapped[i] for i in range(len(mapped))]
    assert all(item["image"].shape == (3, 32, 32) for item in items)
    assert {n for item in items for n in item[SKIPPED].split("\0") if n} == {str(p) for p in bad.values()}

    stream = HFImageStream(ds.to_iterable_dataset(num_shards=2), val_transform(32, 64))
    items = list(stream)
    assert len(items) == len(good)  # bad images are dropped from a stream, not replaced
    assert {n for item in items for n in item[SKIPPED].split("\0") if n} == {str(p) for p in bad.values()}


# ---- streaming: transient read errors are retried ----------------------------------------------------------
class Flaky:
    """A generator for datasets.IterableDataset.from_generator that fails once at each position in `fail_at`."""

    def __init__(self, n: int, fail_at: set[int], error=ConnectionError):
        self.n, self.fail_at, self.error = n, set(fail_at), error

    def __call__(self, shards):
        for shard in shards:
            for i in range(shard * self.n, (shard + 1) * self.n):
                if i in self.fail_at:
                    self.fail_at.discard(i)
                    raise self.error(f"connection reset at example {i}")
                yield {"x": i}


def test_streaming_resumes_after_transient_errors_without_loss_or_duplicates(caplog):
    datasets = pytest.importorskip("datasets")
    flaky = Flaky(5, fail_at={3, 7, 8})
    stream = datasets.IterableDataset.from_generator(flaky, gen_kwargs={"shards": [0, 1]})
    with caplog.at_level(logging.WARNING, logger="colorization.data.datasets"):
        values = [example["x"] for example in retry_transient(stream, retries=2, wait=0.0)]
    assert values == list(range(10))
    assert sum("connection reset" in r.getMessage() for r in caplog.records) == 3


def test_http_client_errors_count_as_transient():
    httpx = pytest.importorskip("httpx")
    datasets = pytest.importorskip("datasets")
    flaky = Flaky(4, fail_at={2}, error=lambda message: httpx.ReadTimeout(message))
    stream = datasets.IterableDataset.from_generator(flaky, gen_kwargs={"shards": [0]})
    assert [example["x"] for example in retry_transient(stream, retries=1, wait=0.0)] == [0, 1, 2, 3]


def test_streaming_gives_up_after_retries_and_never_retries_a_missing_file():
    datasets = pytest.importorskip("datasets")
    down = Flaky(5, fail_at=set())
    down.fail_at = type("Always", (set,), {"__contains__": lambda self, i: True, "discard": lambda self, i: None})()
    with pytest.raises(ConnectionError):
        list(retry_transient(datasets.IterableDataset.from_generator(down, gen_kwargs={"shards": [0]}), 2, 0.0))
    missing = Flaky(5, fail_at={1}, error=FileNotFoundError)
    stream = datasets.IterableDataset.from_generator(missing, gen_kwargs={"shards": [0]})
    with pytest.raises(FileNotFoundError):
        list(retry_transient(stream, retries=5, wait=0.0))
    assert missing.fail_at == set()  # raised at its first failure, not retried






def test_the_malicious_checkpoint_really_runs_code_when_unpickled(tmp_path):
    """The control: plain unpickling of the test file executes it (so the refusals below mean something)."""
    marker = tmp_path / "control-marker"
    path = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    from colorization.models.module import ColorizationModule

    marker = tmp_path / "pwned"
    path = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(UnsafeFileError, match=r"ckpt_path=.*evil\.ckpt: refused.*(system|posix)"):
        load_checkpoint(path)
    with pytest.raises(UnsafeFileError, match="refused"):
        load_checkpoint(path, mmap=True)
    with pytest.raises(pickle.UnpicklingError):
        ColorizationModule.load_from_checkpoint(path)  # Lightning's loader, with our safe default
    assert not marker.exists()


def test_train_refuses_a_malicious_ckpt_path_before_any_work(tmp_path):
    from colorization.train import train
    from helpers.config import TINY, compose

    marker = tmp_path / "pwned"
    path = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    cfg = compose([*TINY, f"ckpt_path={path}"], tmp_path / "run")
    with pytest.raises(UnsafeFileError) as info:
        train(cfg)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"ckpt_path={path}")
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_file_that_is_not_a_checkpoint_gets_a_clear_error(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(UnsafeFileError, match=r"weights=.*weights\.pth: not a readable checkpoint"):
        load_checkpoint(path, key="weights")


# ---- output paths for untrusted names ------------------------------------------------------------------------
NASTY = [
    "../../etc/passwd.jpg",
    "/etc/hosts",
    "..\\..\\windows\\system32\\x.jpg",
    "photo\n.jpg",
    "a\x00b.jpg",
    "..",
    "",
    ".bashrc",
    "~/x.png",
    "-rf.jpg",
    "é" * 300 + ".jpg",
    "dir/sub/../../../../escape.png",
]


@pytest.mark.parametrize("name", NASTY)
def test_output_path_always_lands_directly_in_the_output_dir(tmp_path, name):
    out_dir = tmp_path / "out"
    path = safe_output_path(name, out_dir, "_color.png")
    assert path.parent == out_dir.resolve()
    assert path.name.endswith("_color.png") and not path.name.startswith(".")
    assert len(path.name.encode()) <= 255 and "\n" not in path.name and "\x00" not in path.name
    assert ".." not in Path(path.name).parts


def test_output_path_names(tmp_path):
    out = tmp_path.resolve()
    assert safe_output_path("../../etc/passwd.jpg", tmp_path, "_color.png") == out / "passwd_color.png"
    assert safe_output_path("C:\\photos\\cat.jpeg", tmp_path, ".png") == out / "cat.png"
    assert safe_output_path("..", tmp_path, ".png") == out / "image.png"
    assert safe_name("\x1b[31mred\x1b[0m.jpg") == "[31mred[0m.jpg"  # escape characters removed


def test_output_path_never_overwrites_an_input(tmp_path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"input")
    other_input = tmp_path / "a_color.png"
    other_input.write_bytes(b"another input")
    # the output directory is the input directory and the suffix would recreate the input's own name
    assert safe_output_path(photo, tmp_path, ".jpg") == tmp_path.resolve() / "a_1.jpg"
    # another input already has the natural output name
    assert safe_output_path(photo, tmp_path, "_color.png", avoid=[photo, other_input]) == (
        tmp_path.resolve() / "a_1_color.png"
    )
    # a hard link to an input counts as that input
    os.link(photo, tmp_path / "b_color.png")
    assert safe_output_path("b.jpg", tmp_path, "_color.png", avoid=[photo]).name == "b_1_color.png"


def test_output_path_avoids_outputs_handed_out_and_symlinks(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    first = safe_output_path("x/cat.jpg", out, ".png")
    second = safe_output_path("y/cat.jpg", out, ".png", avoid=[first])
    assert (first.name, second.name) == ("cat.png", "cat_1.png")
    outside = tmp_path / "outside.txt"
    (out / "dog.png").symlink_to(outside)  # planted to redirect a write out of the directory
    assert safe_output_path("dog.jpg", out, ".png").name == "dog_1.png"
    assert not outside.exists()


@pytest.mark.parametrize("suffix", ["", "/x.png", "..", "../x.png", "\n.png"])
def test_output_path_rejects_unsafe_suffixes(tmp_path, suffix):
    with pytest.raises(ValueError, match="suffix"):
        safe_output_path("a.jpg", tmp_path, suffix)


# ---- the command on a folder of every kind of file -----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("gpu_decode", [False, True])
def test_train_on_a_folder_of_bad_and_odd_images_exits_0_and_names_every_skipped_file(tmp_path, gpu_decode):
    """Also with data.gpu_decode=true (the batched decoding path, on the CPU here): the issue's command."""
    good, bad = make_corpus(tmp_path / "photos")
    command = [
        sys.executable,
        "-m",
        "colorization.train",
        "data=folder",
        f"data.root={tmp_path / 'photos'}",
        "trainer.max_steps=5",
        "trainer.accelerator=cpu",
        "logger=csv",
        "data.crop_size=32",
        "data.resize=64",
        "data.batch_size=2",
        "data.num_workers=2",
        "color.prior_images=400",
    ]
    if gpu_decode:
        command += ["data.gpu_decode=true", "data.batch_size=8", "data.crop_size=64"]
    env = {**os.environ, "COLORIZATION_LOG_DIR": str(tmp_path / "logs"), "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    for path in bad.values():
        assert f"skipped unreadable image {path}" in output, path
    for path in good.values():
        assert f"skipped unreadable image {path}" not in output
    assert "unreadable images in total" in output  # the end-of-run summary with the count
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 5
    assert "data/skipped_train" in (run / "csv" / "metrics.csv").read_text()
