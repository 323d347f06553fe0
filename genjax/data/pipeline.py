"""Host batches with grain: shuffled, endless, sharded by JAX process, exactly resumable.

The global stream is a seeded permutation of the whole data set, a new one each epoch,
cut into global batches of B positions: batch j is positions jB .. (j+1)B - 1 of the
stream, computed in one numpy step (`GlobalBatchIndices`), not with grain's per-example
index shuffle and `.batch`, which run Python code per example and are too slow to keep up
with a small model's compiled step (`benchmarks/throughput.py --loop --host_data` measures
the loop against the call).
Process p of P reads rows p*b .. (p+1)*b - 1 of every global batch (b = B // P), so the
processes' local batches, laid side by side in process order (as
jax.make_array_from_process_local_data does), are exactly the global batch a single
process would read: the same examples in the same rows, whatever the process
count. Batches are index arrays gathered by `Source.take` (one numpy gather per batch for
in-memory sources), prefetched by grain threads, or by grain worker processes when
num_workers > 0.

Resume: `get_state()` is {'next_batch': j, 'epoch': e, ...}: j is the index of the next
global batch and e the epoch its first example is in, the same on every process and for any
process count (no per-process iterator internals). `set_state` restarts the grain pipeline at
global batch j (a slice of the batched MapDataset), which also works with worker processes,
so a checkpoint written by N processes continues with M processes on the same sequence of
global batches.
"""

from __future__ import annotations

import threading

import grain
import jax
import numpy as np

from genjax.config import ConfigError
from genjax.data.arrays import Source

READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)  # in batches
STATE_CHECKS = ("seed", "global_batch_size", "num_examples")
ENDLESS = 2**62  # batches in the stream: more than any run reads


class GlobalBatchIndices:
    """Global batch j -> its B example indices: positions jB .. (j+1)B - 1 of the endless
    stream made of one seeded permutation of 0..N-1 per epoch.

    Epoch e's permutation is numpy's PCG64 generator seeded with (seed, e); the two most
    recent are cached, so a batch costs one slice (two across an epoch boundary). Picklable,
    for grain's worker processes.
    """

    def __init__(self, num_examples: int, global_batch_size: int, seed: int):
        self.num_examples = num_examples
        self.global_batch_size = global_batch_size
        self.seed = seed
        self._permutations: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()  # grain's read threads call this object at once

    def __getstate__(self) -> dict:  # for grain's worker processes: no lock, no cache
        return {k: v for k, v in self.__dict__.items() if k not in ("_permutations", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _permutations={}, _lock=threading.Lock())

    def permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            permutation = self._permutations.get(epoch)
            if permutation is None:
                rng = np.random.default_rng([self.seed, epoch])
                permutation = rng.permutation(self.num_examples)
                if len(self._permutations) >= 2:
                    del self._permutations[min(self._permutations)]
                self._permutations[epoch] = permutation
        return permutation

    def __call__(self, batch: int) -> np.ndarray:
        n = self.num_examples
        start = batch * self.global_batch_size
        stop = start + self.global_batch_size
        parts = []
        for epoch in range(start // n, (stop - 1) // n + 1):
            first, last = max(start, epoch * n), min(stop, (epoch + 1) * n)
            parts.append(self.permutation(epoch)[first - epoch * n : last - epoch * n])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def local_batches(
    source: Source, local_batch_size: int, seed: int, process_index: int, process_count: int
) -> grain.MapDataset:
    """Process `process_index`'s endless batches: its rows of each global batch."""
    first = process_index * local_batch_size
    global_indices = GlobalBatchIndices(len(source), local_batch_size * process_count, seed)
    batches = grain.MapDataset.range(ENDLESS).map(global_indices)
    return batches.map(lambda idx: idx[first : first + local_batch_size]).map(source.take)


def local_batch_size(batch_size: int, process_count: int) -> int:
    """The per-process share of a global batch; ConfigError unless it divides evenly."""
    if batch_size < 1 or batch_size % process_count:
        nearest = process_count * max(1, batch_size // process_count)
        raise ConfigError(
            f"config.batch_size={batch_size} must be a positive multiple of the number of "
            f"JAX processes ({process_count}), e.g. {nearest}"
        )
    return batch_size // process_count


class HostBatchIterator:
    """Endless iterator of this process's batches (dicts of numpy arrays), resumable exactly."""

    def __init__(self, batches: grain.MapDataset, fingerprint: dict, num_workers: int = 0):
        """Iterates `batches` from batch 0; `fingerprint` guards set_state against other data."""
        self._batches = batches
        self._fingerprint = fingerprint
        self._num_workers = num_workers
        self._next_batch = 0
        self._iterator = None

    def __iter__(self) -> HostBatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = self._start(self._next_batch)
        batch = next(self._iterator)
        self._next_batch += 1
        return batch

    def get_state(self) -> dict:
        """JSON-serialisable position, independent of the process count: the index of the next
        global batch and its epoch, plus what they depend on."""
        return {"next_batch": self._next_batch, "epoch": self._epoch(self._next_batch)} | (
            self._fingerprint
        )

    def _epoch(self, batch: int) -> int:
        """The epoch of global batch `batch`'s first example."""
        return batch * self._fingerprint["global_batch_size"] // self._fingerprint["num_examples"]

    def set_state(self, state: dict) -> None:
        """Continues from a `get_state()` of an iterator over the same data, seed and batch."""
        saved = {key: _as_int(state.get(key)) for key in STATE_CHECKS}
        next_batch = _as_int(state.get("next_batch"))
        valid = next_batch is not None and next_batch >= 0
        if valid and "epoch" in state:  # a state saved without it is taken as it is
            valid = _as_int(state["epoch"]) == self._epoch(next_batch)
        if saved != self._fingerprint or not valid:
            raise ConfigError(
                f"cannot resume the data pipeline from state {dict(state)}: it needs "
                f"next_batch >= 0 (its epoch, if given, consistent) and {self._fingerprint}; "
                "resume with the same config.seed, config.batch_size and data, or start a "
                "fresh workdir"
            )
        self.close()
        self._next_batch = next_batch

    def close(self) -> None:
        """Stops prefetching (threads or worker processes) until the next `next()`."""
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()
        self._iterator = None

    def _start(self, first_batch: int):
        """A grain iterator over batches first_batch, first_batch + 1, ..."""
        dataset = self._batches[first_batch:].to_iter_dataset(READ_OPTIONS)
        if self._num_workers:
            _mark_absl_flags_parsed()
            options = grain.MultiprocessingOptions(num_workers=self._num_workers)
            dataset = dataset.mp_prefetch(options)
        return iter(dataset)


def _as_int(value) -> int | None:
    """An integer saved in a state (int, numpy integer or 0-d array), else None."""
    array = np.asarray(value)
    return int(array) if array.shape == () and array.dtype.kind in "iu" else None


def _mark_absl_flags_parsed() -> None:
    """grain workers read absl flags; outside absl.app.run (tests, notebooks) use defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def host_batches(
    source: Source,
    *,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> HostBatchIterator:
    """This process's endless, seeded batches: leading dimension batch_size // process_count.

    process_index / process_count default to jax.process_index() / jax.process_count().
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count or num_workers < 0 or seed < 0:
        raise ConfigError(
            "host_batches needs 0 <= process_index < process_count, num_workers >= 0 and "
            f"seed >= 0 (config.seed); got {process_index}, {process_count}, {num_workers}, {seed}"
        )
    local = local_batch_size(batch_size, process_count)
    batches = local_batches(source, local, seed, process_index, process_count)
    fingerprint = {
        "seed": int(seed),
        "global_batch_size": int(batch_size),
        "num_examples": len(source),
    }
    return HostBatchIterator(batches, fingerprint, num_workers)
