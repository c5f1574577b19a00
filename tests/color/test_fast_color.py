"""The faster device-side data path (lookup tables for uint8 input, a finer neighbour table) against
independent computations: scikit-image's rgb2lab and a brute-force nearest-neighbour search in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import skimage
import torch
from skimage.color import rgb2lab

from colorization.color import SoftEncoder, ab_bins, uint8_to_lab, uint8_to_lightness
from colorization.color.targets import lab_inputs


def test_uint8_lab_and_lightness_match_skimage():
    rng = np.random.default_rng(0)
    photo = skimage.data.astronaut()[::2, ::2]
    grays = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, 2).reshape(16, 16, 3)
    for rgb in (photo, grays, rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)):
        images = torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()
        expected = rgb2lab(rgb)  # float64
        np.testing.assert_allclose(uint8_to_lab(images)[0].permute(1, 2, 0).numpy(), expected, atol=2e-3)
        np.testing.assert_allclose(uint8_to_lightness(images)[0, 0].numpy(), expected[..., 0], atol=2e-3)


def test_lab_inputs_give_the_same_for_uint8_and_float_input():
    images = torch.from_numpy(skimage.data.coffee()[:96, :128]).permute(2, 0, 1)[None].contiguous()
    L8, ab8 = lab_inputs(images)
    Lf, abf = lab_inputs(images.float())
    assert L8.shape == (1, 1, 96, 128) and ab8.shape == (1, 2, 24, 32)
    assert (L8 - Lf).abs().max() < 1e-3 and (ab8 - abf).abs().max() < 1e-3


@pytest.mark.parametrize("k", [1, 5, 10])
def test_soft_encoder_matches_brute_force_nearest_neighbours(k):
    bins = ab_bins("srgb")
    rng = np.random.default_rng(k)
    ab = np.concatenate(
        [
            rng.uniform(-128, 128, (4000, 2)),  # everywhere, outside the gamut too
            bins.numpy()[rng.integers(0, len(bins), 500)] + rng.uniform(-5, 5, (500, 2)),  # near bin centres
            bins.numpy()[rng.integers(0, len(bins), 300)] + 5.0,  # on cell edges: ties
        ]
    ).astype(np.float32)
    idx, wts = SoftEncoder(bins, k=k, sigma=5.0)(torch.from_numpy(ab.T.reshape(1, 2, -1, 1).copy()))
    idx, wts = idx[0, :, :, 0].T.numpy(), wts[0, :, :, 0].T.numpy()
    d2 = ((ab[:, None, :].astype(np.float64) - bins.numpy()[None].astype(np.float64)) ** 2).sum(-1)
    nearest = np.sort(d2, 1)[:, :k]
    got = np.take_along_axis(d2, idx, 1)
    np.testing.assert_allclose(got, nearest, atol=1e-3)  # the same distances, in order (ties may swap bins)
    expected_w = np.exp(-nearest / 50)
    np.testing.assert_allclose(wts, expected_w / expected_w.sum(1, keepdims=True), atol=5e-5)  # float32


def test_soft_encoder_tables_follow_the_bins_of_a_loaded_checkpoint():
    bins = ab_bins("srgb")
    trained = SoftEncoder(bins)
    restored = SoftEncoder(torch.zeros_like(bins))  # as built before a checkpoint's state is loaded
    restored.load_state_dict(trained.state_dict())
    ab = torch.randn(2, 2, 8, 8) * 40
    for a, b in zip(restored(ab), trained(ab), strict=True):
        assert torch.equal(a, b)
