"""The ECCV16 network against PAPER.md's table, and the three losses against dense brute-force versions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colorization.color import ab_bins, rebalance_weights, soft_encode
from colorization.models import ECCV16, ColorizationLoss, ColorizationModule


def _conv(c_in, c_out, k=3):
    return c_in * c_out * k * k + c_out


def test_eccv16_parameter_count_matches_the_paper_table():
    """Counted by hand from PAPER.md: 8 blocks of 3x3 convs, a BatchNorm closing blocks 1-7, the 1x1 head."""
    blocks = [[1, 64, 64], [64, 128, 128], [128, 256, 256, 256]] + [
        [256 if i == 0 else 512] + [512] * 3 for i in range(4)
    ]
    expected = 0
    for channels in blocks:
        expected += sum(_conv(a, b) for a, b in zip(channels[:-1], channels[1:], strict=True))
        expected += 2 * channels[-1]  # BatchNorm scale and shift
    expected += 512 * 256 * 4 * 4 + 256  # transposed 4x4 conv
    expected += 2 * _conv(256, 256) + _conv(256, 313, 1)
    net = ECCV16(313)
    assert sum(p.numel() for p in net.parameters()) == expected
    assert round(expected / 1e6, 1) == 32.2  # PAPER.md: about 32.2 M


def test_eccv16_shapes_strides_and_dilations():
    net = ECCV16(313).eval()
    out = net(torch.rand(2, 1, 64, 96) * 100)
    assert out.shape == (2, 313, 16, 24)  # 1/4 resolution
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs[:7]] == [1, 2, 1, 2, 1, 1, 2]
    assert {c.dilation[0] for c in net.model5 if isinstance(c, torch.nn.Conv2d)} == {2}
    assert {c.dilation[0] for c in net.model6 if isinstance(c, torch.nn.Conv2d)} == {2}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.model8)
    for part in (net.model1, net.model2, net.model3, net.model4, net.model5, net.model6, net.model7):
        assert isinstance(part[-1], torch.nn.BatchNorm2d) and isinstance(part[-2], torch.nn.ReLU)


def test_eccv16_accepts_the_authors_state_dict_keys():
    """A state dict laid out like the authors' port (model1..model8, model_out) loads key for key."""
    reference = ECCV16(313)
    authors = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    authors["model_out.weight"] = torch.randn(2, 313, 1, 1)
    net = ECCV16(313)
    missing, unexpected = net.load_state_dict(
        {k: v for k, v in authors.items() if k != "model_out.weight"}, strict=True
    )
    assert not missing and not unexpected
    assert torch.equal(net.model8[6].weight, authors["model8.6.weight"])


def test_eccv16_flops_match_a_hand_count():
    h = w = 176
    net = ECCV16(313)
    expected, size = 0, h
    for m in net.modules():
        if isinstance(m, torch.nn.ConvTranspose2d):
            expected += 2 * m.in_channels * m.out_channels * 16 * size * size  # every input pixel, 4x4 kernel
            size *= 2
        elif isinstance(m, torch.nn.Conv2d):
            size = size // m.stride[0]
            expected += 2 * m.in_channels * m.out_channels * m.kernel_size[0] ** 2 * size * size
    assert net.flops(h, w) == expected


@pytest.fixture(scope="module")
def bins():
    return ab_bins("srgb")


def _batch(bins, B=3, h=6, w=5, gray_first=True):
    torch.manual_seed(0)
    ab = torch.randn(B, 2, h, w) * 40
    if gray_first:
        ab[0] = ab[0].clamp(-4, 4)  # a gray image: masked
    from colorization.color import SoftEncoder, gray_mask

    idx, wts = SoftEncoder(bins, k=5)(ab)
    return {"ab": ab, "idx": idx, "wts": wts, "mask": gray_mask(ab)}


@pytest.mark.parametrize("variant", ["unbalanced", "rebalanced"])
def test_classification_losses_equal_dense_cross_entropy(bins, variant):
    batch = _batch(bins)
    prior = torch.rand(len(bins)).double()
    prior /= prior.sum()
    w = rebalance_weights(prior, 0.5)
    batch["pixel_weight"] = w[batch["idx"][:, 0]]
    logits = torch.randn(3, len(bins), 6, 5, requires_grad=True)
    got = ColorizationLoss(variant)(logits, batch)

    z = soft_encode(batch["ab"], bins, k=5).numpy()  # dense targets
    logp = F.log_softmax(logits.detach().double(), 1).numpy()
    ce = -(z * logp).sum(1)  # (B, h, w)
    nearest = z.argmax(1)  # argmax of the soft target = nearest bin
    weight = w.numpy()[nearest] if variant == "rebalanced" else np.ones_like(ce)
    mask = np.array([0.0, 1.0, 1.0])[:, None, None]
    np.testing.assert_allclose(got["loss"].item(), (ce * weight * mask).mean(), rtol=1e-5)
    np.testing.assert_allclose(got["ce"].item(), (ce * mask).mean(), rtol=1e-5)

    got["loss"].backward()
    assert logits.grad[0].abs().max() == 0  # the gray image contributes no gradient
    assert logits.grad[1:].abs().max() > 0


def test_l2_loss_equals_half_squared_ab_error(bins):
    batch = _batch(bins)
    out = torch.randn(3, 2, 6, 5)
    got = ColorizationLoss("l2")(out, batch)["loss"].item()
    diff = 110 * out.numpy() - batch["ab"].numpy()
    expected = (0.5 * (diff**2).sum(1) * np.array([0.0, 1.0, 1.0])[:, None, None]).mean()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_unknown_loss_variant_is_refused():
    with pytest.raises(ValueError, match="loss.name"):
        ColorizationLoss("l1")


def test_module_prepares_targets_from_uint8_on_the_device(bins):
    """Lab, stride-4 ab, soft targets, pixel weights and mask made by the module match skimage + brute force."""
    from skimage import color, data

    module = ColorizationModule(bins=bins, loss={"name": "rebalanced"})
    photo = torch.from_numpy(data.astronaut()[:64, :64].copy()).permute(2, 0, 1)
    gray = torch.from_numpy(color.gray2rgb(data.camera()[:64, :64]).copy()).permute(2, 0, 1)
    batch = module.on_after_batch_transfer(torch.stack((photo, gray)))
    lab = color.rgb2lab(data.astronaut()[:64, :64])
    np.testing.assert_allclose(batch["L"][0, 0].numpy(), lab[..., 0], atol=1e-3)
    np.testing.assert_allclose(batch["ab"][0].permute(1, 2, 0).numpy(), lab[::4, ::4, 1:], atol=1e-3)
    assert batch["mask"].tolist() == [1.0, 0.0]
    z = soft_encode(batch["ab"], bins, k=5)
    assert torch.equal(batch["pixel_weight"], module.class_weights[z.argmax(1)])
