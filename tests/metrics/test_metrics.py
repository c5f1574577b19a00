"""Every metric against an independent numpy / scikit-image computation, on real photos where images are needed."""

from __future__ import annotations

import numpy as np
import pytest
import skimage
import torch
from skimage.metrics import structural_similarity

from colorization.color import rgb_to_lab
from colorization.metrics import AuC, Colorfulness, psnr, ssim, topk_accuracy
from helpers.reference_math import auc_numpy, colorfulness_numpy, nearest_bin_numpy


def photos(size: int = 96) -> np.ndarray:
    """Four real photos, centre-cropped to size x size, uint8 (4, size, size, 3)."""
    out = []
    for image in (skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()):
        h, w = image.shape[:2]
        top, left = (h - size) // 2, (w - size) // 2
        out.append(image[top : top + size, left : left + size])
    return np.stack(out)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255






def random_ab(shape, seed) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 220 - 110).float()


def test_auc_matches_a_threshold_loop():
    true, pred = random_ab((3, 2, 20, 24), 0), random_ab((3, 2, 20, 24), 1)
    pred[0, :, :5] = true[0, :, :5]  # some exact hits (d = 0)
    pred[1, 0, :4] = true[1, 0, :4] + 3  # and exact integer distances (a 3-4-5 triangle): d = 5 counts at t = 5
    pred[1, 1, :4] = true[1, 1, :4] + 4
    metric = AuC()
    metric.update(pred[:2], true[:2])
    metric.update(pred[2:], true[2:])  # two updates accumulate like one
    expected = auc_numpy(pred.numpy(), true.numpy())
    assert metric.compute().item() == pytest.approx(expected, abs=1e-9)
    assert 0 < expected < 100


def test_auc_bounds():
    true = random_ab((2, 2, 8, 8), 2)
    perfect = AuC()
    perfect.update(true, true)
    assert perfect.compute().item() == pytest.approx(100.0)
    far = AuC()
    far.update(true + 200, true)  # every error beyond 150: no threshold is ever met
    assert far.compute().item() == 0.0


def test_rebalanced_auc_weights_pixels_by_inverse_prior_of_true_bin():
    grid = torch.arange(-60.0, 70.0, 10.0)
    bins = torch.cartesian_prod(grid, grid)  # a grid of step 10, like the real bins
    g = torch.Generator().manual_seed(3)
    prior = torch.rand(len(bins), generator=g, dtype=torch.float64) + 0.01
    prior /= prior.sum()
    # truth drawn near the bins (all in gamut), prediction random
    true = bins[torch.randint(len(bins), (2 * 12 * 12,), generator=g)].reshape(2, 12, 12, 2).permute(0, 3, 1, 2)
    true = true + torch.randn(true.shape, generator=g) * 3
    pred = random_ab(true.shape, 4)
    metric = AuC(bins=bins, prior=prior)
    metric.update(pred, true)
    weights = 1 / prior.numpy()[nearest_bin_numpy(true.numpy(), bins.numpy())]  # lambda = 0: w proportional to 1 / p
    expected = auc_numpy(pred.numpy(), true.numpy(), weights)
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(auc_numpy(pred.numpy(), true.numpy()), rel=1e-3)  # the weights matter


def test_rebalanced_auc_with_the_authors_prior(reference_dir):
    bins = torch.from_numpy(np.load(reference_dir / "pts_in_hull.npy")).float()
    prior = torch.from_numpy(np.load(reference_dir / "prior_probs.npy"))
    lab = rgb_to_lab(to_tensor(photos(48)))
    true, gray = lab[:, 1:], torch.zeros_like(lab[:, 1:])
    metric = AuC(bins=bins, prior=prior)
    metric.update(gray, true)
    weights = 1 / prior.numpy()[nearest_bin_numpy(true.numpy(), bins.numpy())]
    expected = auc_numpy(gray.numpy(), true.numpy(), weights)
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)
    raw = auc_numpy(gray.numpy(), true.numpy())
    assert expected < raw  # gray is right on the common, desaturated pixels: rebalancing lowers its score




def test_colorfulness_on_real_photos():
    images = photos()
    metric = Colorfulness()
    metric.update(to_tensor(images[:1]))
    metric.update(to_tensor(images[1:]))
    expected = np.mean([colorfulness_numpy(im) for im in images])
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)  # float32 input
    gray = Colorfulness()
    gray.update(to_tensor(images).mean(1, keepdim=True).expand(-1, 3, -1, -1))
    assert gray.compute().item() == pytest.approx(0.0, abs=1e-9)


def test_psnr_is_the_mean_over_images():
    images = to_tensor(photos())
    noisy = (images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    metric = psnr()
    metric.update(noisy[:2], images[:2])
    metric.update(noisy[2:], images[2:])
    mse = ((noisy.double().numpy() - images.double().numpy()) ** 2).reshape(len(images), -1).mean(1)
    assert metric.compute().item() == pytest.approx(np.mean(10 * np.log10(1 / mse)), rel=1e-5)


def ssim_numpy(x: np.ndarray, y: np.ndarray, border: int = 0) -> float:
    """SSIM (Wang et al. 2004) of one (3, H, W) pair, written out: Gaussian window 11, sigma 1.5, reflect padding,
    the per-pixel index averaged over channels and pixels, less ``border`` pixels on each side."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    h, w = x.shape[1:]

    def filt(a):
        padded = np.pad(a, ((0, 0), (5, 5), (5, 5)), mode="reflect")
        return sum(kernel[i, j] * padded[:, i : i + h, j : j + w] for i in range(11) for j in range(11))

    c1, c2 = 0.01**2, 0.03**2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s[:, border : h - border, border : w - border].mean())


def test_ssim_matches_a_written_out_ssim():
    images = to_tensor(photos()).double()
    blurred = torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    metric = ssim()
    metric.update(blurred[:1], images[:1])
    metric.update(blurred[1:], images[1:])
    pairs = [(b.numpy(), t.numpy()) for b, t in zip(blurred, images, strict=True)]
    expected = np.mean([ssim_numpy(b, t) for b, t in pairs])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
    assert expected < 0.99
    # the written-out SSIM is the standard one: less its 5-pixel border it is scikit-image's
    # (torchmetrics, and so this project, also averages over the border, with reflect padding)
    options = dict(data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    b, t = pairs[0]
    assert structural_similarity(b, t, **options) == pytest.approx(ssim_numpy(b, t, border=5), abs=1e-9)


def test_topk_accuracy_matches_a_sort():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(64, 1000, generator=g)
    labels = torch.randint(1000, (64,), generator=g)
    labels[:20] = logits[:20].argsort(1, descending=True)[:, 3]  # some labels at rank 4: top-5 but not top-1
    labels[20:24] = logits[20:24].argmax(1)
    labels[60:] = -1  # unknown class: not counted
    order = np.argsort(-logits.numpy(), axis=1)
    known = labels.numpy() >= 0
    for k in (1, 5):
        hits = [labels[i].item() in order[i, :k] for i in range(64) if known[i]]
        metric = topk_accuracy(k)
        metric.update(logits, labels)
        assert metric.compute().item() == pytest.approx(np.mean(hits), abs=1e-6)


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    """One of two gloo ranks: each sees half of the images; the synced results must be the whole set's."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        images = to_tensor(photos(48))
        lab = rgb_to_lab(images)
        gray = torch.zeros_like(lab[:, 1:])
        metrics = {"auc": AuC(), "colorfulness": Colorfulness(), "psnr": psnr(), "ssim": ssim()}
        part = slice(rank * 2, rank * 2 + 2)
        metrics["auc"].update(gray[part], lab[part, 1:])
        metrics["colorfulness"].update(images[part])
        metrics["psnr"].update(images[part].flip(-1), images[part])
        metrics["ssim"].update(images[part].flip(-1), images[part])
        values = {name: m.compute().item() for name, m in metrics.items()}
        if rank == 0:
            torch.save(values, out)
    finally:
        dist.destroy_process_group()


def test_merged_halves_equal_the_whole():
    """The states' reductions (what DDP applies across ranks), in one process."""
    images = to_tensor(photos(48))
    lab = rgb_to_lab(images)
    gray = torch.zeros_like(lab[:, 1:])
    for make, args in ((AuC, (gray, lab[:, 1:])), (Colorfulness, (images,)), (psnr, (images.flip(-1), images))):
        whole, first, second = make(), make(), make()
        whole.update(*args)
        first.update(*(a[:1] for a in args))
        second.update(*(a[1:] for a in args))
        first.merge_state(second)
        assert first.compute().item() == pytest.approx(whole.compute().item(), rel=1e-9), make.__name__


@pytest.mark.slow  # two real processes: about a minute on 2 shared cores, mostly imports
def test_metrics_reduce_across_ddp_ranks(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "ranks.pt")
    mp.spawn(_ddp_worker, args=(2, port, out), nprocs=2, join=True)
    synced = torch.load(out)

    images = to_tensor(photos(48))
    lab = rgb_to_lab(images)
    whole = {"auc": AuC(), "colorfulness": Colorfulness(), "psnr": psnr(), "ssim": ssim()}
    whole["auc"].update(torch.zeros_like(lab[:, 1:]), lab[:, 1:])
    whole["colorfulness"].update(images)
    whole["psnr"].update(images.flip(-1), images)
    whole["ssim"].update(images.flip(-1), images)
    for name, metric in whole.items():
        assert synced[name] == pytest.approx(metric.compute().item(), rel=1e-6), name
    # and the single-process numbers are the brute-force ones
    assert synced["auc"] == pytest.approx(auc_numpy(np.zeros_like(lab[:, 1:].numpy()), lab[:, 1:].numpy()), abs=1e-9)
