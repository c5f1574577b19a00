"""Every process's global random states in the checkpoint, restored when a resumed run starts training.

Lightning checkpoints none of them, and only rank 0 writes the file, so each rank's states are gathered into it and
each rank takes its own back. This project's training steps draw nothing from them (a crop comes from its item's own
seed, ``data.crops``); a dropout layer, a user's callback or an augmentation on the device would.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states

from colorization.data.loaders import _gather, _own


def _plain(states: dict) -> dict:
    """Tensors, lists and ints only, so the checkpoint still loads with weights_only=True (NumPy's key is an array)."""
    name, key, pos, has_gauss, gauss = states["numpy"]
    return {**states, "numpy": [name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss]}


def _numpy(states: dict) -> dict:
    name, key, pos, has_gauss, gauss = states["numpy"]
    return {**states, "numpy": (name, key.numpy().astype(np.uint32), pos, has_gauss, gauss)}


class RandomStates(L.Callback):
    def __init__(self):
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        return {"ranks": _gather(_plain(_collect_rng_states(include_cuda=torch.cuda.is_available())))}

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = _numpy(_own(state_dict["ranks"]))

    def on_train_start(self, trainer, pl_module) -> None:
        # here, not at load: the sanity check and the loaders' start-up, which the saved run had behind it, came first
        if self._pending is not None:
            _set_rng_states(self._pending)
            self._pending = None
