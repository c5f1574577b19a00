"""From predicted bin distributions back to images: the annealed mean, and joining ab with L."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from colorization.color.lab import lab_to_rgb, rgb_to_lightness

# The paper's temperature strip (Fig. 3): from the mean (T = 1) to the mode (T = 0); 0.38 is its choice.
STRIP_TEMPERATURES = (1.0, 0.77, 0.58, 0.38, 0.29, 0.14, 0.0)


def annealed_mean(logits: torch.Tensor, bins: torch.Tensor, T: float = 0.38) -> torch.Tensor:
    """(B, Q, h, w) logits -> (B, 2, h, w) ab: E[bins] under f_T(z) = softmax(logits / T).

    T = 1 is the plain mean (desaturated), T -> 0 the mode, which T = 0 gives exactly (the most likely bin's
    centre); the paper uses T = 0.38.
    """
    if T < 0:
        raise ValueError(f"temperature T={T} must be >= 0 (0: the mode)")
    bins = bins.float().to(logits.device)
    if T == 0:
        return bins[logits.argmax(1)].permute(0, 3, 1, 2)
    probs = torch.softmax(logits.float() / T, dim=1)
    return torch.einsum("bqhw,qc->bchw", probs, bins)


def lightness_and_ab_to_rgb(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Join full-resolution L (B, 1, H, W) with ab at any resolution (bilinearly upsampled) -> RGB."""
    if ab.shape[-2:] != L.shape[-2:]:
        ab = F.interpolate(ab.float(), size=L.shape[-2:], mode="bilinear", align_corners=False)
    return lab_to_rgb(torch.cat((L.float(), ab), dim=1))


def upsampled_rows(ab: torch.Tensor, height: int, width: int, r0: int, r1: int) -> torch.Tensor:
    """Rows r0:r1 of ``ab`` (B, 2, h, w) bilinearly upsampled to height x width (align_corners=False, as
    F.interpolate), without making the other rows: along the width with F.interpolate, then the two source rows of
    each output row mixed by hand (bilinear is separable)."""
    h = ab.shape[-2]
    wide = F.interpolate(ab.float(), size=(h, width), mode="bilinear", align_corners=False)  # h rows only: small
    y = ((torch.arange(r0, r1, device=ab.device, dtype=torch.float64) + 0.5) * (h / height) - 0.5).clamp(min=0)
    y0 = y.floor().long().clamp(max=h - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    t = (y - y0).float()[:, None]
    return wide[..., y0, :] * (1 - t) + wide[..., y1, :] * t


def join_in_rows(
    rgb: torch.Tensor, ab: torch.Tensor, dtype: torch.dtype = torch.float32, rows: int = 256
) -> torch.Tensor:
    """A photo (3, H, W) (uint8, or float in [0, 1]) and ab (1, 2, h, w) -> the photo's own L with the ab upsampled
    to H x W, as RGB (3, H, W) of ``dtype`` (uint8: rounded) in [0, 1], on ab's device; made ``rows`` rows at a time,
    so the float work stays a few MB whatever the photo's size (a 9400 x 9400 photo in one piece: about 10 GB)."""
    height, width = rgb.shape[-2:]
    out = torch.empty((height, width, 3), dtype=dtype, device=ab.device)  # HWC: the rows of an image file
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        part = rgb[:, r0:r1].to(ab.device)
        part = part.float() / 255 if part.dtype == torch.uint8 else part.float()
        L = rgb_to_lightness(part[None])
        joined = lab_to_rgb(torch.cat((L, upsampled_rows(ab, height, width, r0, r1)), dim=1))[0].clamp(0, 1)
        joined = (joined * 255).round() if dtype == torch.uint8 else joined
        out[r0:r1] = joined.to(dtype).permute(1, 2, 0)
    return out.permute(2, 0, 1)
