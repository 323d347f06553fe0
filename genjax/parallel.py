"""Data parallelism over a named 'data' axis: jit + shard_map (default) or pmap.

The per-device functions of genjax.steps are written once, pmap style: they average
gradients with `lax.pmean(..., 'data')`. Under `jax.shard_map` that requires
`check_vma=False`: with the default check_vma=True, the gradient of a loss w.r.t. params
replicated over the mesh comes back already summed over 'data', so a pmean as under pmap
would make it N times too large on N devices, with no error.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def device_mean(tree, axis_name: str = AXIS):
    """`lax.pmean(tree, axis_name)`; on a one-device axis the tree itself, unchanged.

    The same value either way; on one device XLA:CPU keeps the all-reduce in the compiled
    step (its optimised HLO), a copy of every gradient each step.
    """
    return tree if lax.axis_size(axis_name) == 1 else lax.pmean(tree, axis_name)


def local_rows(x_global: jax.Array, axis_name: str = AXIS) -> jax.Array:
    """This device's rows of an array built for the global batch (leading axis)."""
    rows = x_global.shape[0] // lax.axis_size(axis_name)
    return lax.dynamic_slice_in_dim(x_global, lax.axis_index(axis_name) * rows, rows)


def per_example_noise(sample: Callable, key, local_shape: tuple, axis_name: str = AXIS):
    """Noise for this device's examples, drawn for the whole global batch and sliced.

    `sample(key, global_shape)` returns an array, or a pytree of arrays with the batch on
    their leading axis (e.g. several per-example values). Drawing globally makes every random
    number independent of the device count, so a step on N devices equals a step on one
    device with the whole batch.
    """
    n = lax.axis_size(axis_name)
    drawn = sample(key, (n * local_shape[0], *local_shape[1:]))
    return jax.tree.map(lambda x: local_rows(x, axis_name), drawn)


class DataParallel:
    """Places state and data on devices and compiles per-device functions over them."""

    def __init__(self, mode: str = "shard_map", devices=None):
        self.mode = mode
        self.devices = list(devices if devices is not None else jax.devices())
        self.num_devices = len(self.devices)
        self.mesh = Mesh(np.array(self.devices), (AXIS,))

    def _sharding(self, spec: P) -> NamedSharding:
        return NamedSharding(self.mesh, spec)

    def replicate(self, tree):
        """Copies a host/device pytree to every device (state, an on-device data set)."""
        if self.mode == "pmap":  # one copy per device, never n copies on one of them
            sharding = self._sharding(P(AXIS))

            def stacked(x):
                x = x[None] if isinstance(x, (np.ndarray, jax.Array)) else np.asarray(x)[None]
                copies = [jax.device_put(x, d) for d in self.devices]
                shape = (self.num_devices, *x.shape[1:])
                return jax.make_array_from_single_device_arrays(shape, sharding, copies)

            return jax.tree.map(stacked, tree)
        return jax.device_put(tree, self._sharding(P()))

    def unreplicate(self, tree):
        """One copy of a replicated pytree, as it would be on a single device."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: x[0], tree)
        return tree

    def shard_batch(self, local, batch_axis: int = 0):
        """Global arrays from this process's share of a batch, split over devices.

        `local` has the process-local batch at `batch_axis` (leading axes before it,
        e.g. steps per call, are kept whole on every device).
        """
        if self.mode == "pmap":
            n = self.num_devices

            def split(x):
                shape = x.shape[:batch_axis] + (n, x.shape[batch_axis] // n)
                x = x.reshape(shape + x.shape[batch_axis + 1 :])
                x = np.moveaxis(x, batch_axis, 0)
                return jax.device_put(x, self._sharding(P(AXIS)))

            return jax.tree.map(split, local)
        spec = P(*([None] * batch_axis), AXIS)
        sharding = self._sharding(spec)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)

    def compile(self, fn: Callable, data_sharded: bool, batch_axis: int = 0) -> Callable:
        """`fn(state, data, key) -> (state, metrics)` run on every device, compiled.

        State and key are replicated; data is either split on `batch_axis`
        (host batches) or replicated (a data set kept on the devices). The state
        argument is donated.
        """
        if self.mode == "pmap":
            return jax.pmap(
                fn,
                axis_name=AXIS,
                in_axes=(0, 0, None),
                devices=self.devices,
                donate_argnums=0,
            )
        data_spec = P(*([None] * batch_axis), AXIS) if data_sharded else P()
        mapped = jax.shard_map(
            fn,
            mesh=self.mesh,
            in_specs=(P(), data_spec, P()),
            out_specs=(P(), P()),
            check_vma=False,
        )
        return jax.jit(mapped, donate_argnums=0)


def initialize_distributed(
    coordinator_address: str = "", num_processes: int = 0, process_id: int = -1
) -> None:
    """Joins a multi-process JAX job, or does nothing for one process.

    Explicit flags win; otherwise `jax.distributed.initialize()` detects the cluster on
    TPU pod slices and under SLURM with several tasks. Several processes on one machine work
    too, on CPU with gloo collectives: coordinator_address='127.0.0.1:PORT',
    num_processes=2, process_id=i (as tests/test_resilience.py runs them).
    """
    import os

    if coordinator_address or num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=coordinator_address or None,
            num_processes=num_processes or None,
            process_id=process_id if process_id >= 0 else None,
        )
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "," in os.environ.get(
        "TPU_WORKER_HOSTNAMES", ""
    ):
        jax.distributed.initialize()
