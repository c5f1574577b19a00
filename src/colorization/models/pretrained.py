"""Rebuild a colorizer for inference: from a training checkpoint, or from the authors' released weights.

The authors' PyTorch port (``colorization_release_v2-9b330a0b.pth``) names its parts as our ECCV16
(``model1`` ... ``model8``; ``model8.6`` the 313-way 1x1 conv) plus ``model_out.weight`` (2, 313, 1, 1),
a fixed 1x1 conv applied to the softmax whose output, times 110, is ab: it holds the bin centres / 110.
We read the bins from it, check them against the official ``pts_in_hull.npy`` when that file can be
found, and decode with our annealed mean. Their port decodes with a plain softmax (T = 1).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from colorization.checkpoints import load_checkpoint
from colorization.color import ab_bins
from colorization.color.bins import GRID_STEP
from colorization.color.reference import ReferenceError
from colorization.color.targets import AB_SCALE
from colorization.errors import ConfigError
from colorization.models.eccv16 import ECCV16
from colorization.models.init_from import AUTHORS_HEAD
from colorization.models.module import ColorizationModule

log = logging.getLogger(__name__)

AUTHORS_NUM_BINS = 313
# The authors' released ECCV16 file, where their own package (colorizers.eccv16(pretrained=True)) fetches it; torch
# hub's convention: the name ends in the first 8 hex digits of the file's sha256, checked on download.
AUTHORS_URL = "https://colorizers.s3.us-east-2.amazonaws.com/colorization_release_v2-9b330a0b.pth"


def fetch_authors_weights(url: str = AUTHORS_URL, hash_prefix: str | None = None, download: bool = True) -> Path:
    """The authors' weights file in torch hub's cache (``$TORCH_HOME/hub/checkpoints``), downloaded once from ``url``
    and checked against ``hash_prefix`` (default: the hex digits at the end of the file's name, as torch.hub does);
    a one-line ConfigError offline or on a wrong hash, saying where to put the file."""
    import hashlib
    import re
    from urllib.error import URLError
    from urllib.parse import urlparse

    name = Path(urlparse(url).path).name
    found = re.search(r"-([a-f0-9]+)\.", name)
    prefix = hash_prefix or (found.group(1) if found else None)
    if not prefix:
        raise ConfigError(f"{url}: no sha256 prefix in its name: pass hash_prefix")
    target = Path(torch.hub.get_dir()) / "checkpoints" / name
    where = f"download {url} (its sha256 starts with {prefix}) to {target}, or pass the file's path"
    if target.is_file():
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        if not digest.startswith(prefix):
            raise ConfigError(
                f"{target}: its sha256 {digest[:12]}... does not start with {prefix}: delete it and {where}"
            )
        return target
    if not download:
        raise ConfigError(f"the authors' weights are not in torch hub's cache: {where}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=prefix, progress=True)
    except RuntimeError as err:  # torch.hub's hash check (the partial file is removed)
        raise ConfigError(f"{url}: refused: {_one_line(err)}") from err
    except (URLError, OSError, ValueError) as err:
        raise ConfigError(f"could not download {url} ({_one_line(err)}): {where}") from err
    return target


def check_finite(module: torch.nn.Module, what: str) -> torch.nn.Module:
    """``module``, or a one-line ConfigError when a weight or buffer holds NaN or infinity (a diverged or damaged
    file would colorize every photo black)."""
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ConfigError(f"{what}: refused: its weights hold NaN or infinite values ({name})")
    return module


def load_module(path: str | Path, key: str = "ckpt_path") -> ColorizationModule:
    """A ColorizationModule from one of our Lightning checkpoints (bins and prior included), on the CPU.

    Tensors and plain containers only (weights_only=True): a file that would run code is refused in one line.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}={path}: no such file")
    load_checkpoint(p, key, mmap=True)
    try:
        module = ColorizationModule.load_from_checkpoint(p, map_location="cpu")
    except ConfigError as err:  # its settings were refused: the message says which
        raise ConfigError(f"{key}={path}: {err}") from err
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(f"{key}={path}: not a colorization.train checkpoint ({_one_line(err)})") from err
    return check_finite(module, f"{key}={path}")


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]


def check_authors_state_dict(state: dict, key: str) -> None:
    """The exact keys and shapes of the authors' ECCV16 (BatchNorm step counters optional), or ConfigError."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{key}: not a state dict of tensors (expected the authors' colorization_release_v2 file)")
    with torch.device("meta"):  # shapes only: no memory, no initialization
        expected = {k: v.shape for k, v in ECCV16(AUTHORS_NUM_BINS).state_dict().items()}
    expected[AUTHORS_HEAD] = torch.Size((2, AUTHORS_NUM_BINS, 1, 1))
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)}, expected {tuple(s)}"
        for k, s in expected.items()
        if state.get(k) is not None and state[k].shape != s
    ]
    problems = [("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)]
    if detail := "; ".join(f"{what}: {', '.join(items[:3])}" for what, items in problems if items):
        raise ConfigError(f"{key}: not the authors' ECCV16 weights ({detail})")


def authors_bins(head: torch.Tensor, key: str = "model.weights", download: bool = True) -> torch.Tensor:
    """The bin centres held by ``model_out.weight`` (2, Q, 1, 1), checked: (Q, 2) float32 sorted by (a, b)."""
    bins = AB_SCALE * head[:, :, 0, 0].T.double()
    grid = torch.round(bins / GRID_STEP) * GRID_STEP
    if (bins - grid).abs().max() > 0.01:
        raise ConfigError(f"{key}: model_out.weight x {AB_SCALE:g} is not on the ab grid of step {GRID_STEP:g}")
    order = torch.argsort(grid[:, 0] * 1000 + grid[:, 1])
    if len(torch.unique(grid, dim=0)) != len(grid) or not torch.equal(order, torch.arange(len(grid))):
        raise ConfigError(f"{key}: the bins in model_out.weight are not distinct and sorted by (a, b)")
    try:
        official = ab_bins("official", download=download)
    except ReferenceError as err:
        log.warning("could not check the bins of %s against pts_in_hull.npy (%s)", key, err)
    else:
        if not torch.equal(grid.float(), official):
            raise ConfigError(f"{key}: the bins in model_out.weight are not the authors' 313 (pts_in_hull.npy)")
    return grid.float()


def load_authors_weights(
    path: str | Path,
    prior: torch.Tensor | None = None,
    temperature: float = 0.38,
    download: bool = True,
    key: str = "model.weights",
) -> ColorizationModule:
    """A ColorizationModule holding the authors' released ECCV16 weights and their 313 bins.

    ``prior`` (313,) is only needed for the rebalanced AuC; without it the module carries a uniform one.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}={path}: no such file")
    state = load_checkpoint(p, key)  # tensors and plain containers only; one line naming the key otherwise
    check_authors_state_dict(state, f"{key}={path}")
    bins = authors_bins(state.pop(AUTHORS_HEAD), f"{key}={path}", download)
    if prior is not None and len(prior) != len(bins):
        raise ConfigError(f"the prior has {len(prior)} bins but {key}={path} has {len(bins)}")
    # the authors' released model is the full method: rebalanced, k = 10 (only inference uses it here)
    loss = {"name": "rebalanced", "k": 10, "sigma": 5.0, "lam": 0.5}
    module = ColorizationModule(arch="eccv16", loss=loss, temperature=temperature, bins=bins, prior=prior)
    result = module.net.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    return check_finite(module, f"{key}={path}")


def load_model(
    ckpt_path: str | None = None,
    weights: str | None = None,
    prior: torch.Tensor | None = None,
    download: bool = True,
) -> ColorizationModule:
    """The model an entry point asked for: ``ckpt_path`` (ours) or ``model.weights`` (the authors': a path, or
    ``authors`` for their released file, fetched once), in eval mode."""
    if weights == "authors":
        weights = str(fetch_authors_weights(download=download))
    if ckpt_path and weights:
        raise ConfigError("pass ckpt_path=CKPT or model.weights=PATH, not both")
    if not ckpt_path and not weights:
        raise ConfigError(
            "no model: pass ckpt_path=CKPT (a training checkpoint) or model.weights=PATH (the authors' weights)"
        )
    module = load_module(ckpt_path) if ckpt_path else load_authors_weights(weights, prior, download=download)
    return module.eval()
