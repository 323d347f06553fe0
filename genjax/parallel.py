"""Data parallelism over a named 'data' axis: jit + shard_map (default) or pmap.

The per-device functions of genjax.steps are written once, pmap style: they average
gradients with `lax.pmean(..., 'data')`. Under `jax.shard_map` that requires
`check_vma=False`: with the default check_vma=True, the gradient of a loss w.r.t. params
replicated over the mesh comes back already summed over 'data', so a pmean as under pmap
would make it N times too large on N devices, with no error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from genjax.cli import PEER_LOST

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


def _replicated_from_host(x, sharding: NamedSharding):
    """`x`, the same value on every process, as a global array replicated over `sharding`.

    Each process places its own copy on its own devices: `jax.device_put` does not copy an
    array committed to a local device (e.g. restored there) to other hosts, and for host
    values it checks them equal across processes, one collective per leaf.
    """
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


class DataParallel:
    """Places state and data on devices and compiles per-device functions over them."""

    def __init__(self, mode: str = "shard_map", devices=None):
        self.mode = mode
        self.devices = list(devices if devices is not None else jax.devices())
        self.num_devices = len(self.devices)
        self.mesh = Mesh(np.array(self.devices), (AXIS,))

    def _sharding(self, spec: P) -> NamedSharding:
        return NamedSharding(self.mesh, spec)

    def replicated(self, template):
        """`template` (ShapeDtypeStructs) placed as `replicate` places state: what a
        checkpoint restores into, so that each process reads it onto its own devices whatever
        the number of processes that wrote it."""
        if self.mode == "pmap":  # one process: restored onto a device, then stacked
            return template
        sharding = self._sharding(P())
        return jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), template
        )

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
        sharding = self._sharding(P())
        if jax.process_count() > 1:
            return jax.tree.map(lambda x: _replicated_from_host(x, sharding), tree)
        return jax.device_put(tree, sharding)

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


PEER_TIMEOUT_S = 30.0  # default seconds without a peer's heartbeat before it counts as lost
_KEYS = "genjax/peers"  # the watchdog's keys in JAX's coordination service
_WATCHDOG: PeerWatchdog | None = None


class PeerWatchdog:
    """Ends this process with one line and exit code 5 when another process of the job stops.

    A process that is killed or loses its host leaves the others blocked in a collective (or
    failing one, with gloo), and JAX's coordination service aborts them only after its own
    heartbeat timeout, with a crash dump. Each process's watchdog thread writes a heartbeat to
    the coordination service's key-value store every `interval` seconds and reads the others';
    a peer whose heartbeat has not changed for `timeout` seconds, and has not said it is done,
    is lost: the first survivor to see it records which one, and every survivor prints
    `error: lost process P of N ...` (plus `hint()`, e.g. the checkpoint to resume from) and
    exits with PEER_LOST_EXIT_CODE, process 0 last, since the coordination service lives in
    it. JAX's own heartbeat timeout is set longer (initialize_distributed), so this comes
    first.
    """

    def __init__(self, client, process_id: int, num_processes: int, timeout: float):
        self.client = client
        self.process_id = process_id
        self.num_processes = num_processes
        self.timeout = float(timeout)
        self.interval = min(1.0, self.timeout / 10)
        self.hint: Callable[[], str] = lambda: ""
        self._state = "running"
        self._beat = 0
        self._lost: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="genjax-peers", daemon=True)

    def start(self) -> PeerWatchdog:
        self._publish()
        self._thread.start()
        return self

    def running(self, running: bool) -> None:
        """Says whether this process is in a stretch of work where peers wait on it (training);
        a peer that is done (e.g. exiting after the last step) is never counted as lost."""
        self._state = "running" if running else "done"
        self._publish()

    def _publish(self) -> None:
        self._beat += 1
        key = f"{_KEYS}/beat/{self.process_id}"
        self.client.key_value_set(key, f"{self._beat} {self._state}", allow_overwrite=True)

    def _watch(self) -> None:
        peers = [p for p in range(self.num_processes) if p != self.process_id]
        seen: dict[int, str | None] = dict.fromkeys(peers)
        changed = dict.fromkeys(peers, time.monotonic())
        reached = time.monotonic()  # the last time the coordination service answered
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            try:
                self._publish()
                entries = dict(self.client.key_value_dir_get(f"{_KEYS}/"))
            except Exception:  # noqa: BLE001 - the service unreachable: its process is lost
                if now - reached > self.timeout:
                    self._exit(0)
                continue
            reached = now
            verdict = entries.get(f"{_KEYS}/lost")
            if verdict is not None:  # another survivor saw it first
                self._exit(int(verdict))
            for p in peers:
                value = entries.get(f"{_KEYS}/beat/{p}")
                if value != seen[p]:
                    seen[p], changed[p] = value, now
            stale = [
                p
                for p in peers
                if now - changed[p] > self.timeout and not (seen[p] or "").endswith(" done")
            ]
            if stale:
                self._exit(stale[0])

    def wait_for_loss(self) -> None:
        """Blocks while a lost peer may still be found (the watchdog then ends the process);
        returns once `timeout` has passed with every peer alive. For the error path: a
        collective with a lost peer fails (gloo) before the peer's heartbeat is overdue."""
        if self._thread.is_alive():
            self._stop.wait(self.timeout + 3 * self.interval)
            while self._lost is not None:  # the watchdog is ending the process
                time.sleep(1)

    def _exit(self, lost: int) -> None:
        """Prints the one line naming the lost process and exits PEER_LOST_EXIT_CODE."""
        self._lost = lost
        with contextlib.suppress(Exception):  # so that every survivor names the same one
            self.client.key_value_set(f"{_KEYS}/lost", str(lost), allow_overwrite=False)
        with contextlib.suppress(Exception):
            self._state = "left"
            self._publish()
        if self.process_id == 0:  # the others' coordination clients die with process 0
            self._wait_for_others(lost)
        try:
            hint = self.hint()
        except Exception as e:  # noqa: BLE001 - the line must come out
            hint = f"; ({type(e).__name__} while looking for the newest checkpoint)"
        message = (
            f"lost process {lost} of {self.num_processes} (no heartbeat for "
            f"{self.timeout:g} s: killed, crashed or its host gone){hint}"
        )
        print("error: " + message, file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(PEER_LOST_EXIT_CODE)

    def _wait_for_others(self, lost: int) -> None:
        """Waits (at most `timeout`) until every other survivor has said it is leaving."""
        deadline = time.monotonic() + self.timeout
        others = [p for p in range(1, self.num_processes) if p != lost]
        while time.monotonic() < deadline:
            try:
                entries = dict(self.client.key_value_dir_get(f"{_KEYS}/beat/"))
            except Exception:  # noqa: BLE001
                return
            states = [entries.get(f"{_KEYS}/beat/{p}", "").rsplit(" ", 1)[-1] for p in others]
            if all(state in ("left", "done") for state in states):
                return
            time.sleep(self.interval / 2)


PEER_LOST_EXIT_CODE = PEER_LOST  # genjax.cli's code for it


def peer_watchdog() -> PeerWatchdog | None:
    """This job's PeerWatchdog (started by initialize_distributed); None for one process."""
    return _WATCHDOG


def initialize_distributed(
    coordinator_address: str = "",
    num_processes: int = 0,
    process_id: int = -1,
    peer_timeout: float = PEER_TIMEOUT_S,
) -> PeerWatchdog | None:
    """Joins a multi-process JAX job and starts its PeerWatchdog, or does nothing for one
    process.

    Explicit flags win; otherwise `jax.distributed.initialize()` detects the cluster on
    TPU pod slices and under SLURM with several tasks. Several processes on one machine work
    too, on CPU with gloo collectives: coordinator_address='127.0.0.1:PORT',
    num_processes=2, process_id=i (as tests/test_resilience.py runs them). A process whose
    heartbeat stops for `peer_timeout` seconds counts as lost (PeerWatchdog); JAX's own
    heartbeat timeout, which aborts the survivors, is set well beyond it.
    """
    global _WATCHDOG
    from genjax.config import ConfigError

    if not peer_timeout > 0:
        raise ConfigError(f"--peer_timeout={peer_timeout}: must be a positive number of seconds")
    heartbeat = {"heartbeat_timeout_seconds": int(2 * peer_timeout) + 30}
    if coordinator_address or num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=coordinator_address or None,
            num_processes=num_processes or None,
            process_id=process_id if process_id >= 0 else None,
            **heartbeat,
        )
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "," in os.environ.get(
        "TPU_WORKER_HOSTNAMES", ""
    ):
        jax.distributed.initialize(**heartbeat)
    if jax.process_count() > 1 and _WATCHDOG is None:
        from jax._src import distributed  # the coordination service's client

        _WATCHDOG = PeerWatchdog(
            distributed.global_state.client,
            jax.process_index(),
            jax.process_count(),
            peer_timeout,
        ).start()
    return _WATCHDOG
