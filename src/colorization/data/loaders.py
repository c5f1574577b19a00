"""Training loaders whose position travels in Lightning's checkpoint, so a resumed run sees exactly the batches (and,
with the items' own seeds, the crops) the uninterrupted run would have seen.

- ``EpochSampler``: each epoch a permutation from (seed, epoch), split over the ranks as ``DistributedSampler``
  does, yielding (index, epoch) keys (the datasets draw each item's crop from them). Its position is in the
  loader's state; its epoch is the loader's.
- ``TakenPosition``: a loader's state as of the batches the training loop *took* (Lightning fetches one ahead),
  from every rank (only rank 0 writes the checkpoint; each rank restores its own), and a marker instead of an
  exhausted iterator's state at an epoch's end, so the resumed run starts the next epoch rather than an empty one.
- ``ResumableLoader``: torchdata's ``StatefulDataLoader`` with both, for map-style sources and Hugging Face streams
  (``batches``: every rank the same number of batches per epoch). LitData's loader gets the same mixin in
  ``data.shards``.
"""

from __future__ import annotations

import logging
import warnings

import torch.distributed as dist
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

from colorization.errors import ConfigError

# torchdata's loader calls a torch API torch deprecated, once per loader: nothing to do on our side
warnings.filterwarnings("ignore", message="'set_vital' is deprecated")

log = logging.getLogger(__name__)


def per_rank_batch(batch_size: int, world_size: int, key: str = "data.batch_size") -> int:
    """``data.batch_size`` is the global batch: each of ``world_size`` processes loads an equal share."""
    if world_size < 1 or batch_size % world_size:
        raise ConfigError(
            f"{key}={batch_size} is the global batch and must split evenly over {world_size} processes "
            "(trainer.devices x trainer.num_nodes)"
        )
    return batch_size // world_size


class EpochSampler(StatefulDistributedSampler):
    """A seeded permutation per epoch over this rank's share (``num_replicas`` and ``rank`` are given, so Lightning
    keeps it under DDP); yields (index, epoch). Its ``epoch`` is set by ``ResumableLoader``, which counts the epochs
    itself: Lightning's ``set_epoch`` is ignored (after a resume from an epoch's last step it passes the epoch after
    the one it then trains)."""

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        epoch = self.epoch
        for index in super().__iter__():
            yield index, epoch


def _gather(state) -> list:
    """Every rank's ``state`` (a collective: Lightning saves checkpoints on all ranks at once)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def _own(states: list):
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    if len(states) != world:
        raise ConfigError(
            f"the checkpoint's data position was saved by {len(states)} processes, this run has {world}: an exact "
            "resume needs the same trainer.devices x trainer.num_nodes"
        )
    return states[rank]


class TakenPosition:
    """Mixin for a loader with ``state_dict``/``load_state_dict``: the state after the batches the training loop took
    (``took_batch``, called by the DataModule as each training batch goes to the device), gathered from all ranks.

    An epoch is over when its last batch was taken (a sized loader: ``len``; a stream: its iterator ended); a
    checkpoint then holds a marker, and the resumed run starts the next epoch. Subclasses say how
    (``_next_epoch_marker``, ``_start_next_epoch``) and wrap their batches in ``_positions``.

    ``epoch_of``: the trainer's epoch (the DataModule passes it), read when an epoch's first batch is fetched. Not
    a count of ``iter`` calls: after a resume from an epoch's last step Lightning makes an iterator it never reads,
    and its ``set_epoch`` then passes the epoch after the one it trains."""

    epoch_of = None

    def _reset_position(self) -> None:
        self._taken = 0  # batches of this epoch the training loop has taken
        self._start = 0  # of which taken before a resume (the next iterator goes on from there)
        self._exhausted = False  # the inner iterator has ended
        self._states: dict[int, dict] = {}  # batches of the epoch -> inner state right after them
        self._loaded: dict | None = None  # the state loaded at a resume, until the first batch

    def _positions(self, batches):
        """Wraps an epoch's batches: records the inner state after each one."""
        start, self._start = self._start, 0
        self._taken, self._exhausted, self._states = start, False, {}
        for n, batch in enumerate(batches, start + 1):
            self._states[n] = self._inner_state()
            self._states.pop(n - 4, None)  # the loop takes at most a batch or two behind
            yield batch
        self._exhausted = True

    def took_batch(self) -> None:
        self._taken += 1
        self._loaded = None

    def _inner_state(self) -> dict:
        return super().state_dict()

    def _epoch_done(self) -> bool:
        try:
            length = len(self)
        except TypeError:  # an unsized stream: over when its iterator ended
            return self._exhausted and self._taken >= max(self._states, default=0)
        return self._taken >= length

    def state_dict(self) -> dict:
        if self._epoch_done():
            own = {"next_epoch": self._next_epoch_marker()}
        elif self._loaded is not None:
            own = self._loaded  # saved again before the resumed run took a batch
        else:
            own = {"inner": self._states.get(self._taken) or self._inner_state(), "taken": self._taken}
        return {"ranks": _gather(own)}

    def load_state_dict(self, state: dict) -> None:
        own = _own(state["ranks"])
        if "next_epoch" in own:
            self._start_next_epoch(own["next_epoch"])
            return
        self._load_inner(own["inner"])
        self._start = self._taken = own["taken"]
        self._loaded = own

    def _load_inner(self, inner: dict) -> None:
        super().load_state_dict(inner)

    def _next_epoch_marker(self):
        raise NotImplementedError

    def _start_next_epoch(self, marker) -> None:
        raise NotImplementedError


class ResumableLoader(TakenPosition, StatefulDataLoader):
    """torchdata's StatefulDataLoader for the training set of every source but shards.

    It counts the epochs (``epoch``, in its state) and gives each one to the ``EpochSampler`` of a map-style set
    (give it as ``sampler``) or to a stream (an IterableDataset with ``set_epoch``); ``batches``, when set, makes every epoch exactly this
    many batches on every rank, so no rank waits forever in a collective for a rank whose shard ran out (a shard
    that runs out early is read again, with a warning; one that is longer is cut).
    """

    def __init__(self, *args, batches: int | None = None, epoch_of=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches, self.epoch_of = batches, epoch_of
        self.epoch = -1  # the epoch being read (without epoch_of, each epoch's first fetch counts one more)
        self._resumed = False  # a loaded mid-epoch state: the next epoch read goes on with its epoch
        self._reset_position()

    def __len__(self) -> int:
        if self.batches is None:
            return super().__len__()  # TypeError for a stream: Lightning then reads it as unsized
        return self.batches

    def __iter__(self):
        return self._positions(self._batches(self._start))

    def _begin_epoch(self) -> None:
        if not self._resumed:
            self.epoch = self.epoch_of() if self.epoch_of is not None else self.epoch + 1
        self._resumed = False
        if isinstance(self.sampler, EpochSampler):
            self.sampler.epoch = self.epoch
        elif hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def _batches(self, yielded: int):
        self._begin_epoch()  # here, at the first fetch (a generator's body), not when iter() is called
        passes = 0
        while self.batches is None or yielded < self.batches:
            before = yielded
            for batch in super().__iter__():  # resumes from a loaded state on the first pass
                yielded += 1
                yield batch
                if self.batches is not None and yielded >= self.batches:
                    return
            if self.batches is None:
                return
            passes += 1
            if yielded == before:
                raise RuntimeError("the stream of this rank is empty: fewer shards or examples than ranks")
            log.warning(
                "this rank's part of the stream ran out after %d of data.batches_per_epoch=%d batches "
                "(pass %d): reading it again",
                yielded,
                self.batches,
                passes,
            )

    def _inner_state(self) -> dict:
        return {"loader": StatefulDataLoader.state_dict(self), "epoch": self.epoch}

    def _load_inner(self, inner: dict) -> None:
        StatefulDataLoader.load_state_dict(self, inner["loader"])
        self.epoch, self._resumed = inner["epoch"], True

    def _next_epoch_marker(self) -> int:
        return self.epoch

    def _start_next_epoch(self, marker: int) -> None:
        self.epoch = marker  # without epoch_of, the next epoch read is marker + 1
