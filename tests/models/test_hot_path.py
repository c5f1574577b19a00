"""The per-batch work makes no host round trips: counted with a TorchDispatchMode on real batches and a real run."""

from __future__ import annotations

import collections

import lightning as L
import pytest
from torch.utils._python_dispatch import TorchDispatchMode

from colorization.train import train
from helpers.config import TINY, compose

# the ops that wait for the device (a value read back, or a data-dependent shape) or copy Python data to it
SYNCS = ("_local_scalar_dense", "is_nonzero", "nonzero", "masked_select", "unique", "_unique2", "lift_fresh")


class CountSyncs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts: collections.Counter = collections.Counter()
        self.ops = 0  # every op seen: proves the mode was active

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops += 1
        if name in SYNCS or name.startswith(SYNCS):
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


class CountPerBatch(L.Callback):
    """Counts in on_after_batch_transfer (the targets path) and from the start of the training step to the end of
    its optimizer step (forward, loss, backward, the non-finite check, the update, the fault-tolerance callback)."""

    last: CountPerBatch | None = None

    def __init__(self):
        self.transfer, self.step, self.ops = [], [], []
        self._mode: CountSyncs | None = None
        CountPerBatch.last = self

    def setup(self, trainer, pl_module, stage):
        original = pl_module.on_after_batch_transfer

        def counted(batch, dataloader_idx=0):
            with CountSyncs() as mode:
                out = original(batch, dataloader_idx)
            if pl_module.training and isinstance(batch, dict):  # not the model summary's example_input_array
                self.transfer.append(dict(mode.counts))
            return out

        pl_module.on_after_batch_transfer = counted

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._mode = CountSyncs().__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._mode.__exit__(None, None, None)
        self.step.append(dict(self._mode.counts))
        self.ops.append(self._mode.ops)


@pytest.mark.parametrize("loss", ["rebalanced", "l2"])
def test_no_host_round_trip_in_the_targets_path_nor_in_a_training_step(tmp_path, loss):
    overrides = [
        f"experiment={'l2' if loss == 'l2' else 'rebalanced'}",
        *TINY,
        "trainer.max_steps=4",
        "+trainer.enable_progress_bar=false",  # the progress bar reads the loss each step (outside this scope)
        "trainer.log_every_n_steps=100",  # Lightning's logging reads values at its interval only
        "+trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "callbacks.model_checkpoint.monitor=null",
        "+callbacks.count_syncs._target_=test_hot_path.CountPerBatch",
    ]
    trainer = train(compose(overrides, tmp_path))
    counter = CountPerBatch.last
    assert trainer.global_step == 4 and len(counter.step) == 4
    # after the first batch (constants made once per device)
    assert counter.transfer[1:] == [{}] * 3, counter.transfer
    assert min(counter.ops) > 100  # forward, backward and the update were seen
    # FaultTolerance runs between the two hooks and only reads its device counts at the check interval
    assert counter.step[1:] == [{}] * 3, counter.step


class CountForwards(L.Callback):
    """Network forward passes during validation, and validation batches."""

    last: CountForwards | None = None

    def __init__(self):
        self.forwards = self.batches = 0
        self._hook = None
        CountForwards.last = self

    def on_validation_start(self, trainer, pl_module):
        def count(module, args, output):
            self.forwards += 1

        self._hook = pl_module.net.register_forward_hook(count)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.batches += 1

    def on_validation_end(self, trainer, pl_module):
        self._hook.remove()


@pytest.mark.parametrize("experiment", ["rebalanced", "l2"])
def test_a_validation_pass_runs_the_network_once_per_batch_with_every_figure_on(tmp_path, experiment):
    overrides = [
        f"experiment={experiment}",
        *TINY,
        "trainer.max_steps=1",
        "+trainer.limit_val_batches=2",  # TINY: 8 validation crops, batch 4
        "trainer.num_sanity_val_steps=0",
        "callbacks.ab_histogram.max_batches=2",
        "+callbacks.count_forwards._target_=test_hot_path.CountForwards",
    ]
    cfg = compose(overrides, tmp_path)
    figures = ("colorization_grid", "ab_histogram", "temperature_strip")
    assert all(cfg.callbacks.get(name) for name in figures)  # every figure switched on
    train(cfg)
    counter = CountForwards.last
    assert counter.batches == 2 and counter.forwards == 2, (counter.batches, counter.forwards)
    images = {p.name.split("_step")[0] for p in (tmp_path / "images").glob("*.png")}
    expected = {"val", "ab_histogram"} | ({"temperature_strip"} if experiment != "l2" else set())
    assert images == expected, images
