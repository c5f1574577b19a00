"""Linear probes: feature reduction vs loops, a real probe run that learns with frozen backbones, the CLI, HF labels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colorization.errors import ConfigError
from colorization.models.probe import Frozen, LinearProbes, reduce_features
from helpers.config import PROBE_TINY, REPO, compose

LAYERS = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]


def folder_overrides(ckpt: Path, labeled: Path) -> list[str]:
    return [f"ckpt_path={ckpt}", f"data.root={labeled / 'train'}", f"data.val_root={labeled / 'val'}", *PROBE_TINY]


# ---- feature reduction against loops ---------------------------------------------------------------------------
def bilinear_loop(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of (C, H, W) with half-pixel centres, source coordinates clamped at the border."""
    c, h, w = x.shape
    out = np.zeros((c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            y = max((i + 0.5) * h / out_h - 0.5, 0.0)
            xx = max((j + 0.5) * w / out_w - 0.5, 0.0)
            y0, x0 = min(int(np.floor(y)), h - 1), min(int(np.floor(xx)), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, xx - x0
            out[:, i, j] = (
                (1 - dy) * (1 - dx) * x[:, y0, x0]
                + (1 - dy) * dx * x[:, y0, x1]
                + dy * (1 - dx) * x[:, y1, x0]
                + dy * dx * x[:, y1, x1]
            )
    return out


def avgpool_loop(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Adaptive average pooling: cell i covers rows floor(i H / h) .. ceil((i + 1) H / h)."""
    c, h, w = x.shape
    out = np.zeros((c, out_h, out_w))
    for i in range(out_h):
        r0, r1 = (i * h) // out_h, -((-(i + 1) * h) // out_h)
        for j in range(out_w):
            c0, c1 = (j * w) // out_w, -((-(j + 1) * w) // out_w)
            out[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
    return out


# AlexNet at 227: conv1 55 -> 10, conv2 27 -> 6, conv3 13 -> 5; small inputs are upsampled
SIZES = [((55, 55), (10, 10)), ((27, 27), (6, 6)), ((13, 13), (5, 5)), ((3, 4), (6, 6)), ((16, 16), (10, 10))]


@pytest.mark.parametrize("in_hw,out_hw", SIZES)
def test_reduce_features_matches_loops(in_hw, out_hw):
    x = torch.rand(2, 3, *in_hw, dtype=torch.float64)
    for mode, loop in (("bilinear", bilinear_loop), ("avgpool", avgpool_loop)):
        got = reduce_features(x, out_hw, mode)
        assert got.shape == (2, 3, *out_hw)
        for b in range(2):
            np.testing.assert_allclose(got[b].numpy(), loop(x[b].numpy(), *out_hw), atol=1e-12, err_msg=mode)


def test_feature_sizes_are_about_9k():
    sizes = {"conv1": (96, 10, 10), "conv2": (256, 6, 6), "conv3": (384, 5, 5), "conv5": (256, 6, 6)}
    for c, h, w in sizes.values():
        assert 9000 <= c * h * w <= 9600


def test_the_default_protocol_is_the_authors(tmp_path):
    """conf/probe/authors.yaml against feature_learning_tests/linear (PAPER.md): solver, layers, geometry, batch."""
    cfg = compose([], tmp_path, "probe")
    probe = cfg.probe
    assert probe.classic and probe.fold_batchnorm and probe.rescale and probe.reduce == "bilinear"
    assert list(probe.layers) == LAYERS and probe.layers.pool5 is None and list(probe.layers.conv1) == [10, 10]
    assert probe.optimizer._target_ == "torch.optim.SGD" and not probe.optimizer.nesterov
    assert (probe.optimizer.lr, probe.optimizer.momentum, probe.optimizer.weight_decay) == (0.01, 0.9, 5e-4)
    assert (probe.bias_lr_mult, probe.bias_decay_mult) == (2.0, 0.0)
    assert (probe.scheduler.step_size, probe.scheduler.gamma, probe.scheduler.interval) == (40000, 0.1, "step")
    assert (cfg.trainer.max_steps, cfg.data.batch_size, cfg.trainer.accumulate_grad_batches) == (140000, 64, 4)
    assert (cfg.data.crop_size, cfg.data.resize) == (227, 256)
    goyal = compose(["probe=goyal"], tmp_path, "probe").probe
    assert goyal.reduce == "avgpool" and goyal.optimizer.nesterov and not goyal.fold_batchnorm


def test_heads_batchnorm_is_parameter_free_and_backbone_frozen():
    from colorization.models.alexnet import AlexNetColorization

    probes = LinearProbes(
        {"random": AlexNetColorization(4)},
        num_classes=3,
        layers={"conv5": [6, 6], "pool5": None},
        bias_lr_mult=2.0,
        bias_decay_mult=0.0,
    )
    head = probes.heads["random_conv5"]
    assert not head.norm.affine and head.linear.in_features == 256 * 6 * 6
    # pool5 kept as it is: 6 x 6 at 227 in the classic geometry (the authors' pool5 head)
    assert probes.heads["random_pool5"].linear.in_features == 256 * 6 * 6
    assert all(not p.requires_grad for p in probes.backbones.parameters())
    probes.train()
    assert not any(m.training for m in probes.backbones["random"].modules()) and head.training
    assert isinstance(probes.backbones["random"], Frozen)
    optimizer = probes.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and not optimizer.defaults["nesterov"]
    weights, biases = optimizer.param_groups  # Caffe's lr_mult / decay_mult: weights 1 / 1, biases 2 / 0
    assert (weights["lr"], weights["weight_decay"]) == (0.01, 5e-4)
    assert (biases["lr"], biases["weight_decay"]) == (0.02, 0.0)
    assert all(p.ndim == 1 for p in biases["params"]) and all(p.ndim == 2 for p in weights["params"])
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in probes.heads.parameters()
    )


def test_prepared_backbone_has_no_batchnorm_and_the_same_classes(tmp_path, labeled_dir):
    """fold_batchnorm + rescale: BatchNorm gone, and each layer's features change by a positive per-layer scale
    only (so a linear probe can fit the same classes): checked as the cosine between flattened features."""
    import hydra

    from colorization.models.alexnet import AlexNetColorization
    from colorization.models.probe_setup import prepare_backbone

    cfg = compose([f"data.root={labeled_dir / 'train'}", *PROBE_TINY], tmp_path, "probe")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    net = AlexNetColorization(4).train()
    L_batch = torch.rand(4, 1, 96, 96) * 100
    with torch.no_grad():
        for _ in range(3):  # running statistics
            net(L_batch)
    net.eval()
    with torch.no_grad():
        before = net.features(L_batch)
    prepare_backbone(net, cfg, datamodule)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    with torch.no_grad():
        after = net.features(L_batch)
    for layer in ("conv1", "conv2", "conv5", "pool5"):
        cosine = F.cosine_similarity(before[layer].flatten(), after[layer].flatten(), dim=0)
        assert cosine > 0.9999, layer


def test_probe_checkpoint_holds_heads_only():
    from colorization.models.alexnet import AlexNetColorization

    layers = {"conv1": [10, 10], "pool5": [6, 6]}
    probes = LinearProbes({"checkpoint": AlexNetColorization(4), "random": AlexNetColorization(4)}, 3, layers)
    checkpoint = {"state_dict": probes.state_dict()}
    probes.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and all(k.startswith("heads.") for k in checkpoint["state_dict"])
    assert len(checkpoint["state_dict"]) == len(probes.heads.state_dict())
    probes.on_load_checkpoint(checkpoint)  # complete: no error
    other = LinearProbes({"checkpoint": AlexNetColorization(4)}, 3, {**layers, "conv3": [5, 5]})
    with pytest.raises(ValueError, match="lacks heads.checkpoint_conv3"):
        other.on_load_checkpoint(checkpoint)


# ---- a real probe run ------------------------------------------------------------------------------------------
class Snapshot(L.Callback):
    """Copies of the backbones' and heads' states before training."""

    def setup(self, trainer, pl_module, stage):
        if stage == "fit":
            self.backbones = {k: v.clone() for k, v in pl_module.backbones.state_dict().items()}
            self.heads = {k: v.clone() for k, v in pl_module.heads.state_dict().items()}


def test_probe_learns_with_frozen_backbones(alexnet_ckpt, labeled_dir, tmp_path):
    from colorization.probe import probe

    snapshot = Snapshot()
    # 10 epochs; the reported numbers come from the validation after fit (none during it: faster)
    epochs = ["trainer.max_epochs=10", "trainer.check_val_every_n_epoch=100", "trainer.num_sanity_val_steps=0"]
    cfg = compose([*folder_overrides(alexnet_ckpt, labeled_dir), *epochs], tmp_path, "probe")
    trainer, report = probe(cfg, callbacks=[snapshot])
    assert trainer.global_step == 40  # 64 training crops / 16, 10 epochs
    module = trainer.lightning_module

    # the backbones (weights and BatchNorm statistics) did not change; the heads did
    after = module.backbones.state_dict()
    assert after.keys() == snapshot.backbones.keys()
    for key, before in snapshot.backbones.items():
        assert torch.equal(after[key], before), key
    heads_after = module.heads.state_dict()
    assert any(not torch.equal(heads_after[k], v) for k, v in snapshot.heads.items() if "linear" in k)
    # and the probed backbone is the checkpoint's network, independently read from the file, with its BatchNorm
    # folded in and each layer rescaled (the authors' probe preparation): the same features up to a positive
    # factor per layer
    from colorization.models.alexnet import AlexNetColorization

    saved = torch.load(alexnet_ckpt, map_location="cpu", weights_only=False)
    net_state = {k.removeprefix("net."): v for k, v in saved["state_dict"].items() if k.startswith("net.")}
    options = {k: saved["hyper_parameters"][k] for k in ("batchnorm", "input_scale", "width")}
    reference = AlexNetColorization(net_state["fc8.weight"].shape[0], **options)
    reference.load_state_dict(net_state)
    probed = module.backbones["checkpoint"].net
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in probed.modules())
    L_batch = torch.rand(2, 1, 96, 96) * 100
    with torch.no_grad():
        want, got = reference.eval().features(L_batch), probed.features(L_batch)
    for layer in LAYERS:
        assert F.cosine_similarity(want[layer].flatten(), got[layer].flatten(), dim=0) > 0.9999, layer
    # a random backbone is a different network
    assert not torch.equal(module.backbones["random"].net.conv1[0].weight, probed.conv1[0].weight)

    # learns: chance is 25 % on 4 classes
    assert report["num_classes"] == 4 and report["chance_top1"] == 0.25 and report["val_images"] == 48
    for backbone in ("checkpoint", "random"):
        top1 = [report["results"][backbone][layer]["top1"] for layer in LAYERS]
        assert np.mean(top1) >= 0.5 and max(top1) >= 0.6, (backbone, top1)
        assert all(report["results"][backbone][layer]["top5"] == 1.0 for layer in LAYERS)  # top-4 of 4 classes

    # the report files
    on_disk = json.loads((tmp_path / "probe.json").read_text())
    assert on_disk["results"] == report["results"]
    table = (tmp_path / "probe.md").read_text()
    assert (
        f"| conv1 | {96 // 8}x10x10 |" in table  # AlexNet's 96 and 256 channels at TINY's model.width=0.125
        and f"| pool5 | {256 // 8}x2x2 |" in table
        and "checkpoint top-1" in table
        and "random top-1" in table
    )
    # the logger got the same numbers
    metrics_csv = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "val/checkpoint/conv3/top1" in metrics_csv and "val/random/pool5/top5" in metrics_csv


def test_probe_cli_writes_probe_json(alexnet_ckpt, labeled_dir, tmp_path):
    """The issue's command: python -m colorization.probe ckpt_path=CKPT trainer.max_steps=2 trainer.accelerator=cpu."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLORIZATION_LOG_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "colorization.probe", *folder_overrides(alexnet_ckpt, labeled_dir)]
    result = subprocess.run([*cmd, "trainer.max_steps=2"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = tmp_path.glob("probe/runs/*/probe.json")
    report = json.loads(path.read_text())
    assert report["train_steps"] == 2
    for backbone in ("checkpoint", "random"):
        assert list(report["results"][backbone]) == LAYERS
        assert all(0 <= report["results"][backbone][layer]["top1"] <= 1 for layer in LAYERS)
    assert (path.parent / "probe.md").is_file()


@pytest.mark.slow
def test_probe_cli_default_crops(alexnet_ckpt, labeled_dir, tmp_path):
    """The probe's defaults (227 crops with mirroring after a 256 resize, bilinear, random baseline), batch 16."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLORIZATION_LOG_DIR": str(tmp_path)}
    data = [f"data.root={labeled_dir / 'train'}", f"data.val_root={labeled_dir / 'val'}", "data.batch_size=16"]
    cmd = [sys.executable, "-m", "colorization.probe", f"ckpt_path={alexnet_ckpt}", *data, "logger=csv"]
    result = subprocess.run(
        [*cmd, "trainer.max_steps=2", "trainer.accelerator=cpu"], env=env, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = tmp_path.glob("probe/runs/*/probe.json")
    report = json.loads(path.read_text())
    assert report["train_steps"] == 2 and report["reduce"] == "bilinear"
    assert list(report["results"]) == ["checkpoint", "random"]


def test_probe_hf_imagefolder_labels(alexnet_ckpt, labeled_dir, tmp_path, monkeypatch):
    """data=hf with a real `datasets` imagefolder from local files: labels from the sub-folder names."""
    import datasets

    from colorization.probe import probe

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    overrides = [
        f"ckpt_path={alexnet_ckpt}",
        "data=hf",
        "data.path=imagefolder",
        f"data.data_dir={labeled_dir}",
        "data.val_split=validation",
        "data.label_column=label",
        "probe.baselines=[]",
        "probe.reduce=avgpool",
        *PROBE_TINY,
        "trainer.max_steps=2",
    ]
    trainer, report = probe(compose(overrides, tmp_path, "probe"))
    assert report["classes"] == ["astronaut", "chelsea", "coffee", "rocket"] and report["num_classes"] == 4
    assert report["val_images"] == 48 and report["reduce"] == "avgpool"
    assert list(report["results"]) == ["checkpoint"] and list(report["results"]["checkpoint"]) == LAYERS


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data=samples"], "data=samples has no labels"),
        (["data.labels=false"], "data.labels=false"),
        (["data.crop_size=48"], "at least 55"),
        (["probe.reduce=nearest"], "probe.reduce='nearest'"),
        (["probe.baselines=[imagenet]"], "probe.baselines"),
        (["data=hf", "data.path=imagefolder"], "data.label_column is not set"),
        (["probe.batch_size=256"], "larger than the 64 training images"),
    ],
)
def test_config_errors(alexnet_ckpt, labeled_dir, tmp_path, overrides, message):
    from colorization.probe import probe

    base = [*folder_overrides(alexnet_ckpt, labeled_dir), "trainer.max_steps=1"]
    if overrides[0].startswith("data="):  # another source: no data.root / data.val_root
        base = [overrides.pop(0), *(o for o in base if not o.startswith(("data.root", "data.val_root")))]
    cfg = compose([*base, *overrides], tmp_path, "probe")
    with pytest.raises(ConfigError, match=message):
        probe(cfg)


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    from colorization.probe import probe
    from colorization.runs.entry import one_line_errors

    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(probe)(compose(["logger=csv"], tmp_path, "probe"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: ckpt_path is not set: pass ckpt_path=CKPT (a checkpoint of colorization.train model=alexnet)"
    )


def test_checkpoint_errors(tmp_path):
    from colorization.models.module import ColorizationModule
    from colorization.models.probe_setup import load_backbone

    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        load_backbone(str(not_a_checkpoint))
    eccv16 = ColorizationModule(arch="eccv16", bins=torch.zeros(5, 2))
    trainer = L.Trainer(logger=False, accelerator="cpu", enable_checkpointing=False)
    trainer.strategy.connect(eccv16)
    trainer.save_checkpoint(tmp_path / "eccv16.ckpt")
    with pytest.raises(ConfigError, match="model.arch='eccv16' exposes no per-layer features"):
        load_backbone(str(tmp_path / "eccv16.ckpt"))
