"""Test callbacks that write down what a (possibly multi-process) training run did, one JSON file per rank."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L


class WeightsAtStart(L.Callback):
    """At the start of training (after DDP wrapped the model): a digest of the network's weights, per rank."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def on_train_start(self, trainer, pl_module):
        digest = hashlib.sha256()
        for name, value in sorted(pl_module.net.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        head = [m for m in pl_module.net.modules() if hasattr(m, "bias") and m.bias is not None][-1]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {"digest": digest.hexdigest(), "head_bias_mean": float(head.bias.mean())}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
