"""The color core against independent computations: skimage.color, brute-force numpy loops written here,
and the authors' reference files in ../shared/reference (never copied into the repository).

Nothing here compares the code with numbers it produced itself.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from skimage.color import gray2rgb, lab2rgb, rgb2gray, rgb2lab
from skimage.transform import resize

from colorization.color import (
    SoftEncoder,
    ab_bins,
    annealed_mean,
    bin_counts,
    estimate_prior,
    gray_mask,
    lab_to_rgb,
    lightness_and_ab_to_rgb,
    nearest_bins,
    rebalance_weights,
    rgb_to_lab,
    rgb_to_lightness,
    smooth_prior,
    soft_encode,
    soft_encode_sparse,
    uint8_to_lab,
    uint8_to_lightness,
)
from colorization.color import reference as ref
from helpers.config import REFERENCE_DIR

ATOL_LAB = 1e-3  # Lab units
ATOL_RGB = 1e-3  # RGB in [0, 1]
SIGMA = 5.0
PAPER_MIN_WEIGHT, PAPER_MAX_WEIGHT = 0.0965, 6.175  # PAPER.md, lambda = 0.5, official prior
PAPER_Q, PAPER_ZERO_INDEX = 313, 120  # PAPER.md: 313 bins, index 120 is ab = (0, 0)


# ----------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """skimage's bundled color photos (no network), float64 (H, W, 3) in [0, 1]."""
    return {name: getattr(skimage.data, name)() / 255.0 for name in ("astronaut", "chelsea", "coffee")}


@pytest.fixture(scope="module")
def srgb_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("srgb_cache")


@pytest.fixture(scope="module")
def srgb_bins(srgb_cache) -> torch.Tensor:
    """ab_bins("srgb") computed once for the module, into a fresh cache folder (never a stale file)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLORIZATION_CACHE", str(srgb_cache))
        return ab_bins("srgb")


def official(reference_dir: Path, name: str = "pts_in_hull.npy") -> np.ndarray:
    return np.load(reference_dir / name, allow_pickle=False)


def bins_for(source: str, srgb_bins: torch.Tensor, request) -> torch.Tensor:
    if source == "srgb":
        return srgb_bins
    return torch.from_numpy(official(request.getfixturevalue("reference_dir"))).float()


def to_hwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy().transpose(1, 2, 0)


def sk_lab(rgb_chw: np.ndarray) -> np.ndarray:
    """skimage Lab of a (3, H, W) float64 image, as (3, H, W)."""
    return rgb2lab(rgb_chw.transpose(1, 2, 0)).transpose(2, 0, 1)


def sk_rgb(lab_chw: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns when it clips negative Z values
        return lab2rgb(lab_chw.transpose(1, 2, 0)).transpose(2, 0, 1)


def photo_ab(img: np.ndarray, stride: int = 4) -> np.ndarray:
    """skimage ab of a photo, subsampled one pixel per stride x stride block: (1, 2, h, w) float64."""
    return rgb2lab(img)[::stride, ::stride, 1:].transpose(2, 0, 1)[None]


def brute_soft_encode(ab: np.ndarray, bins: np.ndarray, k: int, sigma: float) -> np.ndarray:
    """Per-pixel loop: distances to every bin, sort, Gaussian weights of the k nearest, normalize."""
    B, _, h, w = ab.shape
    out = np.zeros((B, len(bins), h, w))
    for n in range(B):
        for y in range(h):
            for x in range(w):
                a, b = ab[n, 0, y, x], ab[n, 1, y, x]
                d = np.array([np.hypot(a - ca, b - cb) for ca, cb in bins])
                nn = np.argsort(d, kind="stable")[:k]
                wts = np.exp(-(d[nn] ** 2) / (2 * sigma**2))
                out[n, nn, y, x] = wts / wts.sum()
    return out


def brute_nearest(ab_flat: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """(N, 2) -> (N,) index of the nearest bin, by distances to all bins."""
    bins = bins.astype(np.float64)
    chunks = np.array_split(ab_flat, max(1, len(ab_flat) // 2048))
    return np.concatenate([((c[:, None, :] - bins[None]) ** 2).sum(-1).argmin(1) for c in chunks])


def brute_smooth(counts: np.ndarray, bins: np.ndarray, sigma: float) -> np.ndarray:
    bins = bins.astype(np.float64)
    p = np.zeros(len(bins))
    for q in range(len(bins)):  # one bin at a time, summing over all bins r
        d2 = (bins[q, 0] - bins[:, 0]) ** 2 + (bins[q, 1] - bins[:, 1]) ** 2
        p[q] = np.sum(counts * np.exp(-d2 / (2 * sigma**2)))
    return p / p.sum()


def paper_weights(p: np.ndarray, lam: float) -> np.ndarray:
    """PAPER.md: uni over the nonzero-prior bins, mix, w = 1 / mix, E_p[w] = 1 (nonzero bins only)."""
    seen = p > 0
    uni = np.where(seen, 1.0 / seen.sum(), 0.0)
    mix = (1 - lam) * p + lam * uni
    w = np.zeros_like(p)
    w[seen] = 1.0 / mix[seen]
    return w / (p * w).sum()


def synthetic_prior(Q: int, zeros: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(Q, 0.3))
    p[rng.choice(Q, zeros, replace=False)] = 0.0
    return p / p.sum()


# ----------------------------------------------------------------------------------------------- 1. Lab
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 9, 11), (2, 3, 7, 5), (2, 2, 3, 4, 6)])
def test_rgb_to_lab_matches_skimage_random(dtype, shape):
    rgb = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rgb[..., 0, 0] = 0.0  # black, white and the sRGB-gamma threshold neighbourhood
    rgb[..., -1, -1] = 1.0
    rgb[..., 0, 1] = 0.04
    lab = rgb_to_lab(rgb.to(dtype))
    assert lab.shape == rgb.shape and lab.dtype == dtype
    flat_rgb, flat_lab = rgb.reshape(-1, *shape[-3:]).numpy(), lab.reshape(-1, *shape[-3:]).double().numpy()
    for x, got in zip(flat_rgb, flat_lab, strict=True):
        np.testing.assert_allclose(got, sk_lab(x), atol=ATOL_LAB, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rgb_to_lab_and_lightness_match_skimage_on_photos(photos, dtype):
    for img in photos.values():
        expected = rgb2lab(img)
        rgb = torch.from_numpy(img.transpose(2, 0, 1).copy()).to(dtype)
        np.testing.assert_allclose(to_hwc(rgb_to_lab(rgb)), expected, atol=ATOL_LAB, rtol=0)
        L = rgb_to_lightness(rgb)
        assert L.shape == (1, *img.shape[:2]) and L.dtype == dtype
        np.testing.assert_allclose(L[0].double().numpy(), expected[..., 0], atol=ATOL_LAB, rtol=0)
    # batched: equal-size crops of the three photos
    crops = np.stack([img[:200, :256] for img in photos.values()])  # (3, H, W, C)
    batch = torch.from_numpy(crops.transpose(0, 3, 1, 2).copy()).to(dtype)
    lab, L = rgb_to_lab(batch), rgb_to_lightness(batch)
    assert lab.shape == (3, 3, 200, 256) and L.shape == (3, 1, 200, 256)
    for i, crop in enumerate(crops):
        expected = rgb2lab(crop)
        np.testing.assert_allclose(to_hwc(lab[i]), expected, atol=ATOL_LAB, rtol=0)
        np.testing.assert_allclose(L[i, 0].double().numpy(), expected[..., 0], atol=ATOL_LAB, rtol=0)


def test_uint8_to_lab_matches_skimage_on_uint8(photos):
    img = skimage.data.coffee()
    batch = torch.from_numpy(np.stack([img, img[::-1].copy()]).transpose(0, 3, 1, 2).copy())
    lab = uint8_to_lab(batch)
    assert lab.dtype == torch.float32
    np.testing.assert_allclose(to_hwc(lab[0]), rgb2lab(img), atol=ATOL_LAB, rtol=0)
    np.testing.assert_allclose(to_hwc(lab[1]), rgb2lab(img[::-1]), atol=ATOL_LAB, rtol=0)


def test_dark_colors_match_skimage_to_float_rounding():
    """Every color of the cube's dark corner (levels 0..47: L < 20, both branches of f(t) and their boundary): skimage's
    line kappa t + 16/116 below epsilon, not the cube root's tangent (they differ by 3e-7, 3.5e-5 in L), to float
    rounding. The network's input L is this close to skimage's, in float32 too."""
    levels = np.arange(48, dtype=np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 3)
    expected = rgb2lab(cube)[0]
    pixels = torch.from_numpy(cube[0].T.copy())[:, None, :]  # (3, 1, N)
    lab64 = rgb_to_lab(pixels.double() / 255)[:, 0].T.numpy()
    # float64: exact but for one color in 110,592 that lies within 4e-8 above epsilon (lab._lab_f)
    assert (np.abs(lab64 - expected).max(1) > 1e-9).sum() <= 1
    np.testing.assert_allclose(lab64, expected, atol=3e-5, rtol=0)
    np.testing.assert_allclose(uint8_to_lab(pixels[None])[0, :, 0].T.double().numpy(), expected, atol=3e-5, rtol=0)
    L = uint8_to_lightness(pixels[None])[0, 0, 0].double().numpy()
    np.testing.assert_allclose(L, expected[:, 0], atol=1.5e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lab_to_rgb_matches_skimage_in_gamut(photos, dtype):
    rng = np.random.default_rng(1)
    rgb = rng.random((2, 3, 8, 9))
    lab = np.stack([sk_lab(x) for x in rgb])  # in-gamut Lab from skimage
    got = lab_to_rgb(torch.from_numpy(lab).to(dtype))
    assert got.shape == lab.shape and got.dtype == dtype
    for i in range(2):
        np.testing.assert_allclose(got[i].double().numpy(), sk_rgb(lab[i]), atol=ATOL_RGB, rtol=0)
    # unbatched, on a real photo's Lab
    lab_photo = rgb2lab(photos["chelsea"]).transpose(2, 0, 1)
    got = lab_to_rgb(torch.from_numpy(lab_photo.copy()).to(dtype))
    np.testing.assert_allclose(got.double().numpy(), sk_rgb(lab_photo), atol=ATOL_RGB, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lab_to_rgb_clips_out_of_gamut_like_skimage(dtype):
    rng = np.random.default_rng(2)
    lab = np.stack(
        [rng.uniform(-10, 110, (4, 16, 16)), rng.uniform(-128, 127, (4, 16, 16)), rng.uniform(-128, 127, (4, 16, 16))],
        axis=1,
    )
    lab[0, :, 0, :3] = [[50, 50, 50], [0, 100, -100], [-127, 127, 0]]  # a few hand-picked extremes
    lab[0, 2, 1, 0] = -128  # strongly negative Z after the b shift: skimage clips Z to 0
    got = lab_to_rgb(torch.from_numpy(lab).to(dtype)).double().numpy()
    assert got.min() >= 0 and got.max() <= 1
    for i in range(len(lab)):
        expected = sk_rgb(lab[i])
        np.testing.assert_allclose(got[i], expected, atol=ATOL_RGB, rtol=0)
    assert ((got == 0) | (got == 1)).mean() > 0.2  # the sample really exercises the clipping


# ----------------------------------------------------------------------------------------------- 2. bins
def test_srgb_bins_format_and_cache(srgb_bins, srgb_cache):
    bins = srgb_bins.numpy()
    assert srgb_bins.dtype == torch.float32 and bins.ndim == 2 and bins.shape[1] == 2
    assert np.array_equal(bins, np.round(bins / 10) * 10), "bin centres are multiples of 10"
    order = np.lexsort((bins[:, 1], bins[:, 0]))
    assert np.array_equal(order, np.arange(len(bins))), "rows sorted by (a, b)"
    assert len(np.unique(bins, axis=0)) == len(bins)
    assert [0.0, 0.0] in bins.tolist()
    cached = list(srgb_cache.glob("*.npy"))
    assert len(cached) == 1 and np.array_equal(np.load(cached[0]), bins)
    with pytest.MonkeyPatch.context() as mp:  # second call: read back from the cache file
        mp.setenv("COLORIZATION_CACHE", str(srgb_cache))
        assert torch.equal(ab_bins("srgb"), srgb_bins)


def test_srgb_bins_follow_the_documented_rule(srgb_bins):
    """Rule: (a, b) is a bin iff some 8-bit sRGB color has round(ab / 10) * 10 == (a, b).

    Independent check with skimage on the six faces of the 8-bit RGB cube (the ab projection of the
    gamut solid is the projection of its surface), plus random 8-bit colors from the whole cube.
    """
    got = {tuple(row) for row in (srgb_bins.numpy() / 10).round().astype(int).tolist()}
    levels = np.arange(256) / 255.0
    u, v = np.meshgrid(levels, levels, indexing="ij")
    faces = []
    for axis in range(3):
        for value in (0.0, 1.0):
            channels = [u, v]
            channels.insert(axis, np.full_like(u, value))
            faces.append(np.stack(channels, -1))
    ab = rgb2lab(np.concatenate(faces))[..., 1:].reshape(-1, 2)
    from_faces = {tuple(row) for row in np.round(ab / 10).astype(int).tolist()}
    rng = np.random.default_rng(3)
    colors = rng.integers(0, 256, (1, 200_000, 3), dtype=np.uint8)
    ab_random = rgb2lab(colors)[0, :, 1:]
    from_random = {tuple(row) for row in np.round(ab_random / 10).astype(int).tolist()}
    assert from_random <= got, f"8-bit colors outside every bin: {sorted(from_random - got)}"
    assert from_faces <= got, f"8-bit colors outside every bin: {sorted(from_faces - got)}"
    assert got <= from_faces, f"bins that no 8-bit sRGB color rounds to: {sorted(got - from_faces)}"


def test_srgb_bins_are_a_subset_of_the_official_313(srgb_bins, reference_dir):
    pts = official(reference_dir)
    assert pts.shape == (PAPER_Q, 2)
    assert {tuple(r) for r in srgb_bins.numpy().astype(int).tolist()} <= {tuple(r) for r in pts.tolist()}
    assert len(srgb_bins) < PAPER_Q  # PAPER.md: the exact sRGB gamut gives fewer than 313


def test_official_bins_from_path_folder_env_and_name(reference_dir, tmp_path, monkeypatch):
    expected = official(reference_dir)
    assert expected.shape == (PAPER_Q, 2) and tuple(expected[PAPER_ZERO_INDEX]) == (0, 0)
    monkeypatch.setenv("COLORIZATION_CACHE", str(tmp_path))  # empty cache: no download must be needed
    monkeypatch.setenv("COLORIZATION_REFERENCE_DIR", str(reference_dir))
    for source in (reference_dir / "pts_in_hull.npy", str(reference_dir / "pts_in_hull.npy"), reference_dir):
        bins = ab_bins(source, download=False)
        assert bins.dtype == torch.float32 and bins.shape == (PAPER_Q, 2)
        assert np.array_equal(bins.numpy(), expected.astype(np.float32))
        assert tuple(bins[PAPER_ZERO_INDEX].tolist()) == (0.0, 0.0)
    assert np.array_equal(ab_bins("official", download=False).numpy(), expected.astype(np.float32))
    assert list(tmp_path.iterdir()) == []  # found through $COLORIZATION_REFERENCE_DIR, nothing downloaded


def test_corrupted_reference_is_refused(reference_dir, tmp_path):
    good = (reference_dir / "pts_in_hull.npy").read_bytes()
    bad = bytearray(good)
    bad[-1] ^= 0x01  # one bit of the last value: still a loadable .npy, not the authors' bytes
    (tmp_path / "pts_in_hull.npy").write_bytes(bytes(bad))
    assert np.load(tmp_path / "pts_in_hull.npy").shape == (PAPER_Q, 2)
    with pytest.raises(ref.ReferenceError):
        ab_bins(tmp_path / "pts_in_hull.npy", download=False)
    with pytest.raises(ref.ReferenceError):
        ab_bins(tmp_path, download=False)
    wrong = tmp_path / "wrong" / "pts_in_hull.npy"  # a real authors' file, but the wrong one
    wrong.parent.mkdir()
    shutil.copy(reference_dir / "prior_probs.npy", wrong)
    with pytest.raises(ref.ReferenceError):
        ab_bins(wrong, download=False)


def test_missing_reference_without_download_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("COLORIZATION_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COLORIZATION_REFERENCE_DIR", raising=False)
    with pytest.raises(ref.ReferenceError):
        ab_bins("official", download=False)
    with pytest.raises(ref.ReferenceError):
        ab_bins(tmp_path / "nowhere" / "pts_in_hull.npy", download=False)
    with pytest.raises(ref.ReferenceError):
        ref.reference_path("not_a_reference.npy", download=False)
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def _serve_from_file(monkeypatch, tmp_path, name: str, source_bytes: bytes):
    """Point the download URL of `name` at a file:// copy and the cache at an empty folder."""
    served = tmp_path / "served" / name
    served.parent.mkdir(parents=True)
    served.write_bytes(source_bytes)
    monkeypatch.setitem(ref.REFERENCE_FILES, name, ref.ReferenceFile(ref.REFERENCE_FILES[name].sha256, served.as_uri()))
    cache = tmp_path / "cache"
    monkeypatch.setenv("COLORIZATION_CACHE", str(cache))
    monkeypatch.delenv("COLORIZATION_REFERENCE_DIR", raising=False)
    return cache


def test_download_through_file_url(reference_dir, tmp_path, monkeypatch):
    good = (reference_dir / "pts_in_hull.npy").read_bytes()
    cache = _serve_from_file(monkeypatch, tmp_path, "pts_in_hull.npy", good)
    bins = ab_bins("official")
    assert np.array_equal(bins.numpy(), official(reference_dir).astype(np.float32))
    assert [p.name for p in cache.iterdir()] == ["pts_in_hull.npy"]
    assert hashlib.sha256((cache / "pts_in_hull.npy").read_bytes()).digest() == hashlib.sha256(good).digest()
    (tmp_path / "served" / "pts_in_hull.npy").unlink()  # the next call reads the cache, no download
    assert torch.equal(ab_bins("official", download=False), bins)


def test_download_of_wrong_bytes_is_refused_and_leaves_nothing(reference_dir, tmp_path, monkeypatch):
    bad = bytearray((reference_dir / "pts_in_hull.npy").read_bytes())
    bad[200] ^= 0xFF
    cache = _serve_from_file(monkeypatch, tmp_path, "pts_in_hull.npy", bytes(bad))
    with pytest.raises(ref.ReferenceError):
        ab_bins("official")
    assert list(cache.iterdir()) == []
    (tmp_path / "served" / "pts_in_hull.npy").unlink()  # unreachable URL
    with pytest.raises(ref.ReferenceError):
        ab_bins("official")
    assert list(cache.iterdir()) == []


# ----------------------------------------------------------------------------------------------- 3. encoding
@pytest.mark.parametrize("source", ["official", "srgb"])
@pytest.mark.parametrize("k", [5, 10])
def test_soft_encode_matches_brute_force(source, k, srgb_bins, request):
    bins = bins_for(source, srgb_bins, request)
    rng = np.random.default_rng(10 + k)
    ab = rng.uniform(-110, 110, (2, 2, 6, 7))
    ab[0, :, 0, 0] = [0.3, -0.2]  # near-gray, saturated and far-out-of-gamut points
    ab[0, :, 0, 1] = [-85.1, 72.4]
    ab[1, :, 5, 6] = [109.7, -109.9]
    expected = brute_soft_encode(ab, bins.numpy(), k, SIGMA)
    z = soft_encode(torch.from_numpy(ab).float(), bins, k=k, sigma=SIGMA)
    assert z.shape == (2, len(bins), 6, 7)
    np.testing.assert_allclose(z.double().numpy(), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(z.sum(1).double().numpy(), 1.0, atol=1e-5)
    assert ((z > 0).sum(1) == k).all()
    # float64 bins: the whole computation in double precision, agreeing to rounding
    z64 = soft_encode(torch.from_numpy(ab), bins.double(), k=k, sigma=SIGMA)
    assert z64.dtype == torch.float64
    np.testing.assert_allclose(z64.numpy(), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("sigma", [2.0, 10.0])
def test_soft_encode_sigma_matches_brute_force(sigma, srgb_bins):
    rng = np.random.default_rng(11)
    ab = rng.uniform(-90, 90, (1, 2, 5, 5))
    expected = brute_soft_encode(ab, srgb_bins.numpy(), 5, sigma)
    z = soft_encode(torch.from_numpy(ab), srgb_bins.double(), k=5, sigma=sigma)
    np.testing.assert_allclose(z.numpy(), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("source", ["official", "srgb"])
@pytest.mark.parametrize("k", [1, 5, 10])
@pytest.mark.parametrize("limit", [110.0, 140.0])
def test_soft_encoder_table_matches_brute_force(source, k, limit, srgb_bins, request):
    bins = bins_for(source, srgb_bins, request)
    Q, np_bins = len(bins), bins.numpy().astype(np.float64)
    rng = np.random.default_rng(int(limit) + k)
    ab = rng.uniform(-limit, limit, (3, 2, 16, 20))
    # next to the table's corners (off the diagonals: exact ties are tested separately)
    ca, cb = limit - 0.013, limit - 0.029
    ab[0, :, 0, :4] = [[-ca, ca, ca, -ca], [-cb, cb, -cb, cb]]
    idx, wts = SoftEncoder(bins, k=k, sigma=SIGMA)(torch.from_numpy(ab).float())
    assert idx.shape == wts.shape == (3, k, 16, 20) and idx.dtype == torch.int64
    idx, wts = idx.numpy(), wts.double().numpy()
    assert (idx >= 0).all() and (idx < Q).all()
    assert all(len(set(idx[n, :, y, x])) == k for n in range(3) for y in range(16) for x in range(20))
    dense = np.zeros((3, Q, 16, 20))
    np.put_along_axis(dense, idx, wts, axis=1)
    # brute force, vectorized over pixels but over all bins: dense Gaussian targets of the k nearest
    flat = ab.transpose(0, 2, 3, 1).reshape(-1, 2)
    d2 = ((flat[:, None, :] - np_bins[None]) ** 2).sum(-1)
    nn = np.argsort(d2, axis=1, kind="stable")[:, :k]
    g = np.exp(-np.take_along_axis(d2, nn, 1) / (2 * SIGMA**2))
    expected = np.zeros_like(d2)
    np.put_along_axis(expected, nn, g / g.sum(1, keepdims=True), axis=1)
    expected = expected.reshape(3, 16, 20, Q).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(dense, expected, atol=1e-5, rtol=0)
    assert np.array_equal(idx[:, 0], d2.argmin(1).reshape(3, 16, 20)), "index[:, 0] is the nearest bin"
    assert (np.diff(np.take_along_axis(d2, idx.transpose(0, 2, 3, 1).reshape(-1, k), 1), axis=1) >= -1e-3).all()


@pytest.mark.parametrize("k", [5, 10])
def test_nearest_bins_on_ties_picks_a_valid_k_nearest_set(k, srgb_bins):
    """Grid and half-grid points have equidistant bins: any choice is right if its distances are the k smallest."""
    bins = srgb_bins
    grid = np.arange(-100, 101, 5.0)
    pts = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    d2 = ((pts[:, None, :] - bins.numpy()[None].astype(np.float64)) ** 2).sum(-1)
    smallest = np.sort(d2, axis=1)[:, :k]
    encoder = SoftEncoder(bins, k=k)
    for table in (None, encoder.table):
        got_d2, got_idx = nearest_bins(torch.from_numpy(pts).float(), bins, k, table)
        got_idx = got_idx.numpy()
        assert all(len(set(row)) == k for row in got_idx)
        np.testing.assert_allclose(got_d2.double().numpy(), smallest, atol=1e-3)
        np.testing.assert_allclose(np.take_along_axis(d2, got_idx, 1), smallest, atol=1e-9)
    idx, wts = soft_encode_sparse(torch.from_numpy(pts.T.reshape(1, 2, len(grid), len(grid))).float(), bins, k)
    g = np.exp(-smallest / (2 * SIGMA**2))
    expected = (g / g.sum(1, keepdims=True)).reshape(len(grid), len(grid), k).transpose(2, 0, 1)
    np.testing.assert_allclose(wts[0].double().numpy(), expected, atol=1e-6)


def test_soft_encoder_rejects_bad_k_and_sigma(srgb_bins):
    Q = len(srgb_bins)
    for k in (0, -1, Q + 1):
        with pytest.raises(ValueError):
            SoftEncoder(srgb_bins, k=k)
    for sigma in (0.0, -5.0):
        with pytest.raises(ValueError):
            SoftEncoder(srgb_bins, k=5, sigma=sigma)
    assert SoftEncoder(srgb_bins, k=Q).k == Q  # the largest valid k


def test_gray_mask_on_photos(photos):
    crops = [img[:128, :160] for img in photos.values()]
    grays = [gray2rgb(rgb2gray(c)) for c in crops]
    images = np.stack([x for pair in zip(crops, grays, strict=True) for x in pair])  # color, gray, color, ...
    ab = np.stack([rgb2lab(x)[::4, ::4, 1:].transpose(2, 0, 1) for x in images])  # authors' stride-4 targets
    mask = gray_mask(torch.from_numpy(ab).float())
    assert mask.shape == (6,) and mask.dtype == torch.float32
    assert mask.tolist() == [1.0, 0.0] * 3
    assert gray_mask(torch.from_numpy(ab[1:2]).float()).tolist() == [0.0]
    assert gray_mask(torch.from_numpy(ab[:1]).float()).tolist() == [1.0]


def test_gray_mask_threshold_semantics():
    rng = np.random.default_rng(20)
    ab = rng.uniform(-4.9, 4.9, (8, 2, 6, 6))
    ab[1, 0, 2, 3] = 5.0  # exactly the threshold: still gray (strictly greater is needed)
    ab[2, 0, 2, 3] = 5.01
    ab[3, 1, 5, 5] = -5.5  # b only, negative
    ab[4, 0, 0, 0] = -30.0
    ab[5] = 0.0
    ab[6, 1, 0, 5] = -5.0
    ab[7, 1] += 60.0
    for threshold in (5.0, 2.0, 40.0):
        expected = np.array([np.any(np.abs(img) > threshold) for img in ab], dtype=np.float64)
        np.testing.assert_array_equal(gray_mask(torch.from_numpy(ab), threshold).numpy(), expected)
    np.testing.assert_array_equal(gray_mask(torch.from_numpy(ab)).numpy(), [0, 0, 1, 1, 1, 0, 0, 1])


# ----------------------------------------------------------------------------------------------- 4. rebalancing
def test_rebalance_weights_official_prior_paper_numbers(reference_dir):
    p = official(reference_dir, "prior_probs.npy")
    w = rebalance_weights(torch.from_numpy(p))
    assert w.shape == (PAPER_Q,)
    assert int(w.argmin()) == PAPER_ZERO_INDEX
    assert tuple(official(reference_dir)[PAPER_ZERO_INDEX]) == (0, 0)
    assert round(float(w.min()), 4) == PAPER_MIN_WEIGHT
    assert round(float(w.max()), 3) == PAPER_MAX_WEIGHT
    assert float((w.double() * torch.from_numpy(p)).sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 1.0])
def test_rebalance_weights_match_paper_formula(lam, request):
    priors = [synthetic_prior(313, 0, seed=1), synthetic_prior(261, 0, seed=2)]
    if (REFERENCE_DIR / "prior_probs.npy").is_file():  # the official prior too, when present
        priors.append(official(request.getfixturevalue("reference_dir"), "prior_probs.npy"))
    for p in priors:
        w = rebalance_weights(torch.from_numpy(p), lam=lam)
        assert w.shape == p.shape
        np.testing.assert_allclose(w.double().numpy(), paper_weights(p, lam), rtol=1e-5, atol=0)
        assert float((w.double().numpy() * p).sum()) == pytest.approx(1.0, abs=1e-5)
        if lam == 1.0:
            np.testing.assert_allclose(w.numpy(), 1.0, atol=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_rebalance_weights_zero_prior_bins_get_the_max_weight(lam):
    p = synthetic_prior(313, zeros=40, seed=3)
    seen = p > 0
    w = rebalance_weights(torch.from_numpy(p), lam=lam).double().numpy()
    expected = paper_weights(p, lam)
    np.testing.assert_allclose(w[seen], expected[seen], rtol=1e-5)
    np.testing.assert_allclose(w[~seen], expected[seen].max(), rtol=1e-5)
    assert np.isfinite(w).all()


@pytest.mark.parametrize("lam", [-0.01, 1.01, 2.0])
def test_rebalance_weights_reject_lam_outside_unit_interval(lam):
    with pytest.raises(ValueError):
        rebalance_weights(torch.from_numpy(synthetic_prior(313, 0, seed=4)), lam=lam)


# ----------------------------------------------------------------------------------------------- 5. prior
@pytest.mark.parametrize("source", ["srgb", "official"])
def test_bin_counts_match_brute_histogram(photos, source, srgb_bins, request):
    bins = bins_for(source, srgb_bins, request)
    for img in photos.values():
        ab = photo_ab(img)
        flat = ab[0].reshape(2, -1).T
        expected = np.bincount(brute_nearest(flat, bins.numpy()), minlength=len(bins)).astype(np.float64)
        got64 = bin_counts(torch.from_numpy(ab), bins.double())
        assert got64.dtype == torch.float64 and got64.shape == (len(bins),)
        np.testing.assert_array_equal(got64.numpy(), expected)
        got32 = bin_counts(torch.from_numpy(ab).float(), bins).numpy()  # float32: only razor-edge pixels may move
        assert got32.sum() == len(flat) and np.abs(got32 - expected).sum() <= 2e-3 * len(flat)


@pytest.mark.parametrize("sigma", [5.0, 10.0])
def test_smooth_prior_matches_brute_kernel(sigma, srgb_bins):
    counts = np.random.default_rng(30).integers(0, 1000, len(srgb_bins)).astype(np.float64)
    counts[::7] = 0
    p = smooth_prior(torch.from_numpy(counts), srgb_bins, sigma=sigma)
    assert p.dtype == torch.float64
    np.testing.assert_allclose(p.numpy(), brute_smooth(counts, srgb_bins.numpy(), sigma), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("source", ["srgb", "official"])
def test_estimate_prior_matches_brute_on_photos(photos, source, srgb_bins, request):
    bins = bins_for(source, srgb_bins, request)
    abs_ = [photo_ab(img) for img in photos.values()]
    flat = np.concatenate([ab[0].reshape(2, -1).T for ab in abs_])
    counts = np.bincount(brute_nearest(flat, bins.numpy()), minlength=len(bins)).astype(np.float64)
    expected = brute_smooth(counts, bins.numpy(), SIGMA)
    got = estimate_prior((torch.from_numpy(ab) for ab in abs_), bins.double(), sigma=SIGMA)
    assert got.shape == (len(bins),) and float(got.sum()) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-15)
    # a real photo is dominated by few colors: the prior is far from uniform
    assert expected.max() > 5 / len(bins)
    with pytest.raises(ValueError):
        estimate_prior(iter([]), bins)


# ----------------------------------------------------------------------------------------------- 6. decoding
def numpy_annealed_mean(logits: np.ndarray, bins: np.ndarray, T: float) -> np.ndarray:
    z = logits / T
    z = np.exp(z - z.max(1, keepdims=True))
    probs = z / z.sum(1, keepdims=True)
    out = np.zeros((logits.shape[0], 2, *logits.shape[2:]))
    for q, (a, b) in enumerate(bins.astype(np.float64)):
        out[:, 0] += probs[:, q] * a
        out[:, 1] += probs[:, q] * b
    return out


@pytest.mark.parametrize("source", ["srgb", "official"])
@pytest.mark.parametrize("T", [1.0, 0.38, 0.1, 2.5])
def test_annealed_mean_matches_numpy(source, T, srgb_bins, request):
    bins = bins_for(source, srgb_bins, request)
    logits = np.random.default_rng(40).normal(0, 3, (2, len(bins), 3, 5))
    got = annealed_mean(torch.from_numpy(logits).float(), bins, T=T)
    assert got.shape == (2, 2, 3, 5)
    np.testing.assert_allclose(got.double().numpy(), numpy_annealed_mean(logits, bins.numpy(), T), atol=2e-3, rtol=0)


def test_annealed_mean_T1_is_the_plain_mean_and_small_T_the_mode(srgb_bins):
    bins, Q = srgb_bins.numpy().astype(np.float64), len(srgb_bins)
    rng = np.random.default_rng(41)
    z = rng.dirichlet(np.full(Q, 0.5), size=(2, 4, 4)).transpose(0, 3, 1, 2)  # distributions over bins
    plain = np.einsum("bqhw,qc->bchw", z, bins)
    got = annealed_mean(torch.from_numpy(np.log(z)), srgb_bins, T=1.0)  # f_T(z) = exp(log z / T) / sum
    np.testing.assert_allclose(got.double().numpy(), plain, atol=1e-3, rtol=0)
    # T -> 0: the mode, i.e. the centre of the argmax bin
    logits = rng.normal(0, 1, (2, Q, 4, 4))
    mode = logits.argmax(1)
    np.put_along_axis(logits, mode[:, None], logits.max(1, keepdims=True) + 1.0, axis=1)  # a clear winner
    got = annealed_mean(torch.from_numpy(logits), srgb_bins, T=0.01).double().numpy()
    np.testing.assert_allclose(got, bins[mode].transpose(0, 3, 1, 2), atol=1e-3, rtol=0)
    # and T = 0.38 lies strictly between: more saturated than the plain mean on a peaked distribution
    chroma = lambda ab: np.hypot(ab[:, 0], ab[:, 1])  # noqa: E731
    t1 = annealed_mean(torch.from_numpy(logits), srgb_bins, T=1.0).double().numpy()
    t038 = annealed_mean(torch.from_numpy(logits), srgb_bins, T=0.38).double().numpy()
    np.testing.assert_allclose(t1, numpy_annealed_mean(logits, bins, 1.0), atol=2e-3)
    np.testing.assert_allclose(t038, numpy_annealed_mean(logits, bins, 0.38), atol=2e-3)
    assert np.mean(np.abs(t038 - got)) < np.mean(np.abs(t1 - got))
    assert chroma(t1).mean() < chroma(got).mean()


def test_annealed_mean_rejects_negative_T(srgb_bins):
    with pytest.raises(ValueError, match="must be >= 0"):
        annealed_mean(torch.zeros(1, len(srgb_bins), 2, 2), srgb_bins, T=-0.38)


def test_annealed_mean_at_T0_is_the_most_likely_bins_centre(srgb_bins):
    """T = 0 (the mode, the temperature strip's last frame) by a loop over pixels: the centre of the bin with
    the largest logit."""
    bins = srgb_bins.numpy()
    logits = np.random.default_rng(7).normal(0, 1, (2, len(bins), 3, 5)).astype(np.float32)
    got = annealed_mean(torch.from_numpy(logits), srgb_bins, T=0.0).numpy()
    assert got.shape == (2, 2, 3, 5)
    for b, i, j in np.ndindex(2, 3, 5):
        best = max(range(len(bins)), key=lambda q: logits[b, q, i, j])
        assert got[b, :, i, j].tolist() == bins[best].tolist()


def test_lightness_and_ab_to_rgb_matches_skimage(photos):
    labs = [rgb2lab(img[:96, :128]) for img in photos.values()]
    lab = np.stack(labs).transpose(0, 3, 1, 2)  # (3, 3, 96, 128)
    L, ab = torch.from_numpy(lab[:, :1]).float(), torch.from_numpy(lab[:, 1:]).float()
    got = lightness_and_ab_to_rgb(L, ab)
    assert got.shape == (3, 3, 96, 128)
    for i in range(3):
        np.testing.assert_allclose(got[i].double().numpy(), sk_rgb(lab[i]), atol=ATOL_RGB, rtol=0)
        original = list(photos.values())[i][:96, :128].transpose(2, 0, 1)
        np.testing.assert_allclose(got[i].double().numpy(), original, atol=2e-3, rtol=0)


def test_lightness_and_ab_to_rgb_upsamples_ab_bilinearly(photos):
    lab = rgb2lab(photos["coffee"][:96, :128])
    ab_small = lab[::4, ::4, 1:]  # (24, 32, 2): the network's 1/4 resolution
    # bilinear, pixel centres aligned (align_corners=False), edges clamped: skimage's order-1 resize
    ab_up = resize(ab_small, (96, 128), order=1, mode="edge", anti_aliasing=False)
    expected = sk_rgb(np.concatenate([lab[..., :1], ab_up], -1).transpose(2, 0, 1))
    L = torch.from_numpy(lab[..., 0].copy())[None, None]
    got = lightness_and_ab_to_rgb(L, torch.from_numpy(ab_small.transpose(2, 0, 1).copy())[None])
    assert got.shape == (1, 3, 96, 128)
    np.testing.assert_allclose(got[0].double().numpy(), expected, atol=ATOL_RGB, rtol=0)


def test_integer_rgb_is_refused_rather_than_misread():
    from colorization.color import rgb_to_lab, rgb_to_lightness, uint8_to_lab

    photo = skimage.data.astronaut()[:8, :8]
    image = torch.from_numpy(photo.copy()).permute(2, 0, 1)
    for fn in (rgb_to_lab, rgb_to_lightness):
        with pytest.raises(TypeError, match="uint8_to_lab"):
            fn(image)
    np.testing.assert_allclose(uint8_to_lab(image).permute(1, 2, 0).numpy(), rgb2lab(photo), atol=1e-3)


def test_joining_in_rows_equals_joining_the_whole_photo_and_skimage():
    """The API joins L and ab a few rows at a time (bounded memory): the same as upsampling the whole ab with
    F.interpolate and converting at once, and as scikit-image's lab2rgb of the photo's L with that ab."""
    import torch.nn.functional as F
    from skimage.color import lab2rgb, rgb2lab

    from colorization.color import join_in_rows, lightness_and_ab_to_rgb, rgb_to_lightness

    rgb = torch.from_numpy(skimage.data.chelsea()[:75, :101].copy()).permute(2, 0, 1)  # odd sizes: ragged strips
    ab = torch.randn(1, 2, 9, 13, generator=torch.Generator().manual_seed(0)) * 40
    whole = lightness_and_ab_to_rgb(rgb_to_lightness(rgb[None].float() / 255), ab)[0].clamp(0, 1)
    for rows in (1, 7, 256):
        strips = join_in_rows(rgb, ab, rows=rows)
        assert (strips - whole).abs().max() < 1e-5, rows
        as_uint8 = join_in_rows(rgb, ab, torch.uint8, rows)
        assert torch.equal(as_uint8, (strips * 255).round().to(torch.uint8))
        # the whole photo's floats differ by < 1e-5: a value at a rounding boundary may land one level away
        assert (as_uint8.int() - (whole * 255).round().int()).abs().max() <= 1
    up = F.interpolate(ab, size=(75, 101), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    lab = rgb2lab(rgb.permute(1, 2, 0).numpy())
    expected = lab2rgb(np.dstack([lab[..., :1], up]))
    assert np.abs(join_in_rows(rgb, ab).permute(1, 2, 0).numpy() - expected).max() < 2e-3
