"""Skipping a non-finite optimizer step on the device, as ``torch.amp.GradScaler`` does: no host round trip.

A NaN or inf loss gives non-finite gradients (under DDP on every rank: the all-reduce spreads them), so one flag
over the gradients decides the step. Fused optimizers (``model.optimizer.fused=true``, the configs' default) read
``optimizer.found_inf`` and skip the whole update in their kernel, their step count included; other optimizers
need the flag on the host: one sync per step, where their gradients are dropped.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import torch


@functools.lru_cache(maxsize=8)
@torch.inference_mode(False)
def _one(device: torch.device) -> torch.Tensor:
    return torch.ones((), device=device)


def nonfinite_gradients(params) -> torch.Tensor | None:
    """A 0-dim float tensor on the gradients' device: 1 if any gradient holds an inf or a NaN, else 0 (no sync).
    None when no parameter has a gradient."""
    groups: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for p in params:
        if p.grad is not None:
            groups[(p.grad.device, p.grad.dtype)].append(p.grad)
    if not groups:
        return None
    device = next(iter(groups))[0]
    found = torch.zeros((), device=device)
    for grads in groups.values():  # GradScaler's kernel, with a scale of 1: it checks, and multiplies by 1
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, _one(device))
    return found


def skip_if_nonfinite(optimizer: torch.optim.Optimizer, found: torch.Tensor) -> None:
    """Make ``optimizer.step()`` a no-op when ``found`` is 1: on the device for a fused optimizer, else by
    dropping the gradients (the one host sync)."""
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = found
    elif found.item():
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
