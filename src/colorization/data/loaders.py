"""Loader pieces for several processes and for streams: the global batch split over ranks, and a
resumable stream loader that gives every rank the same number of batches."""

from __future__ import annotations

import logging

from torchdata.stateful_dataloader import StatefulDataLoader

from colorization.errors import ConfigError

log = logging.getLogger(__name__)


def per_rank_batch(batch_size: int, world_size: int, key: str = "data.batch_size") -> int:
    """``data.batch_size`` is the global batch: each of ``world_size`` processes loads an equal share."""
    if world_size < 1 or batch_size % world_size:
        raise ConfigError(
            f"{key}={batch_size} is the global batch and must split evenly over {world_size} processes "
            "(trainer.devices x trainer.num_nodes)"
        )
    return batch_size // world_size


class StreamLoader(StatefulDataLoader):
    """A StatefulDataLoader over an iterable (streaming) dataset, with two additions.

    ``batches``: when set, every epoch yields exactly this many batches on every rank, so no rank waits
    forever in a collective for a rank whose shard ran out (a shard that runs out early is read again,
    with a warning; one that is longer is cut).

    Its ``state_dict`` is the position after the last batch the training loop *took* (``took_batch``),
    not after the batches Lightning fetched ahead, so a resumed run neither repeats nor skips examples.
    """

    def __init__(self, *args, batches: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = batches
        self._taken = 0  # batches of this epoch the training loop has taken
        self._start = 0  # of which taken before a resume
        self._states: dict[int, dict] = {}  # batches yielded -> loader state right after them

    def __len__(self) -> int:
        if self.batches is None:
            return super().__len__()  # TypeError for a stream: Lightning then reads it as unsized
        return self.batches

    def __iter__(self):
        yielded = self._taken = self._start
        passes = 0
        while self.batches is None or yielded < self.batches:
            iterator = super().__iter__()  # resumes from a loaded state on the first pass
            self._states = {yielded: super().state_dict()}
            before = yielded
            for batch in iterator:
                yielded += 1
                self._states[yielded] = super().state_dict()
                self._states.pop(yielded - 4, None)  # the loop takes at most a few batches behind
                yield batch
                if self.batches is not None and yielded >= self.batches:
                    break
            if self.batches is None:
                break
            passes += 1
            if yielded == before:
                raise RuntimeError("the stream of this rank is empty: fewer shards or examples than ranks")
            if yielded < self.batches:
                log.warning(
                    "this rank's part of the stream ran out after %d of data.batches_per_epoch=%d batches "
                    "(pass %d): reading it again",
                    yielded,
                    self.batches,
                    passes,
                )
        self._start = 0

    def took_batch(self) -> None:
        self._taken += 1

    def state_dict(self) -> dict:
        state = self._states.get(self._taken)
        return {"loader": state if state is not None else super().state_dict(), "taken": self._taken}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state["loader"])
        self._start = self._taken = state["taken"]
