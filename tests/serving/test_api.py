"""The Python API (``colorization.Colorizer``) on real photos, against the command line and the photos themselves."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from PIL import Image
from skimage.color import rgb2lab

from colorization import Colorizer

SIZE = 64  # the network sees 64 x 64 copies (the command line's size=64): quick on a CPU


@pytest.fixture(scope="module")
def colorizer(narrow_checkpoint) -> Colorizer:
    return Colorizer.from_checkpoint(narrow_checkpoint, device="cpu", size=SIZE)


@pytest.fixture
def photo_files(tmp_path) -> list[Path]:
    """Real photos: an RGB PNG, a JPEG, a grayscale PNG, an RGBA PNG, of different sizes."""
    data, root = skimage.data, tmp_path / "photos"
    root.mkdir()
    Image.fromarray(data.chelsea()).save(root / "chelsea.png")
    Image.fromarray(data.rocket()[::2, ::2]).save(root / "rocket.jpg", quality=90)
    Image.fromarray(data.camera()[::3, ::2]).save(root / "camera.png")
    astronaut = np.asarray(Image.fromarray(data.astronaut()).resize((120, 90)))
    Image.fromarray(np.dstack([astronaut, np.full((90, 120), 200, np.uint8)]), "RGBA").save(root / "astronaut.png")
    return sorted(root.iterdir())


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal but for 1-level differences in a few pixels: CPU convolutions round differently for another batch size."""
    diff = np.abs(a.astype(int) - b.astype(int))
    return a.shape == b.shape and diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_the_api_and_the_command_line_give_the_same_pixels(narrow_checkpoint, colorizer, photo_files, tmp_path):
    from colorization.colorize import main

    out = tmp_path / "out"
    argv = ["colorize", f"ckpt_path={narrow_checkpoint}", f"input={photo_files[0].parent}", f"output={out}"]
    argv += ["num_workers=0", "device=cpu", f"size={SIZE}", f"hydra.run.dir={tmp_path}/run"]
    old_argv, sys.argv = sys.argv, argv
    try:
        main()
    finally:
        sys.argv = old_argv
    results = colorizer(photo_files)  # a list of paths -> a list of PIL images
    assert isinstance(results, list) and len(results) == len(photo_files)
    for path, result in zip(photo_files, results, strict=True):
        cli = np.asarray(Image.open(out / path.with_suffix(".png").name))
        api = np.asarray(result)
        with Image.open(path) as im:
            assert result.size == im.size and result.mode == "RGB"
        assert np.array_equal(api, cli), path.name
    names = [p.name for p in photo_files]
    # one photo at a time, and as a PIL image: the same pixels again, up to the float rounding of another batch size
    cat = photo_files[names.index("chelsea.png")]
    single = colorizer(Image.open(cat))
    assert close(np.asarray(single), np.asarray(results[names.index("chelsea.png")]))
    # the network only adds ab: the lightness is the photo's own (skimage's Lab), up to 8-bit rounding and clipping
    source = rgb2lab(np.asarray(Image.open(cat)))[..., 0]
    assert np.abs(rgb2lab(np.asarray(single))[..., 0] - source).mean() < 1.0
    camera = np.asarray(results[names.index("camera.png")])
    chroma = np.hypot(*np.moveaxis(rgb2lab(camera)[..., 1:], -1, 0))
    assert chroma.mean() > 1.0  # the gray camera photo comes out in color


def test_arrays_and_tensors_come_back_in_their_own_kind(colorizer):
    photo = skimage.data.coffee()[::4, ::4]  # (100, 150, 3) uint8
    reference = np.asarray(colorizer(Image.fromarray(photo)))
    array = colorizer(photo)
    assert isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.shape == photo.shape
    assert np.array_equal(array, reference)
    tensor = colorizer(torch.from_numpy(photo).permute(2, 0, 1))
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 100, 150)
    assert np.array_equal(tensor.permute(1, 2, 0).numpy(), reference)
    floats = colorizer(torch.from_numpy(photo).permute(2, 0, 1).float() / 255)  # float in [0, 1]: float back
    assert floats.dtype == torch.float32 and floats.shape == (3, 100, 150) and 0 <= floats.min() and floats.max() <= 1
    float_array = colorizer(photo.astype(np.float64) / 255)
    assert float_array.dtype == np.float64 and np.allclose(float_array, floats.permute(1, 2, 0).numpy(), atol=1e-4)
    gray = skimage.data.camera()[::5, ::4]  # (103, 128) uint8
    assert colorizer(gray).shape == (*gray.shape, 3)
    assert colorizer(torch.from_numpy(gray)[None]).shape == (3, *gray.shape)
    listed = colorizer([photo, gray])
    assert isinstance(listed, list) and close(listed[0], reference)
    hot, cold = colorizer(photo, temperature=0.1), colorizer(photo, temperature=1.0)
    assert np.abs(hot.astype(int) - cold.astype(int)).max() > 0  # T is used


def test_bad_inputs_say_what_is_wrong(colorizer, tmp_path):
    with pytest.raises(ValueError, match=r"must be \(H, W, 3\) or \(H, W\)"):
        colorizer(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match=r"must be \(3, H, W\) or \(1, H, W\)"):
        colorizer(torch.zeros(8, 8, 3))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        colorizer(torch.full((3, 8, 8), 255.0))
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            colorizer(np.zeros((8, 8), np.uint8), temperature=bad)
    with pytest.raises(TypeError, match="cannot colorize a dict"):
        colorizer({"image": 1})
    (tmp_path / "fake.jpg").write_text("not a photo")
    with pytest.raises(Exception, match="fake.jpg"):
        colorizer(tmp_path / "fake.jpg")


def test_from_the_authors_weights(tmp_path, monkeypatch):
    from helpers.authors_file import authors_state, grid_313

    monkeypatch.setenv("COLORIZATION_REFERENCE_DIR", str(tmp_path / "no_reference_here"))
    torch.save(authors_state(grid_313()), tmp_path / "release.pth")
    colorizer = Colorizer.from_authors_weights(tmp_path / "release.pth", device="cpu", download=False, size=SIZE)
    assert np.array_equal(colorizer.model.bins.numpy(), grid_313().astype(np.float32))  # their bins, from their head
    assert colorizer.model.hparams.batchnorm == "affine" and colorizer.model.net.input_scale == 100.0
    photo = skimage.data.coffee()[::4, ::4]
    assert colorizer(photo).shape == photo.shape
    with pytest.raises(ValueError, match="no such file"):
        Colorizer.from_authors_weights(tmp_path / "absent.pth", download=False)


def test_temperature_0_is_the_mode(colorizer):
    """T = 0 in the API, as in the command line's strip: each pixel's most likely bin, here against a numpy argmax of
    the network's own logits."""
    from colorization.color import rgb_to_lightness

    photo = skimage.data.chelsea()[::3, ::3]
    image = torch.from_numpy(photo.copy()).permute(2, 0, 1)
    (ab,) = colorizer.predict_ab([image], [0.0])
    with torch.no_grad():
        small = colorizer.resize(image)[None].float() / 255
        logits = colorizer.model(rgb_to_lightness(small)).numpy()
    bins = colorizer.model.bins.numpy()
    expected = bins[np.argmax(logits, axis=1)].transpose(0, 3, 1, 2)
    assert np.array_equal(ab.numpy(), expected)
    out = colorizer(photo, temperature=0)
    assert out.shape == photo.shape and np.array_equal(
        out, colorizer.join(image, ab, torch.uint8).permute(1, 2, 0).numpy()
    )


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (a real server in a thread)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_authors_weights_in_one_line_fetched_checked_and_cached(served, tmp_path, monkeypatch):
    """from_authors_weights() with no path: downloaded from the address (here a fake file in the authors' keys and
    shapes, on 127.0.0.1), its sha256 checked against the prefix in its name, cached in torch hub's folder, loaded;
    read from the cache the second time; a wrong hash and an unreachable address each give one line."""
    import hashlib

    from colorization.errors import ConfigError
    from helpers.authors_file import authors_state, grid_313

    monkeypatch.setenv("COLORIZATION_REFERENCE_DIR", str(tmp_path / "no_reference_here"))
    root, url = served
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch hub's cache: $TORCH_HOME/hub
    hub = tmp_path / "torch" / "hub"
    torch.save(authors_state(grid_313()), root / "weights.pth")
    prefix = hashlib.sha256((root / "weights.pth").read_bytes()).hexdigest()[:8]
    (root / "weights.pth").rename(root / f"release-{prefix}.pth")
    fetch = dict(device="cpu", download_reference=False)  # the weights from 127.0.0.1, nothing from the internet
    colorizer = Colorizer.from_authors_weights(url=f"{url}/release-{prefix}.pth", **fetch)
    cached = hub / "checkpoints" / f"release-{prefix}.pth"
    assert cached.is_file() and np.array_equal(colorizer.model.bins.numpy(), grid_313().astype(np.float32))
    (root / f"release-{prefix}.pth").unlink()  # the second time, from the cache: the server has nothing
    assert Colorizer.from_authors_weights(url=f"{url}/release-{prefix}.pth", **fetch)
    torch.save(authors_state(grid_313(), seed=1), root / "other-00000000.pth")
    with pytest.raises(ConfigError, match=r"other-00000000.pth: refused: invalid hash") as info:
        Colorizer.from_authors_weights(url=f"{url}/other-00000000.pth", **fetch)
    assert "\n" not in str(info.value) and not (hub / "checkpoints" / "other-00000000.pth").exists()
    offline = "http://127.0.0.1:9/colorization_release_v2-9b330a0b.pth"  # nothing listens on port 9
    with pytest.raises(ConfigError, match=r"could not download http://127.0.0.1:9/.*starts with 9b330a0b.*to .*hub"):
        Colorizer.from_authors_weights(url=offline, **fetch)


def test_model_weights_authors_on_the_commands_names_the_address_when_it_cannot_fetch(tmp_path, monkeypatch):
    """``model.weights=authors`` (evaluate, colorize, the demo): the released file from torch hub's cache; without it and
    without downloads, one line with the public address, the expected hash and where to put the file."""
    from colorization.errors import ConfigError
    from colorization.models.authors import AUTHORS_URL
    from colorization.serving.model_choice import load_spec

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ConfigError) as info:
        load_spec("authors", "model.weights", download=False)
    message = str(info.value)
    assert AUTHORS_URL in message and "starts with 9b330a0b" in message and str(tmp_path / "torch" / "hub") in message
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "colorization_release_v2-9b330a0b.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not their file")
    with pytest.raises(ConfigError, match=r"does not start with 9b330a0b: delete it"):
        load_spec("authors", "model.weights", download=False)
