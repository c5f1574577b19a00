"""The paper's color math as pure, batched torch functions (CPU or GPU, no per-pixel Python)."""

from colorization.color.bins import ab_bins
from colorization.color.decode import annealed_mean, join_in_rows, lightness_and_ab_to_rgb
from colorization.color.encode import SoftEncoder, gray_mask, nearest_bins, soft_encode, soft_encode_sparse
from colorization.color.lab import lab_to_rgb, rgb_to_lab, rgb_to_lightness, uint8_to_lab, uint8_to_lightness
from colorization.color.prior import (
    bin_counts,
    estimate_prior,
    image_bin_counts,
    rebalance_weights,
    smooth_prior,
    weight_uncertainty,
)
from colorization.color.reference import load_reference, reference_path

__all__ = [
    "ab_bins",
    "annealed_mean",
    "bin_counts",
    "estimate_prior",
    "image_bin_counts",
    "gray_mask",
    "lab_to_rgb",
    "join_in_rows",
    "lightness_and_ab_to_rgb",
    "load_reference",
    "nearest_bins",
    "rebalance_weights",
    "reference_path",
    "rgb_to_lab",
    "rgb_to_lightness",
    "smooth_prior",
    "soft_encode",
    "soft_encode_sparse",
    "SoftEncoder",
    "uint8_to_lab",
    "uint8_to_lightness",
    "weight_uncertainty",
]
