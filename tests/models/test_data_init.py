"""The authors' data-dependent (k-means) initialization and magic_init's between-layer calibration: the target
statistics on held-out photo crops, filters that pick out the clusters of their input, when training runs it
(and when not), under DDP, and the calibration's equal gradient ratios at an unchanged function."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import skimage
import torch

from colorization.color import uint8_to_lightness
from colorization.models.alexnet import AlexNetColorization
from colorization.models.data_init import (
    _gradient_ratios,
    calibrate_gradient_ratio,
    kmeans_init,
    parametric_layers,
    whitened_kmeans_filters,
)
from colorization.models.eccv16 import ECCV16
from helpers.config import TINY, compose

PHOTOS = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]


def photo_crops(n: int, size: int, seed: int) -> torch.Tensor:
    """L of n random size x size crops of real photos: (n, 1, size, size)."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        photo = PHOTOS[rng.integers(len(PHOTOS))]
        top, left = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        crops.append(torch.from_numpy(photo[top : top + size, left : left + size].copy()).permute(2, 0, 1))
    return uint8_to_lightness(torch.stack(crops))


def layer_outputs(net: torch.nn.Module, x: torch.Tensor) -> dict[torch.nn.Module, torch.Tensor]:
    """Every convolution's output on x (one forward pass, training-mode BatchNorm as during the init)."""
    out = {}

    def keep(module, inputs, output):  # returns None: a hook's return value would replace the output
        out[module] = output.detach().clone()  # before the in-place ReLU that follows

    hooks = [
        m.register_forward_hook(keep)
        for m in net.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    with torch.no_grad():
        net.train()(x)
    for h in hooks:
        h.remove()
    return out


def channel_stats(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = y.double().transpose(0, 1).flatten(1)
    return flat.mean(1), flat.std(1, unbiased=False)


@pytest.mark.parametrize("arch", ["eccv16", "alexnet"])
def test_every_layer_has_mean_01_and_std_1(arch):
    torch.manual_seed(0)
    if arch == "eccv16":
        net, size = ECCV16(313, batchnorm="caffe", input_scale=1, width=1 / 8), 64
    else:
        net, size = AlexNetColorization(313, width=1 / 16), 180
    batches = [photo_crops(8, size, seed) for seed in range(6)]
    records = kmeans_init(net, batches, seed=0)
    layers = parametric_layers(net, batches[0][:1])
    assert len(records) == len(layers) == (23 if arch == "eccv16" else 8)
    # on the batches it was fitted on: exactly the targets (magic_init's final scaling step)
    fitted = [layer_outputs(net, b) for b in batches]
    for layer in layers:
        mean, std = channel_stats(torch.cat([f[layer] for f in fitted]))
        np.testing.assert_allclose(mean.numpy(), 0.1, atol=1e-3)
        np.testing.assert_allclose(std.numpy(), 1.0, atol=1e-3)
    # on held-out crops: the same targets, up to the sampling of 32 other crops
    held_out = layer_outputs(net, photo_crops(32, size, seed=99))
    for layer in layers:
        mean, std = channel_stats(held_out[layer])
        assert abs(mean.mean() - 0.1) < 0.1, (layer, mean.mean())
        assert abs(std.mean() - 1.0) < 0.25, (layer, std.mean())


@pytest.mark.slow  # the full-width ECCV16 init on a CPU (about a minute)
def test_batchnorm_statistics_are_left_untouched():
    net = ECCV16(313, batchnorm="caffe", input_scale=1, width=1 / 8)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    kmeans_init(net, [photo_crops(4, 64, s) for s in range(2)])
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_kmeans_filters_pick_out_the_clusters_of_their_input():
    """Patches from 6 directions (plus noise, in 24 dimensions): each cluster gets a filter that responds to it
    more than to any other cluster, and each filter's response to the patches has standard deviation 1."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 24)) * 3
    labels = rng.integers(0, 6, 3000)
    patches = torch.from_numpy(centres[labels] + rng.normal(size=(3000, 24)) * 0.3)
    filters = whitened_kmeans_filters(patches, 6, seed=0)
    response = (patches @ filters.T).numpy()
    np.testing.assert_allclose(response.std(0), 1.0, rtol=1e-6)
    mean_response = np.stack([response[labels == c].mean(0) for c in range(6)])  # (cluster, filter)
    best_cluster = mean_response.argmax(0)
    assert sorted(best_cluster.tolist()) == list(range(6)), mean_response.round(2)


def test_fewer_patches_than_filters_fall_back_to_gaussian_weights():
    filters = whitened_kmeans_filters(torch.randn(5, 9, dtype=torch.float64), 16)
    assert filters.shape == (16, 9) and torch.isfinite(filters).all()


def init_calls(monkeypatch) -> list[int]:
    import colorization.models.initialize as initialize

    calls = []
    real = initialize.kmeans_init

    def counting(net, batches, **kwargs):
        calls.append(sum(len(b) for b in batches))
        return real(net, batches, **kwargs)

    monkeypatch.setattr(initialize, "kmeans_init", counting)
    return calls


SMALL = [*TINY, "model.width=0.0625", "model.init=kmeans", "model.init_batches=2", "trainer.max_steps=1"]


def test_training_runs_it_before_the_first_step_and_not_on_resume(tmp_path, monkeypatch):
    from colorization.train import train

    calls = init_calls(monkeypatch)
    train(compose(SMALL, tmp_path / "first"))
    assert calls == [2 * 4], "two training batches of data.batch_size=4"
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(compose([*SMALL, "trainer.max_steps=2", f"ckpt_path={ckpt}"], tmp_path / "resumed"))
    assert calls == [8], "a resumed run takes its weights from the checkpoint"
    train(compose([*SMALL, f"model.init_from={ckpt}"], tmp_path / "init_from"))
    assert calls == [8], "model.init_from takes precedence"


def test_the_initialized_weights_are_the_ones_trained(tmp_path, monkeypatch, caplog):
    """The network that fit() trains starts from the init's output (not re-initialized after it)."""
    import colorization.models.initialize as initialize
    import colorization.train as train_module

    captured = {}
    real = initialize.kmeans_init

    def keep(net, batches, **kwargs):
        records = real(net, batches, **kwargs)
        captured.update({k: v.clone() for k, v in net.state_dict().items()})
        return records

    monkeypatch.setattr(initialize, "kmeans_init", keep)
    with caplog.at_level(logging.INFO, logger="colorization.models.initialize"):
        trainer = train_module.train(compose([*SMALL, "trainer.max_steps=0"], tmp_path))
    state = trainer.lightning_module.net.state_dict()
    assert captured and all(torch.equal(state[k].cpu(), v.cpu()) for k, v in captured.items())
    assert any("model.init=kmeans: 23 layers initialized on 8 training images" in r.message for r in caplog.records)


def test_under_ddp_rank_0_initializes_and_every_rank_starts_from_its_weights(tmp_path):
    from helpers.processes import run_train

    out = tmp_path / "weights"
    result = run_train(
        [
            *SMALL,
            "trainer.strategy=ddp",
            "trainer.devices=2",
            "+callbacks.weights._target_=helpers.recorders.WeightsAtStart",
            f"+callbacks.weights.out_dir={out}",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logs = result.stdout + result.stderr
    assert logs.count("layers initialized on") == 1, "the init runs on rank 0 only"
    digests = [json.loads((out / f"rank{r}.json").read_text())["digest"] for r in (0, 1)]
    assert digests[0] == digests[1], "DDP broadcasts rank 0's initialized weights"
    inited = json.loads((out / "rank0.json").read_text())
    assert abs(inited["head_bias_mean"] - 0.1) < 0.5, "the head carries the init's bias, not PyTorch's default"


def test_calibration_equalizes_gradient_ratios_and_keeps_the_function_up_to_scale():
    torch.manual_seed(0)
    net = AlexNetColorization(16, width=1 / 8)
    from colorization.models.batchnorm import fold_batchnorm

    with torch.no_grad():
        net(photo_crops(8, 96, 1))  # some BatchNorm statistics
    net.eval()
    fold_batchnorm(net)

    class Trunk(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, L):
            return self.net.features(L)["pool5"]

    x = photo_crops(32, 99, 2)
    trunk = Trunk(net)
    initial = _gradient_ratios(trunk, parametric_layers(trunk, x[:1]), x, torch.Generator().manual_seed(1))[0]
    before = {k: v.clone() for k, v in net.features(x).items()}
    ratios = calibrate_gradient_ratio(trunk, x, iterations=10)
    assert len(ratios) == 5  # conv1..conv5
    assert max(initial) / min(initial) > 100, initial  # the trained-like net starts far from equal ratios
    # equal up to the noise of the random output gradient, which magic_init draws afresh each iteration
    assert max(ratios) / min(ratios) < 1.25, ratios
    after = net.features(x)
    for layer, value in before.items():  # ReLU nets: each layer's output is rescaled by one positive factor
        factor = (after[layer].norm() / value.norm()).item()
        torch.testing.assert_close(after[layer], value * factor, atol=1e-4 * after[layer].abs().max().item(), rtol=1e-3)
