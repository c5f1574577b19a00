"""Caffe's BatchNorm (the authors' training nets) against its documented update written out in numpy, and the
folding of BatchNorm into convolutions (the authors' batch_norm_absorb.py) against the unfolded network."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from colorization.models.alexnet import AlexNetColorization
from colorization.models.batchnorm import CaffeBatchNorm2d, batchnorm, fold_batchnorm

EPS = 1e-5  # Caffe's batch_norm_param eps default


def caffe_reference(batches: list[np.ndarray], fraction: float = 0.999):
    """Caffe's batch_norm_layer: blobs s_mean, s_var (m / (m - 1) x the batch variance) and c, each step
    s <- fraction s + statistic, c <- fraction c + 1; the global statistics are s / c (0 when c is 0)."""
    s_mean = s_var = 0.0
    c = 0.0
    for x in batches:
        m = x.shape[0] * x.shape[2] * x.shape[3]
        mean = x.mean((0, 2, 3))
        var = x.var((0, 2, 3))  # biased
        s_mean = fraction * s_mean + mean
        s_var = fraction * s_var + var * m / (m - 1)
        c = fraction * c + 1
    scale = 0.0 if c == 0 else 1 / c
    return s_mean * scale, s_var * scale


def test_training_normalizes_with_the_batch_statistics():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 6) * 3 + 2
    norm = CaffeBatchNorm2d(3).train()
    y = norm(x).numpy().astype(np.float64)
    xn = x.numpy().astype(np.float64)
    expected = (xn - xn.mean((0, 2, 3), keepdims=True)) / np.sqrt(xn.var((0, 2, 3), keepdims=True) + EPS)
    np.testing.assert_allclose(y, expected, atol=1e-5)
    assert not list(norm.parameters()), "no learned scale or shift"


@pytest.mark.parametrize("steps", [0, 1, 2, 7, 3000])
def test_eval_uses_the_normalized_moving_average(steps):
    rng = np.random.default_rng(steps)
    batches = [(rng.normal(size=(2, 3, 4, 4)) * (1 + i % 3) + i % 5).astype(np.float32) for i in range(steps)]
    norm = CaffeBatchNorm2d(3).train()
    with torch.no_grad():
        for x in batches:
            norm(torch.from_numpy(x))
    mean, var = caffe_reference([b.astype(np.float64) for b in batches])
    probe = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    got = norm.eval()(torch.from_numpy(probe)).numpy()
    expected = (probe - np.reshape(mean, (1, -1, 1, 1))) / np.sqrt(np.reshape(var, (1, -1, 1, 1)) + EPS)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)
    if steps == 1:  # unlike torch's momentum 0.001, the very first estimate is the first batch's own
        np.testing.assert_allclose(mean, batches[0].mean((0, 2, 3)), rtol=1e-5)


def test_the_statistics_survive_a_checkpoint():
    norm = CaffeBatchNorm2d(2).train()
    with torch.no_grad():
        for _ in range(5):
            norm(torch.randn(3, 2, 4, 4) + 4)
    restored = CaffeBatchNorm2d(2)
    restored.load_state_dict(norm.state_dict())
    x = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(restored.eval()(x), norm.eval()(x))


def test_affine_is_torchs_batchnorm_and_bad_kinds_are_refused():
    assert type(batchnorm("affine", 4)) is torch.nn.BatchNorm2d and batchnorm("affine", 4).affine
    with pytest.raises(ValueError, match="model.batchnorm"):
        batchnorm("group", 4)


@pytest.mark.parametrize("kind", ["caffe", "affine"])
def test_folding_keeps_the_eval_function(kind):
    torch.manual_seed(0)
    net = AlexNetColorization(16, batchnorm=kind, width=0.125)
    with torch.no_grad():
        for _ in range(3):  # some statistics (and, for affine, non-trivial gamma and beta)
            net(torch.rand(2, 1, 96, 96) * 100)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.affine:
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    net.eval()
    folded = copy.deepcopy(net)
    assert fold_batchnorm(folded) == 7  # conv1..conv5, fc6, fc7
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 1, 100, 100) * 100
    with torch.no_grad():
        for layer, value in net.features(x).items():
            torch.testing.assert_close(folded.features(x)[layer], value, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(folded(x), net(x), atol=1e-4, rtol=1e-4)
