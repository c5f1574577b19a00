"""Start a network from other weights (``model.init_from=PATH``), before training:

- one of our Lightning checkpoints: every tensor but the head's (the paper's "L2, ft": the L2 network
  initialized from the classification network, then fine-tuned);
- the authors' released ECCV16 state dict (``colorization_release_v2-9b330a0b.pth``, recognized by its
  ``model_out.weight``): fine-tuning their model. Their file has the layout of their PyTorch port
  (``model=eccv16_port``: BatchNorm with gamma and beta, input (L - 50) / 100) and their 313 bins (held by
  ``model_out.weight``); the run takes both (``colorization.train`` checks the config against them). For the
  classification losses every layer is loaded, the 313-way head included; for l2 the body only.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from colorization.checkpoints import load_checkpoint
from colorization.errors import ConfigError


def head_name(net: nn.Module) -> str:
    """The network's last module holding parameters: the output head (for ECCV16 ``model8.6``, the 1x1 conv)."""
    names = [name for name, module in net.named_modules() if any(True for _ in module.parameters(recurse=False))]
    return names[-1]


def read_init_state(path: str | Path) -> dict:
    """The tensors of ``model.init_from`` (loaded without running code), or a one-line ConfigError."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"model.init_from={path}: no such file")
    state = load_checkpoint(p, "model.init_from")
    if not isinstance(state, dict):
        raise ConfigError(f"model.init_from={path}: not a checkpoint or a state dict ({type(state).__name__})")
    return state


def load_body_weights(
    module: nn.Module, ckpt_path: str | Path, prefix: str = "net.", state: dict | None = None
) -> list[str]:
    """Copy every ``module.net`` tensor but the head's from a Lightning checkpoint; returns the keys loaded.

    The body must match key for key and shape for shape (same architecture), otherwise a ConfigError
    names ``model.init_from``. The head, the bins and the prior stay those of the new run. ``state``: the file's
    tensors when already read.
    """
    source = network_tensors(read_init_state(ckpt_path) if state is None else state, ckpt_path, prefix)
    return [prefix + k for k in copy_tensors(module.net, source, ckpt_path, with_head=False)]


def network_tensors(state: dict, path: str | Path, prefix: str = "net.") -> dict:
    """The network's tensors in one of our checkpoints (``prefix`` removed), or a one-line ConfigError."""
    source = {k[len(prefix) :]: v for k, v in state.get("state_dict", state).items() if k.startswith(prefix)}
    if not source:
        raise ConfigError(
            f"model.init_from={path}: neither a colorization.train checkpoint (no '{prefix}*' tensors) nor "
            "the authors' colorization_release_v2 file"
        )
    return source


def copy_tensors(net: nn.Module, source: dict, path, with_head: bool) -> list[str]:
    head = head_name(net) + "."
    # BatchNorm step counters are optional (older torch files lack them; affine BatchNorm does not use them)
    wanted = {
        k: v
        for k, v in net.state_dict().items()
        if (with_head or not k.startswith(head)) and not (k.endswith("num_batches_tracked") and k not in source)
    }
    missing = [k for k in wanted if k not in source]
    mismatched = [k for k in wanted if k in source and source[k].shape != wanted[k].shape]
    if missing or mismatched:
        raise ConfigError(
            f"model.init_from={path}: not the same network "
            f"({len(missing)} missing, {len(mismatched)} of another shape, e.g. {(missing + mismatched)[0]})"
        )
    net.load_state_dict({k: source[k] for k in wanted}, strict=False)
    return list(wanted)
