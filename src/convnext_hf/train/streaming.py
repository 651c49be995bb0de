"""Streamed data (`--streaming`): one process's share of a `datasets.IterableDataset`, epoch after epoch.

Training streams are split between the processes (`split_dataset_by_node`: by shard when the shards divide evenly,
else every n-th example) and, inside each process, between the loader workers (datasets gives each worker its own
shards), so that every sample is read once per epoch across the job. Each worker reads its share epoch after epoch
without end (`--max_steps` ends the run), reshuffled every epoch (shard order and a shuffle buffer, seeded). Images
stay undecoded until this process's share is picked, and are decoded by the transform the task attaches.

Resuming mid-run regenerates the same order and drops the examples the checkpoint's steps trained on before they are
decoded (`resume_after`): the data is read again up to that point, but no image is decoded or augmented twice. The
loader's workers take turns, a batch each, and a new loader starts with the first worker: the workers before the one
whose turn it was give one empty batch first, which the resumed loader drops (`AfterPlaceholders`), so that the run
goes on in exactly the order it would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from copy import copy
from typing import Any

import datasets
import torch
from datasets.distributed import split_dataset_by_node

from .data import UNREADABLE

# An example of an empty batch (no pixel values: the task's collate leaves it out), given by a resumed worker whose
# turn has passed.
PLACEHOLDER = {"pixel_values": None, "labels": None, UNREADABLE: ""}


class EpochStream(torch.utils.data.IterableDataset):
    """A streamed split as the loader reads it: undecoded examples {"image": {...}, "label": ...}, transformed on the
    way out (`with_transform`), endless and shuffled for training, one pass in order for validation."""

    def __init__(
        self,
        stream: datasets.IterableDataset,
        batch_size: int,
        training: bool = False,
        seed: int = 0,
        buffer_size: int = 1000,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if training:
            stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
            if world_size > 1:
                stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
        self.stream = stream
        self.batch_size = batch_size
        self.training = training
        self.transform: Callable[[dict], dict] | None = None
        self.skipped_batches = 0

    @property
    def n_shards(self) -> int:
        """The shards this process reads; more loader workers than shards would have nothing to read."""
        return self.stream.n_shards

    def with_transform(self, transform: Callable[[dict], dict]) -> EpochStream:
        """The same stream, its examples passed through `transform` as batches of one (datasets' convention)."""
        transformed = copy(self)
        transformed.transform = transform
        return transformed

    def resume_after(self, batches: int, workers: int) -> int:
        """Start after the first `batches` batches this process's loader of `workers` workers gave (set before the
        loader starts); returns the empty batches it gives first (for `AfterPlaceholders` to drop)."""
        self.skipped_batches = batches
        return batches % workers if workers else 0

    def _resume_position(self) -> tuple[int, bool]:
        """(the examples this worker gave to the batches already trained on, whether it gives an empty batch first):
        workers take turns, a batch each."""
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        done = len(range(worker, self.skipped_batches, workers)) * self.batch_size
        return done, worker < self.skipped_batches % workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skip, placeholder = self._resume_position() if self.training else (0, False)
        if placeholder:
            for _ in range(self.batch_size):
                yield dict(PLACEHOLDER)
        epoch = 0
        while True:
            self.stream.set_epoch(epoch)
            read = 0
            for example in self.stream:
                read += 1
                if skip:
                    skip -= 1
                    continue
                if self.transform is None:
                    yield example
                else:
                    batch = self.transform({key: [value] for key, value in example.items()})
                    yield {key: values[0] for key, values in batch.items()}
            if not self.training or read == 0:
                return
            epoch += 1


class AfterPlaceholders:
    """A resumed stream's loader without the empty batches its workers give first (`EpochStream.resume_after`)."""

    def __init__(self, loader: torch.utils.data.DataLoader, placeholders: int) -> None:
        self.loader = loader
        self.placeholders = placeholders

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)
        for _ in range(self.placeholders):
            next(batches)
        yield from batches
