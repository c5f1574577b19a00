"""sRGB (D65) <-> CIE Lab, batched torch, the same formulas as ``skimage.color``.

Tensors are shaped (..., 3, H, W). RGB is float in [0, 1]; Lab is L in [0, 100], a and b
roughly in [-128, 127]. Every step is elementwise or a 3x3 matrix, so it runs on any device.
"""

from __future__ import annotations

import functools

import torch

# skimage.color.colorconv: xyz_from_rgb (sRGB primaries) and the D65 2-degree white point.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_D65_WHITE = (0.95047, 1.0, 1.08883)
_EPSILON = 0.008856  # (6/29)^3, rounded as in skimage
_KAPPA = 7.787  # (29/6)^2 / 3, rounded as in skimage
# With the rounded constants the line kappa t + 16/116 meets the cube root 3e-7 below it at epsilon (3.5e-5 in L):
# the line's offset from the cube root's value there, so that the clamped form below is skimage's exactly.
_LINE_OFFSET = 16 / 116 - _EPSILON ** (1 / 3)


@functools.lru_cache(maxsize=32)  # made once per device and dtype: a tensor from Python data is a host-to-device copy
def _constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):  # a normal tensor even when first made under inference_mode: autograd may use it
        return torch.tensor(values, dtype=dtype, device=device)


def _matrix(m, like: torch.Tensor) -> torch.Tensor:
    return _constant(m, like.dtype, like.device)


def _apply_matrix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Multiply the channel axis (-3) of x by the 3x3 matrix m."""
    return torch.einsum("ij,...jhw->...ihw", m, x)  # m may have fewer rows than 3


def _white(like: torch.Tensor) -> torch.Tensor:
    return _matrix(_D65_WHITE, like).view(3, 1, 1)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    return torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)


def linear_to_srgb(lin: torch.Tensor) -> torch.Tensor:
    # clamp inside pow only: the negative branch never takes it, but its gradient must stay finite
    return torch.where(lin > 0.0031308, 1.055 * lin.clamp(min=0.0031308) ** (1 / 2.4) - 0.055, 12.92 * lin)


def _float_rgb(rgb: torch.Tensor) -> torch.Tensor:
    if not rgb.is_floating_point():  # a uint8 image read as [0, 255] would give silently wrong Lab
        raise TypeError(f"expected float RGB in [0, 1], got {rgb.dtype}; use uint8_to_lab for uint8 images")
    return rgb


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape (..., 3, H, W) -> Lab, as ``skimage.color.rgb2lab`` (D65, 2 deg)."""
    return _linear_to_lab(srgb_to_linear(_float_rgb(rgb)))


def _lab_f(t: torch.Tensor) -> torch.Tensor:
    """CIE f(t): t^(1/3) above epsilon, kappa t + 16/116 below, as skimage. The line is (nearly) the cube root's
    tangent at epsilon, so f(t) = max(t, eps)^(1/3) + min(kappa t + 16/116 - eps^(1/3), 0): clamps instead of a
    select, which on a CPU costs more than the cube root itself. Exact on both sides, except within 4e-8 above
    epsilon, where the line is still below the cube root (by under 3e-7)."""
    return t.clamp(min=_EPSILON).pow(1 / 3) + (_KAPPA * t + _LINE_OFFSET).clamp(max=0)


def _linear_to_lab(lin: torch.Tensor) -> torch.Tensor:
    xyz = _apply_matrix(_matrix(_XYZ_FROM_RGB, lin), lin) / _white(lin)
    f = _lab_f(xyz)
    fx, fy, fz = f.unbind(-3)
    return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), dim=-3)


def rgb_to_lightness(rgb: torch.Tensor) -> torch.Tensor:
    """L channel only, (..., 1, H, W): the network input needs no a, b at full resolution."""
    rgb = _float_rgb(rgb)
    y = _apply_matrix(_matrix(_XYZ_FROM_RGB[1:2], rgb), srgb_to_linear(rgb))  # white Y is 1
    return 116 * _lab_f(y) - 16


@functools.lru_cache(maxsize=8)  # once per device, not per batch
@torch.inference_mode(False)
def _uint8_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The sRGB linearization of the 256 levels (256,), and times each channel's weight in Y (3 * 256,)."""
    linear = srgb_to_linear(torch.arange(256, dtype=torch.float64, device=device) / 255)
    weights = torch.tensor(_XYZ_FROM_RGB[1], dtype=torch.float64, device=device)
    return linear.float(), (weights[:, None] * linear).float().reshape(-1)


def uint8_to_lightness(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (..., 3, H, W) -> L (..., 1, H, W), equal to ``rgb_to_lightness(images / 255)``.

    The sRGB linearization of the 256 levels times each channel's weight in Y is a table per channel (made
    in float64), so per pixel only three lookups, two adds and Y's cube root remain: the full-resolution
    input is the largest per-pixel cost of the training data path. (On a CPU, one lookup per channel plane
    is twice as fast as one over all channels and a sum.)
    """
    tables = _uint8_tables(images.device)[1].view(3, 256)
    lookup = lambda c: tables[c].index_select(0, images.select(-3, c).reshape(-1).int())  # noqa: E731
    y = lookup(0).add_(lookup(1)).add_(lookup(2)).view(*images.shape[:-3], 1, *images.shape[-2:])
    # 116 f(y) - 16 as in _lab_f, in place, with the cube root as exp-log (on a CPU twice as fast as pow)
    L = y.clamp(min=_EPSILON).log_().mul_(1 / 3).exp_().mul_(116).sub_(16)
    return L.add_(y.mul_(_KAPPA).add_(_LINE_OFFSET).clamp_(max=0), alpha=116)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab, shape (..., 3, H, W) -> sRGB clipped to [0, 1], as ``skimage.color.lab2rgb``."""
    L, a, b = lab.unbind(-3)
    fy = (L + 16) / 116
    # skimage clips negative z (colors beyond the gamut's blue edge) to 0 before inverting
    f = torch.stack((a / 500 + fy, fy, (fy - b / 200).clamp(min=0)), dim=-3)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16 / 116) / _KAPPA) * _white(lab)
    rgb_from_xyz = torch.linalg.inv(_matrix(_XYZ_FROM_RGB, lab).double()).to(lab.dtype)
    return linear_to_srgb(_apply_matrix(rgb_from_xyz, xyz)).clamp(0, 1)


def uint8_to_lab(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, 3, H, W) as it comes from the loader -> float32 Lab on the same device.

    As ``rgb_to_lab(images / 255)``, with the sRGB linearization of the 256 levels looked up in a table."""
    table = _uint8_tables(images.device)[0]
    return _linear_to_lab(table.index_select(0, images.to(torch.int32).reshape(-1)).view(images.shape))
