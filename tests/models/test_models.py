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


# PAPER.md's table: (block, conv channels, stride of the last conv, dilation); block 8 has no BatchNorm
BLOCKS = [(1, [1, 64, 64], 2, 1), (2, [64, 128, 128], 2, 1), (3, [128, 256, 256, 256], 2, 1),
          (4, [256, 512, 512, 512], 1, 1), (5, [512] * 4, 1, 2), (6, [512] * 4, 1, 2), (7, [512] * 4, 1, 1)]  # fmt: skip


def authors_port_shapes(q: int = 313) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of the authors' PyTorch port (colorization_release_v2: model1 ... model8 as
    nn.Sequential over conv, ReLU, ..., BatchNorm; PAPER.md), written out from the paper's table."""
    shapes = {}
    for block, channels, _, _ in BLOCKS:
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
            shapes[f"model{block}.{2 * i}.weight"] = (c_out, c_in, 3, 3)
            shapes[f"model{block}.{2 * i}.bias"] = (c_out,)
        bn = f"model{block}.{2 * (len(channels) - 1)}"
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{bn}.{name}"] = (channels[-1],)
        shapes[f"{bn}.num_batches_tracked"] = ()
    shapes |= {"model8.0.weight": (512, 256, 4, 4), "model8.0.bias": (256,)}  # ConvTranspose2d: (in, out, k, k)
    for i in (2, 4):
        shapes |= {f"model8.{i}.weight": (256, 256, 3, 3), f"model8.{i}.bias": (256,)}
    shapes |= {"model8.6.weight": (q, 256, 1, 1), "model8.6.bias": (q,)}
    return shapes


def _conv(c_in, c_out, k=3):
    return c_in * c_out * k * k + c_out


@pytest.mark.parametrize("batchnorm", ["caffe", "affine"])
def test_eccv16_parameter_count_matches_the_paper_table(batchnorm):
    """Counted by hand from PAPER.md: 8 blocks of 3x3 convs, a BatchNorm closing blocks 1-7, the 1x1 head."""
    expected = 0
    for _, channels, _, _ in BLOCKS:
        expected += sum(_conv(a, b) for a, b in zip(channels[:-1], channels[1:], strict=True))
        if batchnorm == "affine":
            expected += 2 * channels[-1]  # BatchNorm scale and shift (the port); Caffe's have none
    expected += 512 * 256 * 4 * 4 + 256  # transposed 4x4 conv
    expected += 2 * _conv(256, 256) + _conv(256, 313, 1)
    net = ECCV16(313, batchnorm=batchnorm)
    assert sum(p.numel() for p in net.parameters()) == expected
    assert round(expected / 1e6, 1) == 32.2  # PAPER.md: about 32.2 M


def test_eccv16_shapes_strides_and_dilations():
    net = ECCV16(313).eval()
    out = net(torch.rand(2, 1, 64, 96) * 100)
    assert out.shape == (2, 313, 16, 24)  # 1/4 resolution
    for block, channels, last_stride, dilation in BLOCKS:
        part = getattr(net, f"model{block}")
        convs = [m for m in part if isinstance(m, torch.nn.Conv2d)]
        assert [c.out_channels for c in convs] == channels[1:]
        assert [c.stride[0] for c in convs] == [1] * (len(convs) - 1) + [last_stride]
        assert {c.dilation[0] for c in convs} == {dilation} == {c.padding[0] for c in convs}
        assert isinstance(part[-1], torch.nn.BatchNorm2d) and isinstance(part[-2], torch.nn.ReLU)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.model8)


def test_eccv16_port_layout_has_the_authors_keys_and_shapes():
    """batchnorm=affine: the released state dict's keys and shapes, written out above from the paper's table."""
    net = ECCV16(313, batchnorm="affine", input_scale=100)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == authors_port_shapes()


def test_eccv16_caffe_layout_has_no_batchnorm_parameters():
    """batchnorm=caffe: the learned parameters are the convolutions' alone (the BatchNorm layers keep statistics)."""
    norms = {f"model{block}.{2 * (len(channels) - 1)}" for block, channels, _, _ in BLOCKS}
    conv_keys = {k for k in authors_port_shapes() if k.rsplit(".", 1)[0] not in norms}
    net = ECCV16(313, batchnorm="caffe")
    assert {n for n, _ in net.named_parameters()} == conv_keys
    assert all(not m.affine for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("input_scale", [1.0, 100.0])
def test_eccv16_input_is_l_minus_50_over_the_scale(input_scale):
    """The Caffe training net feeds L - 50 (input_scale 1); the port (L - 50) / 100."""
    net = ECCV16(8, input_scale=input_scale).eval()
    seen = []
    net.model1[0].register_forward_hook(lambda m, i, o: seen.append(i[0]))
    L_in = torch.rand(1, 1, 16, 16) * 100
    with torch.no_grad():
        net(L_in)
    torch.testing.assert_close(seen[0], (L_in - 50) / input_scale)


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
    # the authors' scale: summed over pixels (and bins), divided by the batch size
    np.testing.assert_allclose(got["loss"].item(), (ce * weight * mask).sum() / 3, rtol=1e-5)
    np.testing.assert_allclose(got["loss_per_pixel"].item(), (ce * weight * mask).sum() / 3 / (6 * 5), rtol=1e-5)
    np.testing.assert_allclose(got["ce"].item(), (ce * mask).mean(), rtol=1e-5)  # nats per pixel, for reading

    got["loss"].backward()
    assert logits.grad[0].abs().max() == 0  # the gray image contributes no gradient
    assert logits.grad[1:].abs().max() > 0


def test_l2_loss_equals_half_squared_ab_error(bins):
    batch = _batch(bins)
    out = torch.randn(3, 2, 6, 5)
    got = ColorizationLoss("l2")(out, batch)["loss"].item()
    diff = 110 * out.numpy() - batch["ab"].numpy()
    # 1/2 ||Y - Y_hat||^2 in ab units, summed over each image's pixels, averaged over the 3 images
    expected = (0.5 * (diff**2).sum(1) * np.array([0.0, 1.0, 1.0])[:, None, None]).sum() / 3
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
