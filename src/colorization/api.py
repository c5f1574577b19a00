"""The Python API: a trained colorizer as one callable object.

    >>> from colorization import Colorizer
    >>> colorizer = Colorizer.from_checkpoint("logs/train/runs/<run>/checkpoints/last.ckpt")
    >>> colorized = colorizer(Image.open("grandma.jpg"), temperature=0.38)   # a PIL image, at full resolution

Each photo is seen by the network resized to ``size`` x ``size`` (256); the predicted ab (annealed mean at T) is
upsampled to the photo's full resolution and joined with the photo's own L, as the authors' demo does (and as
``python -m colorization.colorize``, a thin command over this class).

``Colorizer`` is a ``torch.nn.Module`` with huggingface_hub's ``PyTorchModelHubMixin``: ``save_pretrained`` writes
``model.safetensors`` + ``config.json`` (architecture, bins, prior, temperature) + a model card, ``push_to_hub``
uploads that directory, ``from_pretrained`` loads one (a local directory, or a Hub id, from the local cache when
offline).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch
from huggingface_hub import PyTorchModelHubMixin
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from colorization.color import annealed_mean, join_in_rows, rgb_to_lightness
from colorization.data.datasets import load_image, to_rgb_tensor
from colorization.models.eccv16 import PORT_LAYOUT
from colorization.models.module import ColorizationModule
from colorization.serving.model_card import MODEL_CARD

ImageLike: TypeAlias = Image.Image | np.ndarray | torch.Tensor | str | os.PathLike
"""What a ``Colorizer`` takes: a PIL image, a uint8 array (H, W, 3) or (H, W), a tensor (3, H, W) or (1, H, W)
(uint8, or float in [0, 1]), or the path of an image file."""



def _project_url(name: str) -> str:
    """An address of [project.urls] in pyproject.toml (the installed package's metadata): one fact, one place."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = dict(u.split(", ", 1) for u in metadata("colorization").get_all("Project-URL") or [])
    except PackageNotFoundError:  # run from a source tree without an install
        urls = {}
    return urls.get(name, "")


PROJECT_URL = _project_url("Homepage")
PAPER_URL = _project_url("Paper")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or "auto": CUDA when available, else the CPU; otherwise the device named."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Colorizer(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="colorization",
    repo_url=PROJECT_URL,
    paper_url=PAPER_URL,
    license="bsd-3-clause",
    pipeline_tag="image-to-image",
    tags=["image-colorization", "colorful-image-colorization", "eccv16"],
    model_card_template=MODEL_CARD,
):
    """A trained colorizer: call it on images, get them back in color at full resolution.

    Build one with :meth:`from_checkpoint`, :meth:`from_authors_weights` or :meth:`from_pretrained`; the
    constructor's arguments are the ``config.json`` that ``save_pretrained`` writes.

    Args:
        arch: the network, "eccv16" or "alexnet".
        bins: the ab bin centres, (Q, 2) as nested lists (rows sorted by (a, b)).
        prior: the empirical prior over the bins, (Q,) (kept for evaluation and fine-tuning).
        loss: the training loss config (``name``: l2 | unbalanced | rebalanced, ``k``, ``sigma``, ``lam``).
        temperature: the default annealed-mean T.
        batchnorm, input_scale, width: the network's layout options (``model.*`` of the training config).
        size: the network sees each photo resized to ``size`` x ``size``.
        batch_size: photos per forward pass when called on a list.
    """

    def __init__(
        self,
        arch: str = "eccv16",
        bins: list[list[float]] | None = None,
        prior: list[float] | None = None,
        loss: dict | None = None,
        temperature: float = 0.38,
        batchnorm: str = PORT_LAYOUT["batchnorm"],
        input_scale: float = PORT_LAYOUT["input_scale"],
        width: float = 1.0,
        size: int = 256,
        batch_size: int = 8,
    ):
        super().__init__()
        if bins is None:
            raise ValueError(
                "Colorizer needs bins: build it with from_checkpoint, from_authors_weights or from_pretrained"
            )
        self.size, self.batch_size = int(size), int(batch_size)
        # named `model`, not `module`: the hub mixin would save a `module` attribute's state dict without its prefix
        self.model = ColorizationModule(
            arch=arch,
            loss=loss,
            temperature=temperature,
            batchnorm=batchnorm,
            input_scale=input_scale,
            width=width,
            bins=torch.tensor(bins, dtype=torch.float32),
            prior=None if prior is None else torch.tensor(prior, dtype=torch.float32),
        ).eval()
        self.resize = v2.Resize((self.size, self.size), antialias=True)

    # ---- building one -------------------------------------------------------------------------
    @classmethod
    def from_module(
        cls, module: ColorizationModule, device: str | torch.device | None = "auto", **options: Any
    ) -> Colorizer:
        """Wrap a ColorizationModule (its weights, bins and prior are copied). ``options``: size, batch_size."""
        h = module.hparams
        colorizer = cls(
            arch=h.arch,
            bins=module.bins.cpu().tolist(),
            prior=module.prior.cpu().tolist(),
            loss=dict(h.loss),
            temperature=float(h.temperature),
            batchnorm=h.get("batchnorm", PORT_LAYOUT["batchnorm"]),
            input_scale=float(h.get("input_scale", PORT_LAYOUT["input_scale"])),
            width=float(h.get("width", 1.0)),
            **options,
        )
        colorizer.model.load_state_dict(module.state_dict())
        return colorizer.to(pick_device(device)).eval()

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device | None = "auto", **options
    ) -> Colorizer:
        """A colorizer from a ``colorization.train`` checkpoint (``.ckpt``)."""
        from colorization.models.pretrained import load_module

        return cls.from_module(load_module(path), device, **options)

    @classmethod
    def from_authors_weights(
        cls,
        path: str | os.PathLike | None = None,
        device: str | torch.device | None = "auto",
        download: bool = True,
        url: str | None = None,
        hash_prefix: str | None = None,
        download_reference: bool | None = None,
        **options,
    ) -> Colorizer:
        """A colorizer from the authors' released ECCV16 weights: ``path`` to their file
        (``colorization_release_v2-9b330a0b.pth``), or none to fetch it once from ``url`` (their public address,
        ``models.authors.AUTHORS_URL``) into torch hub's cache, checked against ``hash_prefix`` (default: the hex
        digits at the end of its name). ``download``: fetch the file when it is not cached (offline, the error says
        where to put it); ``download_reference`` (default: ``download``): fetch ``pts_in_hull.npy`` to check the
        file's bins when it is not found locally (without it, a warning says the check was not made)."""
        from colorization.models.authors import AUTHORS_URL, fetch_authors_weights, load_authors_weights

        if path is None:
            path = fetch_authors_weights(url or AUTHORS_URL, hash_prefix, download)
        reference = download if download_reference is None else download_reference
        return cls.from_module(load_authors_weights(path, download=reference, key="path"), device, **options)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *, device: str | torch.device | None = "auto", **kwargs
    ) -> Colorizer:
        """A colorizer from a directory written by ``python -m colorization.export`` (``save_pretrained``), or from
        a Hugging Face Hub id (downloaded once, then read from the local cache; offline, ``HF_HUB_OFFLINE=1`` or
        ``local_files_only=True`` reads the cache only). ``kwargs``: huggingface_hub's (revision, cache_dir, token, ...)
        or the constructor's, overriding config.json (size, batch_size)."""
        from safetensors import SafetensorError

        from colorization.checkpoints import check_finite
        from colorization.errors import ConfigError

        kwargs.setdefault("strict", True)  # every tensor must be there (the mixin's default would ignore a mismatch)
        what = f"from_pretrained({str(pretrained_model_name_or_path)!r})"
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the mixin prints "Loading weights from local directory"
                colorizer = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except ConfigError as err:  # its config's settings were refused
            raise ConfigError(f"{what}: {err}") from err
        except (SafetensorError, RuntimeError, TypeError, KeyError, json.JSONDecodeError) as err:
            reason = " ".join(str(err).split())[:300] or type(err).__name__
            raise ConfigError(
                f"{what}: not a readable exported model (truncated, mis-shaped or foreign: {reason})"
            ) from err
        return check_finite(colorizer, what).to(pick_device(device)).eval()

    def generate_model_card(self, *args, **kwargs):
        """The Hub model card: the mixin's template with the network's description (``export`` adds the rest)."""
        h = self.model.hparams
        defaults = {
            "arch": h.arch,
            "batchnorm": h.batchnorm,
            "input_scale": f"{h.input_scale:g}",
            "width": f"{h.width:g}",
            "loss": h.loss["name"],
            "num_bins": len(self.model.bins),
            "temperature": f"{h.temperature:g}",
            "parameters": f"{sum(p.numel() for p in self.model.net.parameters()) / 1e6:.1f} M",
            "source": "",
            "training": "not recorded",
            "limitations": "Not recorded at export.",
            "training_config": "",
        }
        options = {**defaults, **kwargs}
        results = options.pop("eval_results", None)
        card = super().generate_model_card(*args, **options)
        if results:  # the Hub's model-index (written from card.data when the card is saved) names the model
            card.data.model_name = options.get("model_name") or "colorization"
            card.data.eval_results = results
        return card

    # ---- using it -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.bins.device

    @property
    def temperature(self) -> float:
        """The default annealed-mean T (the training config's)."""
        return float(self.model.hparams.temperature)

    @property
    def classification(self) -> bool:
        """True for the classification losses (a distribution over bins, so T applies); False for l2 regression."""
        return self.model.criterion.classification

    @torch.no_grad()
    def predict_ab(
        self, images: list[torch.Tensor], temperatures: list[float], size: int | None = None
    ) -> list[torch.Tensor]:
        """RGB tensors (3, H, W) (uint8, or float in [0, 1]; sizes may differ) -> for each T, ab (B, 2, h, w) at the
        network's output resolution, from one forward pass: the annealed mean at T, or the mode (the most likely
        bin) for T = 0. An l2 model regresses ab: the same for every T. ``size``: the network sees the images at
        ``size`` x ``size`` instead of the colorizer's own size."""
        resize = self.resize if size is None else v2.Resize((size, size), antialias=True)
        small = torch.stack([resize(image.to(self.device)) for image in images])
        L_small = rgb_to_lightness(as_float(small))
        if not self.classification:
            return [self.model.predict_ab(L_small)] * len(temperatures)
        logits = self.model(L_small)
        return [annealed_mean(logits, self.model.bins, t) for t in temperatures]

    @staticmethod
    def join(image: torch.Tensor, ab: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """An RGB photo (3, H, W) and predicted ab (1, 2, h, w) -> the photo's own L with the ab upsampled to H x W:
        RGB (3, H, W) in [0, 1] as ``dtype`` (uint8: 0-255), made a few rows at a time (bounded memory)."""
        return join_in_rows(image, ab, dtype)

    def colorize_batch(
        self, images: list[torch.Tensor], temperature: float | None = None, dtypes: list[torch.dtype] | None = None
    ) -> list[torch.Tensor]:
        """RGB tensors (3, H, W) (uint8, or float in [0, 1]; sizes may differ) -> colorized RGB (3, H, W) in [0, 1]
        on ``self.device`` (float, or each of ``dtypes``: uint8 for 0-255), one forward pass for all of them."""
        t = self.temperature if temperature is None else float(temperature)
        if not t >= 0:  # NaN included
            raise ValueError(f"temperature={temperature} must be >= 0 (0: the mode, the most likely bin)")
        (ab,) = self.predict_ab(images, [t])
        dtypes = dtypes or [torch.float32] * len(images)
        return [self.join(image, ab[k : k + 1], dtypes[k]) for k, image in enumerate(images)]

    def forward(
        self,
        images: ImageLike | list[ImageLike],
        temperature: float | None = None,
        device: str | torch.device | None = None,
    ) -> Any:
        """Colorize one image or a list of them, at full resolution.

        Args:
            images: a PIL image, a uint8 numpy array (H, W, 3) or (H, W), a tensor (3, H, W) or (1, H, W) (uint8 or
                float in [0, 1]), a path, or a list of them.
            temperature: the annealed-mean T (default: the model's, usually 0.38); lower is more colorful; 0 is the
                mode (each pixel's most likely bin), as the command line's temperature strip.
            device: run on this device (moves the model there); default: where the model is.

        Returns:
            For a PIL image or a path, an RGB PIL image; for an array or a tensor, the same type, dtype and layout
            (channels-last for arrays, channels-first for tensors; a one-channel input comes back with 3 channels);
            for a list, a list.
        """
        if device is not None:
            self.to(pick_device(device))
        single = not isinstance(images, list | tuple)
        items = [images] if single else list(images)
        decoded = [to_tensor(item) for item in items]
        results = []
        for start in range(0, len(decoded), self.batch_size):
            chunk = decoded[start : start + self.batch_size]
            dtypes = [torch.uint8 if wants_uint8(kind) else torch.float32 for _, kind in chunk]
            results += self.colorize_batch([tensor for tensor, _ in chunk], temperature, dtypes)
        out = [from_tensor(rgb, kind) for rgb, (_, kind) in zip(results, decoded, strict=True)]
        return out[0] if single else out


def as_float(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [0, 1]; float stays."""
    return rgb.float() / 255 if rgb.dtype == torch.uint8 else rgb.float()


def to_tensor(image: ImageLike) -> tuple[torch.Tensor, tuple]:
    """Any accepted image -> RGB (3, H, W) (uint8, or float in [0, 1]) and how to give the result back."""
    if isinstance(image, str | os.PathLike):
        return load_image(Path(image)), ("pil",)
    if isinstance(image, Image.Image):
        return to_rgb_tensor(image), ("pil",)
    if isinstance(image, np.ndarray):
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3)):
            rgb = torch.from_numpy(np.array(image)).reshape(*image.shape[:2], -1).permute(2, 0, 1)
            return _checked(rgb.expand(3, -1, -1), "array"), ("numpy", image.dtype)
        raise ValueError(f"an image array must be (H, W, 3) or (H, W), got {image.shape}")
    if isinstance(image, torch.Tensor):
        if image.ndim == 3 and image.shape[0] in (1, 3):
            return _checked(image.expand(3, -1, -1), "tensor"), ("torch", image.dtype, image.device)
        raise ValueError(f"an image tensor must be (3, H, W) or (1, H, W), got {tuple(image.shape)}")
    raise TypeError(f"cannot colorize a {type(image).__name__}: pass a PIL image, an array, a tensor or a path")


def _checked(rgb: torch.Tensor, what: str) -> torch.Tensor:
    if rgb.dtype == torch.uint8:
        return rgb
    if not rgb.dtype.is_floating_point:
        raise ValueError(f"an image {what} must be uint8 or float in [0, 1], got {rgb.dtype}")
    if rgb.numel() and (rgb.min() < 0 or rgb.max() > 1):
        raise ValueError(f"a float image {what} must hold values in [0, 1] (got {rgb.min():.3g} .. {rgb.max():.3g})")
    return rgb


def shrink(image: torch.Tensor, side: int) -> torch.Tensor:
    """An RGB image (3, H, W) (uint8 or float) scaled down (antialiased, in its own dtype: no float copy of a huge
    photo) so that its longer side is at most ``side``."""
    height, width = image.shape[-2:]
    scale = min(1.0, side / max(height, width))
    if scale == 1:
        return image
    return v2.functional.resize(image, [max(1, round(height * scale)), max(1, round(width * scale))], antialias=True)


def wants_uint8(kind: tuple) -> bool:
    """Whether the result goes back as 0-255 (a PIL image, a uint8 array or tensor): made as uint8 directly."""
    if kind[0] == "pil":
        return True
    return np.dtype(kind[1]) == np.uint8 if kind[0] == "numpy" else kind[1] == torch.uint8


def to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """RGB float in [0, 1] -> uint8, rounded; uint8 stays."""
    return rgb if rgb.dtype == torch.uint8 else (rgb.clamp(0, 1) * 255).round().to(torch.uint8)


def from_tensor(rgb: torch.Tensor, kind: tuple) -> Any:
    """A colorized RGB float (3, H, W) back in the input's kind (see ``to_tensor``)."""
    if kind[0] == "pil":
        return Image.fromarray(to_uint8(rgb).permute(1, 2, 0).cpu().numpy())
    if kind[0] == "numpy":
        dtype = np.dtype(kind[1])
        hwc = rgb.permute(1, 2, 0).cpu()
        return (to_uint8(hwc).numpy() if dtype == np.uint8 else as_float(hwc).numpy()).astype(dtype, copy=False)
    dtype, device = kind[1], kind[2]
    return (to_uint8(rgb) if dtype == torch.uint8 else as_float(rgb).to(dtype)).to(device)
