"""Start a network from another run's weights, all but the head (the paper's "L2, ft": the L2 network
initialized from the classification network, then fine-tuned). ``model.init_from=CKPT``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from colorization.errors import ConfigError


def head_name(net: nn.Module) -> str:
    """The network's last module holding parameters: the output head (for ECCV16 ``model8.6``, the 1x1 conv)."""
    names = [name for name, module in net.named_modules() if any(True for _ in module.parameters(recurse=False))]
    return names[-1]


def load_body_weights(module: nn.Module, ckpt_path: str | Path, prefix: str = "net.") -> list[str]:
    """Copy every ``module.net`` tensor but the head's from a Lightning checkpoint; returns the keys loaded.

    The body must match key for key and shape for shape (same architecture), otherwise a ConfigError
    names ``model.init_from``. The head, the bins and the prior stay those of the new run.
    """
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.init_from={ckpt_path}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    source = {k[len(prefix) :]: v for k, v in state.get("state_dict", state).items() if k.startswith(prefix)}
    net: nn.Module = module.net
    head = head_name(net) + "."
    body = {k: v for k, v in net.state_dict().items() if not k.startswith(head)}
    missing = [k for k in body if k not in source]
    mismatched = [k for k in body if k in source and source[k].shape != body[k].shape]
    if missing or mismatched:
        raise ConfigError(
            f"model.init_from={ckpt_path}: not the same network body "
            f"({len(missing)} missing, {len(mismatched)} of another shape, e.g. {(missing + mismatched)[0]})"
        )
    net.load_state_dict({k: source[k] for k in body}, strict=False)
    return [prefix + k for k in body]
