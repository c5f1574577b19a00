"""The authors' released ECCV16 (``colorization_release_v2-9b330a0b.pth``): fetching, checking, loading, adopting.

Their PyTorch port names its parts as our ECCV16 (``model1`` ... ``model8``; ``model8.6`` the 313-way 1x1 conv)
plus ``model_out.weight`` (2, 313, 1, 1), a fixed 1x1 conv applied to the softmax whose output, times 110, is ab:
it holds the bin centres / 110. Their layout is ``model=eccv16_port``'s (``PORT_LAYOUT``: BatchNorm with gamma
and beta, input (L - 50) / 100). We read the bins from their head, check them against the official
``pts_in_hull.npy`` when that file can be found, and decode with our annealed mean (their port: T = 1).
Inference loads every tensor; training from their file (``model.init_from``) adopts their layout and bins.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from colorization.checkpoints import check_finite, load_checkpoint, one_line
from colorization.color import ab_bins
from colorization.color.bins import GRID_STEP, resolve_bins
from colorization.color.reference import ReferenceError
from colorization.color.targets import AB_SCALE
from colorization.errors import ConfigError
from colorization.models.eccv16 import ECCV16, PORT_LAYOUT
from colorization.models.init_from import copy_tensors
from colorization.models.module import ColorizationModule

log = logging.getLogger(__name__)

AUTHORS_NUM_BINS = 313
AUTHORS_HEAD = "model_out.weight"  # the authors' fixed Q -> 2 conv holding the bins / 110
AUTHORS_LAYOUT = {"arch": "eccv16", "width": 1.0, **PORT_LAYOUT}  # model=eccv16_port
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
        raise ConfigError(f"{url}: refused: {one_line(err)}") from err
    except (URLError, OSError, ValueError) as err:
        raise ConfigError(f"could not download {url} ({one_line(err)}): {where}") from err
    return target


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


def is_authors_state(state: dict) -> bool:
    """The authors' released file (their PyTorch port's state dict) rather than one of our checkpoints."""
    return "state_dict" not in state and AUTHORS_HEAD in state


def load_authors_weights_into(module: nn.Module, state: dict, path: str | Path) -> list[str]:
    """The authors' ECCV16 tensors into ``module.net`` (same layout: ``model=eccv16_port``): all layers for the
    classification losses (their 313-way head, with the run's bins equal to theirs), the body only for l2.
    Returns the keys loaded (``net.``-prefixed)."""
    source = {k: v for k, v in state.items() if k != AUTHORS_HEAD}
    with_head = module.criterion.classification
    return ["net." + k for k in copy_tensors(module.net, source, path, with_head=with_head)]


def set_on_command_line(key: str) -> bool:
    """Whether this run's command line set ``key`` (``model.batchnorm=...``) or chose its config group (``model=...``).
    False outside a Hydra app (a config composed in Python)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    names = [o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task]
    return any(key == name or key.startswith(name + ".") for name in names)


def adopt_authors_weights(cfg: DictConfig, state: dict) -> torch.Tensor:
    """``model.init_from`` is the authors' released file: the run takes its layout (``model=eccv16_port``'s) and
    its 313 bins, which it returns. A value the command line set that disagrees is a one-line ConfigError."""
    key = f"model.init_from={cfg.model.init_from}"
    check_authors_state_dict(state, key)
    for name, value in AUTHORS_LAYOUT.items():
        current = cfg.model.get(name)
        if current == value or (isinstance(value, float) and current is not None and float(current) == value):
            continue
        if name in ("arch", "width") or set_on_command_line(f"model.{name}"):  # arch, width: other shapes
            raise ConfigError(
                f"{key} is the authors' ECCV16 in their port's layout: model.{name}={current} disagrees "
                f"(it needs {value}; use model=eccv16_port)"
            )
        log.info(
            "model.init_from: the authors' file sets model.%s=%s (was %s), as model=eccv16_port", name, value, current
        )
        cfg.model[name] = value
    bins = authors_bins(state[AUTHORS_HEAD], key, download=cfg.color.download)
    if cfg.color.bins != "srgb" or set_on_command_line("color.bins"):
        if not torch.equal(resolve_bins(cfg), bins):
            raise ConfigError(
                f"color.bins={cfg.color.bins} disagrees with the 313 bins of {key} (their head is kept): "
                "use color.bins=official or leave it unset"
            )
    else:
        log.info("model.init_from: the authors' 313 bins (color.bins=srgb, the default, is not used)")
    return bins
