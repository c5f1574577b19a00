"""The AlexNet colorization network: shapes and parameter count by hand, features, the three losses, training."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from colorization.models.alexnet import MIN_SIZE_COLORIZE, MIN_SIZE_FEATURES, AlexNetColorization
from colorization.models.losses import ColorizationLoss
from colorization.models.module import ARCHITECTURES, ColorizationModule
from conftest import REPO, TINY, compose


def out_size(n: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """The convolution / pooling output-size formula (floor mode)."""
    return (n + 2 * padding - kernel) // stride + 1


def feature_sizes(n: int) -> dict[str, int]:
    """AlexNet's spatial sizes, layer by layer, from the formula."""
    conv1 = out_size(n, 11, 4)
    conv2 = out_size(out_size(conv1, 3, 2), 5, 1, 2)
    conv3 = out_size(out_size(conv2, 3, 2), 3, 1, 1)
    pool5 = out_size(conv3, 3, 2)
    return {"conv1": conv1, "conv2": conv2, "conv3": conv3, "conv4": conv3, "conv5": conv3, "pool5": pool5}


def test_registered():
    assert ARCHITECTURES["alexnet"] is AlexNetColorization


def test_parameter_count_by_hand():
    def conv(c_in, c_out, k, groups=1):
        return c_in // groups * c_out * k * k + c_out

    bn = lambda c: 2 * c  # noqa: E731
    q = 313
    backbone = (
        conv(1, 96, 11) + bn(96)
        + conv(96, 256, 5, 2) + bn(256)
        + conv(256, 384, 3) + bn(384)
        + conv(384, 384, 3, 2) + bn(384)
        + conv(384, 256, 3, 2) + bn(256)
    )  # fmt: skip
    # conv6 3x3, conv7 1x1, two 4x4 transposed convs, the 1x1 to Q
    head = conv(256, 1024, 3) + bn(1024) + conv(1024, 512, 1) + bn(512) + conv(512, 256, 4) + conv(256, 256, 4)
    head += conv(256, q, 1)
    net = AlexNetColorization(q)
    assert sum(p.numel() for p in net.parameters()) == backbone + head
    backbone_params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("head."))
    assert backbone_params == backbone  # AlexNet's conv1..conv5 with one input channel: about 2.3 M
    assert 2.3e6 < backbone < 2.32e6


def test_feature_shapes_at_227_match_alexnet():
    net = AlexNetColorization(10).eval()
    with torch.no_grad():
        feats = net.features(torch.rand(2, 1, 227, 227) * 100)
    assert list(feats) == ["conv1", "conv2", "conv3", "conv4", "conv5", "pool5"]
    expected_hw = {"conv1": 55, "conv2": 27, "conv3": 13, "conv4": 13, "conv5": 13, "pool5": 6}  # AlexNet's own sizes
    assert feature_sizes(227) == expected_hw
    for name, f in feats.items():
        assert f.shape == (2, net.feature_channels[name], expected_hw[name], expected_hw[name])
        assert f.min() >= 0  # post-ReLU


@pytest.mark.parametrize("height,width", [(72, 96), (64, 64), (176, 176), (40, 48)])
def test_output_at_quarter_resolution(height, width):
    net = AlexNetColorization(7)
    out = net(torch.rand(2, 1, height, width) * 100)
    assert out.shape == (2, 7, height // 4, width // 4)
    if min(height, width) >= MIN_SIZE_FEATURES:
        with torch.no_grad():
            feats = net.eval().features(torch.rand(1, 1, height, width) * 100)
        for name, f in feats.items():
            assert f.shape[-2:] == (feature_sizes(height)[name], feature_sizes(width)[name])


def test_minimum_sizes_from_the_formula():
    assert feature_sizes(MIN_SIZE_FEATURES)["pool5"] == 1 and feature_sizes(MIN_SIZE_FEATURES - 1)["pool5"] == 0
    assert feature_sizes(MIN_SIZE_COLORIZE)["conv3"] == 1 and feature_sizes(MIN_SIZE_COLORIZE - 1)["conv3"] == 0
    net = AlexNetColorization(3).eval()
    with pytest.raises(ValueError, match="at least 67"):
        net.features(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="at least 35"):
        net(torch.zeros(1, 1, 32, 32))


def test_features_are_the_forward_pass_activations():
    """features() exposes the same conv5 the colorization head reads (one backbone, not a copy)."""
    net = AlexNetColorization(5).eval()
    L_in = torch.rand(2, 1, 80, 80) * 100
    seen = {}
    net.head.register_forward_hook(lambda mod, inp, out: seen.setdefault("conv5", inp[0].clone()))
    with torch.no_grad():
        net(L_in)
        feats = net.features(L_in)
    torch.testing.assert_close(feats["conv5"], seen["conv5"])
    torch.testing.assert_close(feats["pool5"], torch.nn.functional.max_pool2d(feats["conv5"], 3, 2))


@pytest.mark.parametrize("variant", ["l2", "unbalanced", "rebalanced"])
def test_losses_backpropagate(variant):
    from skimage import data

    bins = torch.tensor([[a, b] for a in range(-40, 50, 10) for b in range(-40, 50, 10)], dtype=torch.float32)
    module = ColorizationModule(arch="alexnet", loss={"name": variant}, bins=bins)
    photo = torch.from_numpy(data.chelsea()[:72, :80].copy()).permute(2, 0, 1)
    images = torch.stack([photo, photo.flip(-1)])
    batch = module.on_after_batch_transfer({"image": images})
    out = module(batch["L"])
    assert out.shape == (2, 2 if variant == "l2" else len(bins), 18, 20)
    assert batch["ab"].shape[-2:] == out.shape[-2:]  # the targets' grid
    loss = ColorizationLoss(variant)(out, batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and module.net.conv1[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", ["alexnet_rebalanced", "alexnet_unbalanced", "alexnet_l2"])
def test_experiments_compose(variant, tmp_path):
    cfg = compose([f"experiment={variant}"], tmp_path)
    assert cfg.model.arch == "alexnet"
    assert cfg.loss.name == variant.removeprefix("alexnet_")


def test_train_alexnet_rebalanced_tiny(tmp_path):
    from colorization.train import train

    cfg = compose(["experiment=alexnet_rebalanced", *TINY, "data.crop_size=64", "trainer.max_steps=2"], tmp_path)
    trainer = train(cfg)
    assert trainer.global_step == 2
    assert isinstance(trainer.lightning_module.net, AlexNetColorization)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_train_cli_alexnet_rebalanced(tmp_path):
    """The issue's command at full size (sample photos, 176 crops, batch 40): exits 0 and writes a checkpoint."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLORIZATION_LOG_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "colorization.train", "experiment=alexnet_rebalanced", "trainer.max_steps=2"]
    result = subprocess.run([*cmd, "trainer.accelerator=cpu"], env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(tmp_path.glob("train/runs/*/checkpoints/last.ckpt"))) == 1
