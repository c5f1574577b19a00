"""The AlexNet colorization network against the numbers of the authors' prototxt (PAPER.md): layer sizes at a
180 crop and the parameter count from Caffe's formulas, the classic geometry of the probes, the stride-8
targets, the solver's parameter groups and schedule, training."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from colorization.models.alexnet import MIN_SIZE_FEATURES, AlexNetColorization
from colorization.models.losses import ColorizationLoss
from colorization.models.module import ARCHITECTURES, ColorizationModule
from helpers.config import REPO, TINY, compose


def caffe_conv(n: int, kernel: int, stride: int = 1, pad: int = 0, dilation: int = 1) -> int:
    """Caffe's convolution output size (floor)."""
    return (n + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def caffe_pool(n: int, kernel: int = 3, stride: int = 2, pad: int = 0) -> int:
    """Caffe's pooling output size (ceil), less one when the last window would start in the padding."""
    out = math.ceil((n + 2 * pad - kernel) / stride) + 1
    return out - 1 if pad and (out - 1) * stride >= n + pad else out


def prototxt_sizes(n: int) -> dict[str, int]:
    """train_alexnet/train_val.prototxt, layer by layer (PAPER.md)."""
    s = {"conv1": caffe_conv(n, 11, 4, pad=5)}
    s["pool1"] = caffe_pool(s["conv1"], pad=1)
    s["conv2"] = caffe_conv(s["pool1"], 5, pad=2)
    s["pool2"] = caffe_pool(s["conv2"], pad=1)
    s["conv3"] = s["conv4"] = s["conv5"] = caffe_conv(s["pool2"], 3, pad=1)
    s["pool5"] = caffe_pool(s["conv5"], stride=1, pad=1)
    s["fc6"] = caffe_conv(s["pool5"], 6, pad=5, dilation=2)
    return s


def classic_sizes(n: int) -> dict[str, int]:
    """feature_learning_tests/linear/train_val.prototxt: unpadded conv1 and pools, pool5 stride 2."""
    s = {"conv1": caffe_conv(n, 11, 4)}
    s["pool1"] = caffe_pool(s["conv1"])
    s["conv2"] = caffe_conv(s["pool1"], 5, pad=2)
    s["pool2"] = caffe_pool(s["conv2"])
    s["conv3"] = s["conv4"] = s["conv5"] = caffe_conv(s["pool2"], 3, pad=1)
    s["pool5"] = caffe_pool(s["conv5"])
    return s


def test_registered():
    assert ARCHITECTURES["alexnet"] is AlexNetColorization


def test_layer_sizes_at_a_180_crop_match_the_prototxt():
    expected = prototxt_sizes(180)
    assert expected == {  # PAPER.md's figures for a 180 crop
        "conv1": 45, "pool1": 23, "conv2": 23, "pool2": 12, "conv3": 12, "conv4": 12, "conv5": 12, "pool5": 12,
        "fc6": 12,
    }  # fmt: skip
    net = AlexNetColorization(313, width=0.25).eval()  # sizes do not depend on the width
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.shape[-1]

        return hook

    for name in ("fc6", "fc7", "fc8"):
        getattr(net, name).register_forward_hook(record(name))
    with torch.no_grad():
        L_in = torch.rand(2, 1, 180, 180) * 100
        feats = net.features(L_in, classic=False)
        out = net(L_in)
    for layer in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"):
        assert feats[layer].shape[-2:] == (expected[layer],) * 2, layer
    assert seen == {"fc6": 12, "fc7": 12, "fc8": 12}
    assert out.shape == (2, 313, 23, 23)  # resized to the targets: ab picked at stride 8 of 180 = 23


def test_parameter_count_from_the_prototxt():
    def conv(c_in, c_out, k, groups=1):
        return c_in // groups * c_out * k * k + c_out

    expected = (
        conv(1, 96, 11)
        + conv(96, 256, 5, 2)
        + conv(256, 384, 3)
        + conv(384, 384, 3, 2)
        + conv(384, 256, 3, 2)
        + conv(256, 4096, 6)  # fc6 as a 6x6 convolution
        + conv(4096, 4096, 1)
        + conv(4096, 313, 1)
    )  # BatchNorm without learned parameters adds none
    net = AlexNetColorization(313)
    assert sum(p.numel() for p in net.parameters()) == expected == 58_127_353


def test_classic_geometry_at_227_for_the_probes():
    net = AlexNetColorization(10, width=0.25).eval()
    with torch.no_grad():
        feats = net.features(torch.rand(2, 1, 227, 227) * 100)
    expected = classic_sizes(227)
    assert expected == {"conv1": 55, "pool1": 27, "conv2": 27, "pool2": 13, "conv3": 13, "conv4": 13, "conv5": 13,
                        "pool5": 6}  # fmt: skip
    assert list(feats) == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    for name, f in feats.items():
        assert f.shape == (2, net.feature_channels[name], expected[name], expected[name])
        assert f.min() >= 0  # post-ReLU
    # the smallest input whose every max pool sees at least its 3 x 3 window (conv1, conv2, conv5 >= 3)
    fits = lambda n: min(classic_sizes(n)[k] for k in ("conv1", "conv2", "conv5")) >= 3  # noqa: E731
    assert fits(MIN_SIZE_FEATURES) and not fits(MIN_SIZE_FEATURES - 1)
    with torch.no_grad():
        assert net.features(torch.zeros(1, 1, MIN_SIZE_FEATURES, MIN_SIZE_FEATURES))["pool5"].shape[-1] == 1
    with pytest.raises(ValueError, match=f"at least {MIN_SIZE_FEATURES}"):
        net.features(torch.zeros(1, 1, MIN_SIZE_FEATURES - 1, 64))


def test_batchnorm_before_relu_without_parameters():
    net = AlexNetColorization(313, width=0.25)
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"):
        conv, norm, relu = getattr(net, name)
        assert isinstance(conv, torch.nn.Conv2d) and isinstance(relu, torch.nn.ReLU)
        assert isinstance(norm, torch.nn.BatchNorm2d) and not norm.affine
    assert (net.fc6[0].kernel_size, net.fc6[0].dilation, net.fc6[0].padding) == ((6, 6), (2, 2), (5, 5))


@pytest.mark.parametrize("variant", ["l2", "unbalanced", "rebalanced"])
def test_losses_backpropagate_at_stride_8(variant):
    from skimage import data
    from skimage.color import rgb2lab

    bins = torch.tensor([[a, b] for a in range(-40, 50, 10) for b in range(-40, 50, 10)], dtype=torch.float32)
    module = ColorizationModule(arch="alexnet", loss={"name": variant}, bins=bins, batchnorm="caffe", width=0.25)
    photo = torch.from_numpy(data.chelsea()[:72, :84].copy()).permute(2, 0, 1)
    images = torch.stack([photo, photo.flip(-1)])
    batch = module.on_after_batch_transfer({"image": images})
    picked = torch.from_numpy(rgb2lab(images.permute(0, 2, 3, 1).numpy())[:, ::8, ::8, 1:]).permute(0, 3, 1, 2)
    torch.testing.assert_close(batch["ab"], picked.float(), atol=2e-3, rtol=0)  # ab picked at stride 8
    out = module(batch["L"])
    assert out.shape == (2, 2 if variant == "l2" else len(bins), 9, 11)  # ceil(72 / 8), ceil(84 / 8)
    assert batch["ab"].shape[-2:] == out.shape[-2:]  # the targets' grid
    loss = ColorizationLoss(variant)(out, batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and module.net.conv1[0].weight.grad.abs().sum() > 0


def test_the_solver_parameter_groups_and_four_stage_schedule(tmp_path):
    """train_alexnet: weights lr x1 decay x1, biases lr x2 decay x0; Adam beta2 0.999; 3e-5, 1e-5, 3e-6, 1e-6."""
    from colorization.runs.trainer import build_model

    cfg = compose(["experiment=alexnet_rebalanced", "model.width=0.125"], tmp_path)
    assert (cfg.data.crop_size, cfg.data.batch_size) == (180, 80)
    bins = torch.zeros(313, 2)
    module = build_model(cfg, bins, torch.ones(313) / 313)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.Adam) and tuple(optimizer.defaults["betas"]) == (0.9, 0.999)
    weights, biases = optimizer.param_groups
    names = {id(p): n for n, p in module.net.named_parameters()}
    assert all(names[id(p)].endswith(".weight") for p in weights["params"])
    assert all(names[id(p)].endswith(".bias") for p in biases["params"])
    assert len(weights["params"]) + len(biases["params"]) == len(list(module.net.parameters()))
    assert (weights["lr"], weights["weight_decay"]) == (pytest.approx(3e-5), pytest.approx(1e-3))
    assert (biases["lr"], biases["weight_decay"]) == (pytest.approx(6e-5), 0.0)
    expected = {0: 3e-5, 239_999: 3e-5, 240_000: 1e-5, 299_999: 1e-5, 300_000: 3e-6, 400_000: 1e-6, 449_999: 1e-6}
    for step, lr in expected.items():
        scheduler.last_epoch = step
        assert scheduler.get_lr()[0] == pytest.approx(lr, rel=1e-6), step
        assert scheduler.get_lr()[1] == pytest.approx(2 * lr, rel=1e-6), step


@pytest.mark.parametrize("variant", ["alexnet_rebalanced", "alexnet_unbalanced", "alexnet_l2", "alexnet_authors"])
def test_experiments_compose(variant, tmp_path):
    cfg = compose([f"experiment={variant}"], tmp_path)
    assert cfg.model.arch == "alexnet"
    assert cfg.loss.name == variant.removeprefix("alexnet_").replace("authors", "rebalanced")
    assert (cfg.data.crop_size, cfg.data.batch_size, cfg.model.batchnorm, cfg.model.input_scale) == (
        180,
        80,
        "caffe",
        1,
    )


def test_train_alexnet_rebalanced_tiny(tmp_path):
    from colorization.train import train

    overrides = [
        "experiment=alexnet_rebalanced",
        *TINY,
        "data.crop_size=60",
        "model.width=0.125",
        "trainer.max_steps=2",
    ]
    trainer = train(compose(overrides, tmp_path))
    assert trainer.global_step == 2
    assert isinstance(trainer.lightning_module.net, AlexNetColorization)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_train_cli_alexnet_rebalanced(tmp_path):
    """The full-size command (sample photos, 180 crops, batch 80): exits 0 and writes a checkpoint."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLORIZATION_LOG_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "colorization.train", "experiment=alexnet_rebalanced", "trainer.max_steps=2"]
    result = subprocess.run([*cmd, "trainer.accelerator=cpu"], env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(tmp_path.glob("train/runs/*/checkpoints/last.ckpt"))) == 1
