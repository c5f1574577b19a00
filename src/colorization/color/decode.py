"""From predicted bin distributions back to images: the annealed mean, and joining ab with L."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from colorization.color.lab import lab_to_rgb


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
