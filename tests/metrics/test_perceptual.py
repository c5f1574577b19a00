"""evaluate's FID and LPIPS columns: a one-line skip when their weights are absent, and FID through torchmetrics
with a small feature extractor given here against means, covariances and scipy.linalg.sqrtm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage.color import lab2rgb, rgb2lab
from torch import nn

from colorization.data.sources import sample_photo_dir
from colorization.errors import ConfigError
from colorization.evaluate import evaluate
from colorization.metrics.reference_nets import fid_metric, lpips_metric
from helpers.config import compose
from helpers.evaluation import FAST, center_crop

PHOTOS = ("astronaut.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "ihc.png", "chelsea.png",
          "coffee.png", "retina.jpg")  # fmt: skip
SIZE = 64


class SmallFeatures(nn.Module):
    """Four numbers per image from a fixed, seeded conv and pooling: small enough for a full-rank covariance."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=torch.Generator().manual_seed(0)))
            self.conv.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(images.float())).mean((2, 3))


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for name in PHOTOS:
        (root / name).symlink_to(sample_photo_dir() / name)
    return root


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


def fid_numpy(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance of two Gaussians fitted to feature rows (N, D): |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2))."""
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_fid_with_a_given_feature_extractor_matches_numpy_and_scipy(trained_checkpoint, photo_dir, tmp_path):
    extractor = SmallFeatures().eval()
    data = ["data=folder", f"data.root={photo_dir}", "data.batch_size=16", "lpips.weights=null"]
    cfg = compose([*FAST, f"ckpt_path={trained_checkpoint}", *data], tmp_path, config_name="evaluate")
    evaluate(cfg, fid_feature=extractor)
    table = json.loads((tmp_path / "metrics.json").read_text())

    files = sorted(photo_dir.iterdir())
    photos = [center_crop(f, SIZE) / 255 for f in files]
    lab = [rgb2lab(p) for p in photos]
    gray = [lab2rgb(np.dstack([x[..., 0], np.zeros((SIZE, SIZE, 2))])) for x in lab]
    random = [np.clip(lab2rgb(np.dstack([x[..., 0], lab[i - 1][..., 1:]])), 0, 1) for i, x in enumerate(lab)]
    with torch.no_grad():
        features = lambda images: extractor(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)).double().numpy()  # noqa: E731
        real = features(photos)
        for row, images in (("gray", gray), ("random", random)):
            expected = fid_numpy(real, features(images))
            assert expected > 1e-4  # the rows differ from the photos
            assert table[row]["fid"] == pytest.approx(expected, rel=1e-3), row
    assert table["ground_truth"]["fid"] is None  # the photos against themselves are not computed
    assert table["model"]["fid"] > 0
    assert "lpips" not in table["model"]


def test_fid_and_lpips_are_skipped_in_one_line_without_their_weights(
    trained_checkpoint, empty_torch_home, tmp_path, capsys
):
    cfg = compose([*FAST, f"ckpt_path={trained_checkpoint}", "num_examples=0"], tmp_path, config_name="evaluate")
    evaluate(cfg)
    out = capsys.readouterr().out
    cache = empty_torch_home / "hub" / "checkpoints"
    assert f"FID skipped: no Inception-v3 (FID) weights in {cache} and fid.download=false" in out
    assert f"LPIPS skipped: no AlexNet (LPIPS) weights in {cache} and lpips.download=false" in out
    table = json.loads((tmp_path / "metrics.json").read_text())
    assert not {"fid", "lpips"} & set(table["model"])  # never a number from random weights
    assert fid_metric(None, False) == (None, "fid.weights is null")
    assert lpips_metric(None, False) == (None, "lpips.weights is null")


def test_fid_and_lpips_refuse_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="fid.weights=.*no such file"):
        fid_metric(str(tmp_path / "missing.pth"), False)
    (tmp_path / "not_inception.pth").write_bytes(b"not weights")
    with pytest.raises(ConfigError, match="not torch-fidelity's Inception-v3"):
        fid_metric(str(tmp_path / "not_inception.pth"), False)
    with pytest.raises(ConfigError, match="lpips.weights='vgg' is not one of"):
        lpips_metric("vgg", False)
