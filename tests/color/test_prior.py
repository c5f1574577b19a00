"""The prior estimated from the whole training set: a class-sorted folder (whose first files are only a few
classes) and a shuffled stream both give every class its share; the prior file written by
`python -m colorization.prior` is read back by `color.prior=PATH` and checked against `color.bins`."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import hsv2rgb, rgb2lab

from colorization.color import ab_bins, rebalance_weights, smooth_prior, weight_uncertainty
from colorization.color.prior_source import load_prior, resolve_prior, save_prior
from colorization.errors import ConfigError
from helpers.config import REPO, TINY, compose

CLASSES, PER_CLASS = 10, 24
SAMPLE = 48  # fewer than the 240 files; the first 48 in sorted order are two classes only


def class_colors() -> np.ndarray:
    """Ten saturated colors 36 degrees of hue apart: uint8 (10, 3)."""
    hsv = np.stack([np.linspace(0, 1, CLASSES, endpoint=False), np.full(CLASSES, 0.8), np.full(CLASSES, 0.85)], 1)
    return (hsv2rgb(hsv[None])[0] * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def class_sorted_folder(tmp_path_factory):
    """ImageNet layout, one flat color per class: <root>/class_<k>/<i>.png, sorted by class."""
    root = tmp_path_factory.mktemp("sorted")
    for k, rgb in enumerate(class_colors()):
        folder = root / f"class_{k:02d}"
        folder.mkdir()
        for i in range(PER_CLASS):
            Image.fromarray(np.broadcast_to(rgb, (40, 40, 3)).copy()).save(folder / f"{i:03d}.png")
    return root


def classes_in(prior: torch.Tensor, bins: torch.Tensor) -> int:
    """How many of the class colors hold at least 1 % of the prior's mass at their nearest bin."""
    ab = torch.from_numpy(rgb2lab(class_colors()[None].astype(np.float64) / 255)[0, :, 1:]).float()
    nearest = torch.cdist(ab, bins).argmin(1)
    assert len(set(nearest.tolist())) == CLASSES, "the ten colors fall in ten different bins"
    return int((prior.float()[nearest] > 0.01).sum())


@pytest.mark.parametrize("source", ["folder", "hf_stream"])
def test_the_estimate_sees_every_class_of_a_class_sorted_source(class_sorted_folder, source, tmp_path, caplog):
    data = (
        ["data=folder", f"data.root={class_sorted_folder}", "data.val_size=4"]
        if source == "folder"
        else ["data=hf", "data.path=imagefolder", f"data.data_dir={class_sorted_folder}", "data.streaming=true",
              "data.val_size=4"]
    )  # fmt: skip
    overrides = [*TINY, *data, f"color.prior_images={SAMPLE}", "data.crop_size=32", "data.resize=null"]
    cfg = compose([o for o in overrides if not o.startswith("data.val_crops")], tmp_path)
    import hydra

    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    bins = ab_bins("srgb")
    with caplog.at_level(logging.INFO, logger="colorization.color.prior_source"):
        prior = resolve_prior(cfg, datamodule, bins, stride=4)  # ECCV16's target stride
    assert classes_in(prior, bins) >= 8, "a uniform sample of 48 of 240 files holds (nearly) every class"
    message = next(r.message for r in caplog.records if "prior: estimated from" in r.message)
    assert f"estimated from {SAMPLE} training images" in message
    assert f"{SAMPLE * 8 * 8} pixels at stride 4" in message  # 32 x 32 crops: 8 x 8 target pixels each


def test_reading_the_first_files_would_see_two_classes(class_sorted_folder):
    """The control: what the estimate would hold from the first 48 files in sorted order (as an unshuffled loader
    reads them)."""
    files = sorted(class_sorted_folder.rglob("*.png"))[:SAMPLE]
    counts = torch.zeros(len(ab_bins("srgb")), dtype=torch.float64)
    bins = ab_bins("srgb")
    for f in files:
        ab = torch.from_numpy(rgb2lab(np.asarray(Image.open(f)))[..., 1:]).float().reshape(-1, 2)
        counts += torch.bincount(torch.cdist(ab, bins).argmin(1), minlength=len(bins)).double()
    assert classes_in(smooth_prior(counts, bins), bins) == 2


def test_weight_uncertainty_matches_a_resampling_loop():
    rng = np.random.default_rng(0)
    bins = ab_bins("srgb")
    counts = rng.poisson(rng.gamma(0.3, 20, size=(40, len(bins))))
    got = weight_uncertainty(torch.from_numpy(counts), bins, lam=0.5, resamples=300, seed=0).numpy()
    kernel = np.exp(-((bins[:, None].double() - bins[None].double()) ** 2).sum(-1).numpy() / 50)
    weights = []
    for _ in range(300):  # images drawn with replacement, the prior smoothed and rebalanced each time
        pick = counts[rng.integers(0, 40, 40)].sum(0)
        p = kernel @ pick
        weights.append(rebalance_weights(torch.from_numpy(p / p.sum()), 0.5).double().numpy())
    weights = np.array(weights)
    expected = weights.std(0, ddof=1) / weights.mean(0)
    np.testing.assert_allclose(np.median(got), np.median(expected), rtol=0.15)
    assert np.corrcoef(got, expected)[0, 1] > 0.9


def test_the_prior_command_writes_a_file_that_training_reads_back(tmp_path):
    out = tmp_path / "prior.npz"
    cmd = [sys.executable, "-m", "colorization.prior", "data.crop_size=32", "data.num_workers=0",
           "color.prior_images=64", f"out={out}", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO / "src"),
                            **__import__("os").environ})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with np.load(out, allow_pickle=False) as saved:
        bins, prior, meta = torch.from_numpy(saved["bins"]), torch.from_numpy(saved["prior"]), str(saved["meta"])
    assert torch.equal(bins, ab_bins("srgb")) and prior.sum() == pytest.approx(1.0)
    assert '"images": 64' in meta
    from colorization.train import train

    trainer = train(compose([*TINY, f"color.prior={out}", "trainer.max_steps=1"], tmp_path / "train"))
    torch.testing.assert_close(trainer.lightning_module.prior.double(), prior.double(), rtol=1e-6, atol=1e-9)


def test_a_prior_file_over_other_bins_is_refused_in_one_line(tmp_path):
    bins = ab_bins("srgb")
    path = save_prior(tmp_path / "p.npz", bins[:100], torch.ones(100) / 100, torch.ones(100), {})
    with pytest.raises(ConfigError, match=r"color.prior=.* estimated over other bins \(100 bins\)"):
        load_prior(path, bins)
    np.savez(tmp_path / "other.npz", something=np.zeros(3))
    with pytest.raises(ConfigError, match="not a prior file"):
        load_prior(tmp_path / "other.npz", bins)
    with pytest.raises(ConfigError, match="no such file"):
        load_prior(tmp_path / "missing.npz", bins)
