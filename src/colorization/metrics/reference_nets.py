"""The pretrained networks some columns need (VGG-16 classification, FID's Inception-v3, LPIPS's AlexNet), from
torch's hub cache; never random weights: a network that is not there is None and the reason, and its column is
skipped with that line."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from colorization.errors import ConfigError


# ---- the classifier --------------------------------------------------------------------------
def load_vgg16(weights: str | None, download: bool) -> tuple[nn.Module | None, str]:
    """torchvision's VGG-16 with ImageNet weights, or None and the reason. Never random weights.

    vgg.weights: imagenet (torchvision's cache, else a download when vgg.download), a local state dict
    file, or null (off).
    """
    from torchvision.models import VGG16_Weights, vgg16

    if not weights:
        return None, "vgg.weights is null"
    if str(weights) == "imagenet":
        url = VGG16_Weights.IMAGENET1K_V1.url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if not cached.is_file() and not download:
            return None, f"no ImageNet weights in {cached.parent} and vgg.download=false"
        try:
            state = torch.hub.load_state_dict_from_url(
                url, map_location="cpu", progress=False, check_hash=True, weights_only=True
            )
        except Exception as err:  # no network, a proxy, a partial file: say so and go on without it
            if cached.is_file():
                return None, f"the cached ImageNet weights {cached} could not be read ({type(err).__name__})"
            return None, f"no ImageNet weights in {cached.parent} and the download failed ({type(err).__name__})"
        source = f"torchvision ImageNet weights ({cached})"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"vgg.weights={weights}: no such file (or use vgg.weights=imagenet)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(f"vgg.weights={weights}: not a PyTorch state dict ({type(err).__name__})") from err
        source = str(path)
    model = vgg16(weights=None)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()
        raise ConfigError(f"vgg.weights={weights}: not a torchvision VGG-16 state dict ({first[-1].strip()})") from err
    return model.eval().requires_grad_(False), source


# ---- the perceptual metrics ------------------------------------------------------------------
def _cached(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def _fetch(url: str, what: str, key: str, download: bool) -> tuple[Path | None, str]:
    """A weight file in torch's hub cache (downloaded when ``download``), or None and the reason."""
    cached = _cached(url)
    if cached.is_file():
        return cached, str(cached)
    if not download:
        return None, f"no {what} weights in {cached.parent} and {key}.download=false"
    try:
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    except Exception as err:  # no network, a proxy: say so and go on without it
        return None, f"no {what} weights in {cached.parent} and the download failed ({type(err).__name__})"
    return cached, str(cached)


def fid_metric(weights: str | None, download: bool, feature: nn.Module | None = None):
    """A factory of torchmetrics FIDs (one per row) and its source, or None and the reason. Never random weights.

    fid.weights: inception (torch-fidelity's Inception-v3 file from torch's hub cache, $TORCH_HOME), a PATH to that
    file, or null (off). ``feature``: a feature extractor of one's own instead (Python API; images in [0, 1]).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    if feature is not None:
        return (lambda: FrechetInceptionDistance(feature=feature, normalize=True)), f"{type(feature).__name__} features"
    if not weights:
        return None, "fid.weights is null"
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    except ImportError:
        return None, "torch-fidelity is not installed"
    if str(weights) == "inception":
        path, source = _fetch(URL_INCEPTION_V3, "Inception-v3 (FID)", "fid", download)
        if path is None:
            return None, source
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"fid.weights={weights}: no such file (or use fid.weights=inception)")
        source = str(path)
    make = lambda: FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(path))  # noqa: E731
    try:
        make()
    except Exception as err:
        raise ConfigError(
            f"fid.weights={weights}: not torch-fidelity's Inception-v3 weights ({type(err).__name__})"
        ) from err
    return make, source


def lpips_metric(weights: str | None, download: bool):
    """A factory of torchmetrics LPIPS (AlexNet, the LPIPS paper's default) and its source, or None and the reason.

    lpips.weights: alexnet (torchvision's ImageNet AlexNet from torch's hub cache, $TORCH_HOME; LPIPS's own linear
    layers ship with torchmetrics) or null (off).
    """
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    from torchvision.models import AlexNet_Weights

    if not weights:
        return None, "lpips.weights is null"
    if str(weights) != "alexnet":
        raise ConfigError(f"lpips.weights={weights!r} is not one of ('alexnet', null)")
    path, source = _fetch(AlexNet_Weights.IMAGENET1K_V1.url, "AlexNet (LPIPS)", "lpips", download)
    if path is None:
        return None, source
    make = lambda: LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)  # noqa: E731
    try:
        make()
    except Exception as err:
        return None, f"the cached AlexNet weights {path} could not be read ({type(err).__name__})"
    return make, source
