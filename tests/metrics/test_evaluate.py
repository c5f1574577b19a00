"""python -m colorization.evaluate: the table's numbers recomputed independently, every protocol and data source,
VGG-16 classification from a weight file built here (and the no-weights path), the authors' released weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.color import rgb2lab
from torchvision.transforms import v2

from colorization.data.sources import sample_photo_dir
from colorization.errors import ConfigError
from colorization.evaluate import evaluate
from colorization.metrics.protocol import load_indices, select_files
from colorization.metrics.reference_nets import load_vgg16
from colorization.models.authors import AUTHORS_HEAD, authors_bins, check_authors_state_dict, load_authors_weights
from colorization.models.eccv16 import ECCV16
from colorization.models.pretrained import load_module
from helpers.authors_file import (  # the authors' file: their keys and shapes, written out
    authors_state,
    grid_bins,
)
from helpers.config import REPO, compose
from helpers.evaluation import FAST, SIZE, center_crop
from helpers.reference_math import auc_numpy, colorfulness_numpy, nearest_bin_numpy

ROWS = {"model", "gray", "random", "ground_truth"}




def lab_of(images: list[np.ndarray]) -> np.ndarray:
    """scikit-image's Lab, (N, 3, H, W) float64."""
    return np.stack([rgb2lab(im) for im in images]).transpose(0, 3, 1, 2)


def run(overrides: list[str], out: Path) -> dict:
    evaluate(compose([*FAST, *overrides], out, config_name="evaluate"))
    return json.loads((out / "metrics.json").read_text())


def test_table_for_the_model_and_the_baselines(trained_checkpoint, tmp_path):
    table = run([f"ckpt_path={trained_checkpoint}"], tmp_path)
    assert set(table) == ROWS
    for values in table.values():
        assert {"auc", "auc_rebalanced", "colorfulness", "colorfulness_gap", "psnr", "ssim"} <= set(values)
        assert "vgg_top1" not in values  # the sample photos have no labels
    truth = table["ground_truth"]
    assert truth["auc"] == pytest.approx(100) and truth["auc_rebalanced"] == pytest.approx(100)
    assert truth["ssim"] == pytest.approx(1.0) and truth["psnr"] is None  # PSNR of a photo with itself: inf

    # the same numbers from scratch: the two held-out photos, scikit-image's Lab, the threshold loop
    photos = [center_crop(sample_photo_dir() / name) for name in ("chelsea.png", "coffee.png")]
    lab = lab_of(photos)
    ab = lab[:, 1:]
    assert table["gray"]["auc"] == pytest.approx(auc_numpy(np.zeros_like(ab), ab), abs=0.01)
    swapped = ab[::-1]  # "random": each image gets the other's colors
    assert table["random"]["auc"] == pytest.approx(auc_numpy(swapped, ab), abs=0.01)
    module = load_module(trained_checkpoint).eval()
    prior = module.prior.double().numpy()
    nearest = nearest_bin_numpy(ab, module.bins.numpy())
    assert (prior[nearest] > 0).all()
    assert table["gray"]["auc_rebalanced"] == pytest.approx(
        auc_numpy(np.zeros_like(ab), ab, 1 / prior[nearest]), abs=0.01
    )
    with torch.no_grad():
        pred = module.predict_ab(torch.from_numpy(lab[:, :1]).float(), 0.38)
    pred = F.interpolate(pred, size=(SIZE, SIZE), mode="bilinear", align_corners=False).double().numpy()
    assert table["model"]["auc"] == pytest.approx(auc_numpy(pred, ab), abs=0.05)

    expected = np.mean([colorfulness_numpy(p) for p in photos])
    assert truth["colorfulness"] == pytest.approx(expected, rel=1e-5)
    assert table["gray"]["colorfulness"] < 0.1
    assert table["gray"]["colorfulness_gap"] == pytest.approx(table["gray"]["colorfulness"] - expected, rel=1e-4)

    markdown = (tmp_path / "metrics.md").read_text()
    assert "2 images (center_crop 64)" in markdown and "| ground_truth | 100.00 | 100.00 |" in markdown
    with Image.open(tmp_path / "examples.png") as grid:  # 2 photos x 4 rows, 2-pixel padding, a 20-pixel header
        assert grid.size == (4 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2 + 20)
        header = np.asarray(grid.convert("RGB"))[:20]
        assert header.min() < 100 and np.median(header) == 255  # the column names, dark on white
    logged = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "eval/model/auc" in logged and "eval/ground_truth/auc_rebalanced" in logged


def test_resize_protocol_and_an_index_file(trained_checkpoint, tmp_path):
    np.save(tmp_path / "second.npy", np.array([1]))
    table = run(
        [f"ckpt_path={trained_checkpoint}", "protocol.name=resize", f"protocol.indices={tmp_path}/second.npy"], tmp_path
    )
    coffee = np.asarray(Image.open(sample_photo_dir() / "coffee.png").convert("RGB"))
    resized = v2.Resize((SIZE, SIZE), antialias=True)(torch.from_numpy(coffee.copy()).permute(2, 0, 1))
    ab = lab_of([resized.permute(1, 2, 0).numpy()])[:, 1:]
    assert table["gray"]["auc"] == pytest.approx(auc_numpy(np.zeros_like(ab), ab), abs=0.01)
    assert all(v is None for v in table["random"].values())  # one image: no other image to take colors from
    assert "1 images (resize 64, indices" in (tmp_path / "metrics.md").read_text()


def test_bad_protocol_values_fail_in_one_line(trained_checkpoint, tmp_path):
    np.save(tmp_path / "far.npy", np.array([0, 7]))
    for override, key in (
        ("protocol.name=square", "protocol.name"),
        (f"protocol.indices={tmp_path}/far.npy", "protocol.indices"),
        (f"protocol.indices={tmp_path}/none.npy", "protocol.indices"),
        ("color.prior=guess", "color.prior"),
    ):
        with pytest.raises(ConfigError, match=key):
            run([f"ckpt_path={trained_checkpoint}", override], tmp_path)
    with pytest.raises(ConfigError, match="ckpt_path"):
        run([], tmp_path)


def test_imagenet_val_names_give_their_own_index(tmp_path):
    files = [tmp_path / f"n0000000{c}" / f"ILSVRC2012_val_{i:08d}.JPEG" for c, i in ((1, 3), (2, 1), (1, 7))]
    picked = select_files(files, np.array([0, 6]), "val")  # indices 0 and 6: val_00000001 and val_00000007
    assert [files[i].name for i in picked] == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000007.JPEG"]
    with pytest.raises(ConfigError, match="ILSVRC2012_val_00000005"):
        select_files(files, np.array([4]), "val")
    plain = [tmp_path / "a.png", tmp_path / "b.png"]
    assert select_files(plain, np.array([1]), "x") == [1]
    (tmp_path / "list.txt").write_text("2\n0\n")
    assert load_indices(str(tmp_path / "list.txt"), download=False).tolist() == [0, 2]


def test_the_authors_test_indices(reference_dir, monkeypatch):
    monkeypatch.setenv("COLORIZATION_REFERENCE_DIR", str(reference_dir))
    indices = load_indices("ilsvrclin12_val_inds", download=False)
    assert np.array_equal(indices, np.load(reference_dir / "ilsvrclin12_val_inds.npy"))


# ---- VGG-16 classification ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """A full torchvision VGG-16 state dict whose last layer ignores the image: top-1 class 2, top-5 {2, 0, 3, 4, 5}."""
    from torchvision.models import vgg16

    state = vgg16(weights=None).state_dict()
    state["classifier.6.weight"].zero_()
    state["classifier.6.bias"].zero_()
    for rank, cls in enumerate((2, 0, 3, 4, 5)):
        state["classifier.6.bias"][cls] = 10.0 - rank
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(state, path)
    return path


@pytest.fixture
def labelled_folder(tmp_path) -> Path:
    """ImageNet layout: one real photo in class folder a (label 0), one in b (label 1)."""
    root = tmp_path / "val"
    for cls, image in (("a", skimage.data.chelsea()), ("b", skimage.data.rocket())):
        (root / cls).mkdir(parents=True)
        Image.fromarray(image).save(root / cls / f"{cls}.png")
    return root


def test_vgg16_accuracy_from_a_weight_file(trained_checkpoint, vgg_file, labelled_folder, tmp_path):
    data = ["data=folder", f"data.root={labelled_folder}", "data.labels=true"]
    table = run([f"ckpt_path={trained_checkpoint}", *data, f"vgg.weights={vgg_file}"], tmp_path / "out")
    for row in ROWS:  # top-1 is always class 2 (no image has it); top-5 holds class 0 (the photo in a)
        assert table[row]["vgg_top1"] == pytest.approx(0.0)
        assert table[row]["vgg_top5"] == pytest.approx(50.0)
    model, source = load_vgg16(str(vgg_file), download=False)
    assert source == str(vgg_file)
    assert torch.equal(model.state_dict()["classifier.6.bias"], torch.load(vgg_file)["classifier.6.bias"])


def test_vgg16_imagenet_weights_from_torchvisions_cache(vgg_file, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth").symlink_to(vgg_file)  # torchvision's file name
    model, source = load_vgg16("imagenet", download=False)
    assert "torchvision ImageNet weights" in source
    assert model.state_dict()["classifier.6.bias"][2] == 10.0


def test_vgg16_refuses_a_wrong_file(tmp_path):
    torch.save(ECCV16(8).state_dict(), tmp_path / "not_vgg.pth")
    with pytest.raises(ConfigError, match="vgg.weights=.*not a torchvision VGG-16"):
        load_vgg16(str(tmp_path / "not_vgg.pth"), download=False)
    with pytest.raises(ConfigError, match="no such file"):
        load_vgg16(str(tmp_path / "missing.pth"), download=False)


def test_without_vgg_weights_it_says_so_once_and_skips(
    trained_checkpoint, labelled_folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))  # no cached ImageNet weights
    data = ["data=folder", f"data.root={labelled_folder}", "data.labels=true"]
    table = run([f"ckpt_path={trained_checkpoint}", *data, "vgg.weights=imagenet", "vgg.download=false"], tmp_path)
    lines = [line for line in capsys.readouterr().out.splitlines() if "VGG-16" in line]
    assert len(lines) == 1 and lines[0].startswith("VGG-16 classification skipped: no ImageNet weights")
    assert all("vgg_top1" not in values for values in table.values())
    assert "VGG" not in (tmp_path / "metrics.md").read_text()


def test_a_streaming_hugging_face_source_with_an_index_file(trained_checkpoint, labelled_folder, tmp_path):
    np.save(tmp_path / "second.npy", np.array([1]))
    data = ["data=hf", "data.path=imagefolder", f"data.data_dir={labelled_folder}", "data.streaming=true"]
    data += ["data.label_column=label", "vgg.weights=null", f"protocol.indices={tmp_path}/second.npy"]
    table = run([f"ckpt_path={trained_checkpoint}", *data], tmp_path)
    ab = lab_of([center_crop(labelled_folder / "b" / "b.png")])[:, 1:]  # the second example: class folder b
    assert table["gray"]["auc"] == pytest.approx(auc_numpy(np.zeros_like(ab), ab), abs=0.01)
    assert "1 images" in (tmp_path / "metrics.md").read_text()


def test_wandb_gets_the_table_and_example_images(trained_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    overrides = [*FAST, "logger=wandb", f"ckpt_path={trained_checkpoint}"]
    evaluate(compose(overrides, tmp_path, config_name="evaluate"))
    tables = {
        p.name.split("_")[0]: json.loads(p.read_text())
        for p in tmp_path.glob("wandb/offline-run-*/files/media/table/eval/*.table.json")
    }
    assert tables["examples"]["columns"] == ["model", "gray", "random", "ground_truth"]
    assert len(tables["examples"]["data"]) == 2  # the two held-out photos
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    rows = {r[0]: dict(zip(tables["metrics"]["columns"][1:], r[1:], strict=True)) for r in tables["metrics"]["data"]}
    assert rows["model"]["auc"] == pytest.approx(metrics["model"]["auc"])


@pytest.mark.slow  # the exact command, at the paper's 256 (about a minute on 2 CPU cores)
def test_the_command_line(trained_checkpoint, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "colorization.evaluate",
        f"ckpt_path={trained_checkpoint}",
        "logger=csv",
        "trainer.accelerator=cpu",
    ]
    subprocess.run([*cmd, f"hydra.run.dir={tmp_path}"], check=True, env=env, cwd=tmp_path, capture_output=True)
    table = json.loads((tmp_path / "metrics.json").read_text())
    assert set(table) == ROWS and table["ground_truth"]["auc"] == pytest.approx(100)
    for values in table.values():
        assert all(values[k] is not None for k in ("auc", "auc_rebalanced", "colorfulness", "ssim"))




@pytest.fixture
def no_reference(monkeypatch, tmp_path):
    monkeypatch.setenv("COLORIZATION_REFERENCE_DIR", str(tmp_path / "no_reference_here"))


def test_authors_weights_load(tmp_path, no_reference, caplog):
    bins = grid_bins()
    state = authors_state(bins)
    torch.save(state, tmp_path / "release.pth")
    module = load_authors_weights(tmp_path / "release.pth", download=False)
    assert "could not check the bins" in caplog.text  # pts_in_hull.npy is nowhere: a warning, not a failure
    assert torch.equal(module.bins, bins)
    loaded = module.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k != AUTHORS_HEAD)
    with torch.no_grad():
        assert module.eval().predict_ab(torch.full((1, 1, 32, 32), 50.0)).shape == (1, 2, 8, 8)


def test_authors_weights_with_the_official_bins(tmp_path, reference_dir, monkeypatch):
    monkeypatch.setenv("COLORIZATION_REFERENCE_DIR", str(reference_dir))
    official = torch.from_numpy(np.load(reference_dir / "pts_in_hull.npy")).float()
    torch.save(authors_state(official), tmp_path / "release.pth")
    assert torch.equal(load_authors_weights(tmp_path / "release.pth", download=False).bins, official)
    torch.save(authors_state(grid_bins()), tmp_path / "other_bins.pth")
    with pytest.raises(ConfigError, match="not the authors' 313"):
        load_authors_weights(tmp_path / "other_bins.pth", download=False)


def test_mismatched_weight_files_are_refused(tmp_path, trained_checkpoint, no_reference):
    state = authors_state(grid_bins())
    key = "model.weights=x"
    missing = {k: v for k, v in state.items() if k != "model8.6.bias"}
    with pytest.raises(ConfigError, match=r"model.weights=x: not the authors' ECCV16 weights \(missing: model8.6.bias"):
        check_authors_state_dict(missing, key)
    with pytest.raises(ConfigError, match="unexpected: extra"):
        check_authors_state_dict({**state, "extra": torch.zeros(1)}, key)
    with pytest.raises(ConfigError, match="wrong shape"):
        check_authors_state_dict({**state, "model1.0.weight": torch.zeros(64, 3, 3, 3)}, key)
    off_grid = state[AUTHORS_HEAD] + 0.5 / 110
    with pytest.raises(ConfigError, match="not on the ab grid"):
        authors_bins(off_grid, key, download=False)
    with pytest.raises(ConfigError, match="not distinct and sorted"):
        authors_bins(state[AUTHORS_HEAD].flip(1), key, download=False)
    # the likely mistakes, as files: our own network's weights (Caffe BatchNorm without gamma and beta, 261 bins,
    # no model_out), and a training checkpoint
    torch.save(load_module(trained_checkpoint).net.state_dict(), tmp_path / "ours.pth")
    with pytest.raises(ConfigError, match=r"missing: model1.4.bias, .*wrong shape: model1.0.weight \(8, 1, 3, 3\)"):
        load_authors_weights(tmp_path / "ours.pth", download=False)
    with pytest.raises(ConfigError, match="not a state dict of tensors"):
        load_authors_weights(trained_checkpoint, download=False)


def test_evaluate_the_authors_weights(tmp_path, reference_dir, monkeypatch):
    monkeypatch.setenv("COLORIZATION_REFERENCE_DIR", str(reference_dir))
    official = torch.from_numpy(np.load(reference_dir / "pts_in_hull.npy")).float()
    torch.save(authors_state(official), tmp_path / "release.pth")
    table = run([f"model.weights={tmp_path}/release.pth", "color.download=false"], tmp_path)
    assert table["ground_truth"]["auc_rebalanced"] == pytest.approx(100)
    assert 0 < table["model"]["auc"] < 100
