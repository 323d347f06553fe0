"""The training loop: state, compiled chunks of steps, logs, samples and checkpoints.

The loop knows nothing of the maths: it asks genjax.experiment for the state and the
per-device step, runs `steps_per_call` steps per compiled call (`lax.scan`), and
fetches anything from the devices only at log, sample and checkpoint steps (the calls
in between run under `jax.transfer_guard_device_to_host('disallow')`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import jax
import numpy as np
from jax import lax
from tqdm import tqdm

from genjax import experiment as experiment_lib
from genjax.backend import keep_freed_host_memory
from genjax.checkpoint import Checkpoints, resume_hint
from genjax.config import ConfigError, resolve
from genjax.data import host_batches, resolve_sources
from genjax.logs import MetricWriter, check_writable, write_atomically
from genjax.models.registry import family_of
from genjax.parallel import AXIS, DataParallel, peer_watchdog
from genjax.steps import TrainState, guard_nonfinite

log = logging.getLogger(__name__)

# fold_in tags separating the random streams of one training step.
_DATA_STREAM, _STEP_STREAM = 0, 1
DIVERGED_EXIT_CODE = 3


class Diverged(Exception):
    """A non-finite loss or gradient under config.nonfinite='stop' (train.py exits 3)."""


def _due(step: int, every: int) -> bool:
    """Whether an event that happens every `every` steps (0 = never) is due at `step`."""
    return every > 0 and step % every == 0


@dataclasses.dataclass(frozen=True)
class Events:
    """What the loop does after the compiled call that ends at a step."""

    log: bool  # fetch and write the metrics
    sample: bool  # write a sample picture
    evaluate: bool  # run the evaluation metrics
    save: bool  # write a checkpoint

    def __bool__(self) -> bool:
        return self.log or self.sample or self.evaluate or self.save


class Schedule:
    """When the loop's periodic events fall, from the config's intervals (0 = never).

    A compiled call runs at most steps_per_call steps and ends on every event step, so events
    fall on exact multiples of their intervals. The last step always logs, samples (when this
    process writes pictures) and saves.
    """

    def __init__(self, config, writes_pictures: bool):
        self.config = config
        self.writes_pictures = writes_pictures
        c = config
        self._intervals = (c.log_every, c.sample_every, c.checkpoint_every, c.eval_every)

    def call_length(self, step: int) -> int:
        """Steps in the compiled call starting at `step`: up to the next event or the end."""
        c = self.config
        until = [every - step % every for every in self._intervals if every]
        return min(c.steps_per_call, c.num_steps - step, *until)

    def events(self, step: int) -> Events:
        """The events due after the call that ends at `step`."""
        c = self.config
        final = step == c.num_steps
        return Events(
            log=_due(step, c.log_every) or final,
            sample=self.writes_pictures and (_due(step, c.sample_every) or final),
            evaluate=_due(step, c.eval_every),
            save=_due(step, c.checkpoint_every) or final,
        )


def draw_batch(dataset: dict, key, per_step: int, batch_size: int) -> dict:
    """This device's share of `per_step` global batches drawn (with replacement) on device."""
    n = next(iter(dataset.values())).shape[0]
    idx = jax.random.randint(key, (per_step, batch_size), 0, n)
    local = batch_size // lax.axis_size(AXIS)
    idx = lax.dynamic_slice_in_dim(idx, lax.axis_index(AXIS) * local, local, axis=1)
    return {name: array[idx] for name, array in dataset.items()}


def make_chunk(step: Callable, length: int, on_device: bool, per_step: int, batch_size: int):
    """A per-device function running `length` train steps: `(state, data, key) -> (state, m)`.

    `data` is the on-device data set (batches drawn inside) or `length` host batches.
    The key of step s is `fold_in(key, s)`, so results do not depend on `length`.
    Metrics are those of the last step. `state` is a model state or a TrainState.
    """

    def chunk(state, data, key):
        def body(state, host_batch):
            model = state.model if isinstance(state, TrainState) else state
            step_key = jax.random.fold_in(key, model.step)
            if on_device:
                data_key = jax.random.fold_in(step_key, _DATA_STREAM)
                batch = draw_batch(data, data_key, per_step, batch_size)
            else:
                batch = host_batch
            return step(state, batch, jax.random.fold_in(step_key, _STEP_STREAM))

        state, metrics = lax.scan(body, state, None if on_device else data, length=length)
        return state, jax.tree.map(lambda m: m[-1], metrics)

    return chunk


def check_workdir(config, workdir: Path) -> None:
    """ConfigError if `workdir` holds checkpoints of a model this config cannot resume."""
    saved = workdir / "config.json"
    checkpoints = workdir / "checkpoints"
    if not saved.exists() or not checkpoints.exists() or not any(checkpoints.iterdir()):
        return
    try:
        old = experiment_lib.checkpoint_fields(json.loads(saved.read_text()))
    except (OSError, ValueError) as e:
        raise ConfigError(f"workdir {workdir}: unreadable config.json ({e})") from None
    new = experiment_lib.checkpoint_fields(json.loads(config.to_json_best_effort()))
    diff = [k for k in old if old[k] is not None and old[k] != new[k]]  # None: an older genjax
    if diff:
        name = (old.get("model") or {}).get("name")
        raise ConfigError(
            f"workdir {workdir} holds checkpoints of another model ({name!r}; differs in "
            f"{', '.join(diff)}); use a new --workdir, or the config it was trained with"
        )


class Preemption:
    """Notices SIGTERM (single process) or JAX's preemption sync point (several processes)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        with contextlib.suppress(ValueError):  # not the main thread: no handler
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class Trainer:
    """Everything one run needs: experiment, devices, data, checkpoints, writers."""

    def __init__(self, config, workdir: str | Path):
        config = resolve(config)
        if "://" in str(workdir):  # pathlib would make gs://b/run the local folder gs:/b/run
            raise ConfigError(
                f"--workdir {workdir}: a URL; the workdir must be a path on a local or mounted "
                "file system (for several hosts, one they all mount: NFS, a gcsfuse bucket)"
            )
        self.config = config
        self.workdir = Path(workdir)
        check_workdir(config, self.workdir)
        if config.parallel == "pmap" and jax.process_count() > 1:
            raise ConfigError(
                f"config.parallel='pmap' runs in one process, and this job has "
                f"{jax.process_count()}; use config.parallel='shard_map' (the default)"
            )
        self.parallel = DataParallel(config.parallel)
        if config.batch_size % (self.parallel.num_devices) != 0:
            raise ConfigError(
                f"config.batch_size={config.batch_size} is not divisible by the "
                f"{self.parallel.num_devices} devices; use a multiple of "
                f"{self.parallel.num_devices}"
            )
        family_of(config.model.name).check_batch(
            config, config.batch_size // self.parallel.num_devices
        )
        self.train_source, self.test_source = resolve_sources(config.data)
        self.experiment = experiment_lib.for_source(config, self.train_source)
        self.is_writer = jax.process_index() == 0
        self.key = jax.random.PRNGKey(config.seed)
        self._chunks: dict[int, Callable] = {}
        self._dataset = None
        self._iterator = None
        self._sampler = None
        self._sample_key = jax.random.fold_in(self.key, 2)

    # ----------------------------------------------------------------- data
    def _on_device_dataset(self):
        if self._dataset is None:
            arrays = self.train_source.to_arrays()
            keys = self.experiment.kind.batch_keys(arrays)
            arrays = {k: arrays[k] for k in keys}
            size_mb = sum(a.nbytes for a in arrays.values()) / 2**20
            if size_mb > self.config.data.max_on_device_mb:
                raise ConfigError(
                    f"data set {self.config.data.train!r} is {size_mb:.0f} MB, over "
                    f"data.max_on_device_mb={self.config.data.max_on_device_mb}; set "
                    "--config.data.on_device=False to stream it from the host"
                )
            self._dataset = self.parallel.replicate(arrays)
        return self._dataset

    def _host_iterator(self):
        if self._iterator is None:
            self._iterator = host_batches(
                self.train_source,
                batch_size=self.config.batch_size,
                seed=self.config.seed,
                num_workers=self.config.data.num_workers,
            )
        return self._iterator

    def _data_for(self, length: int):
        if self.config.data.on_device:
            return self._on_device_dataset()
        per_step = self.experiment.data_per_step
        it = self._host_iterator()
        batches = [next(it) for _ in range(length * per_step)]
        stacked = {
            k: np.stack([b[k] for b in batches]).reshape(length, per_step, *batches[0][k].shape)
            for k in self.experiment.kind.batch_keys(batches[0])
        }
        return self.parallel.shard_batch(stacked, batch_axis=2)

    # ------------------------------------------------------------- compiled
    def chunk(self, length: int) -> Callable:
        """The compiled call running `length` guarded steps (compiled once per length)."""
        if length not in self._chunks:
            step = guard_nonfinite(self.experiment.step(), self.experiment.family.metrics)
            fn = make_chunk(
                step,
                length,
                self.config.data.on_device,
                self.experiment.data_per_step,
                self.config.batch_size,
            )
            compiled = self.parallel.compile(
                fn, data_sharded=not self.config.data.on_device, batch_axis=2
            )
            self._chunks[length] = compiled
        return self._chunks[length]

    def initial_state(self) -> TrainState:
        model = self.experiment.init_state(jax.random.fold_in(self.key, 1))
        return self.experiment.new_train_state(model)

    # -------------------------------------------------------------- samples
    def compile_sampler(self, model_state) -> None:
        """Compiles the sampler of `sample_picture` for states shaped and placed like
        `model_state`. `run` does this before its first step, so that neither the compile
        stall nor an error in the sampler waits for the first sample step."""
        sampler = partial(self.experiment.sample, num=self.config.num_samples)
        self._sampler = jax.jit(sampler).lower(model_state, self._sample_key).compile()

    def sample_picture(self, model_state):
        """The picture logged every sample_every steps: a grid, or a scatter over real data."""
        if self._sampler is None:
            self.compile_sampler(model_state)
        x = np.asarray(self._sampler(model_state, self._sample_key))
        return self.experiment.kind.picture(x, self.test_source)

    def _check_finite(self, state: TrainState) -> None:
        """Raises Diverged (nonfinite='stop') once a non-finite step has been recorded."""
        if self.config.nonfinite != "stop":
            return
        bad_step = int(jax.device_get(state.nonfinite_step))
        if bad_step >= 0:
            values = jax.device_get(state.nonfinite_values)
            shown = ", ".join(
                f"{k}={v:.4g}" for k, v in zip(self.experiment.family.metrics, values, strict=True)
            )
            raise Diverged(
                f"non-finite loss or gradient at step {bad_step + 1} ({shown}); the newest "
                f"checkpoint in {self.workdir / 'checkpoints'} is the last good one; lower "
                "optim.lr or set --config.nonfinite=skip"
            )

    def _evaluate(self, step: int, model_state, writer) -> None:
        """genjax.metrics.evaluate on the current state, logged to TensorBoard and eval.jsonl."""
        from genjax.metrics.evaluate import evaluate

        e = self.config.eval
        values = evaluate(
            self.experiment,
            model_state,
            self.train_source,
            self.test_source,
            num_samples=e.num_samples,
            nll_k=e.nll_k,
            max_test=e.max_test,
            seed=self.config.seed,
            inception_weights=e.inception_weights,
            classifier_dir=e.classifier_dir,
        )
        if writer:
            writer.evaluation(step, values)

    # ----------------------------------------------------------------- loop
    def _restore(self, checkpoints: Checkpoints, template):
        """(state, data_state) of the newest checkpoint that restores into `template` (shapes
        only), else the initial state and {}."""
        try:
            restored = checkpoints.restore_latest(template, set_aside=self.is_writer)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(
                f"workdir {self.workdir}: its checkpoints do not restore into this model "
                f"({type(e).__name__}); use a new --workdir"
            ) from None
        if restored is None:
            return self.initial_state(), {}
        step, state, data_state = restored
        log.info("resumed from step %d", step)
        return state, data_state

    def run(self):
        """Trains to num_steps, resuming from the newest checkpoint in the workdir.

        Returns the final model state (the family's). On SIGTERM it saves a
        checkpoint at the current step and returns early.
        """
        c = self.config
        if c.data.on_device:  # its size check, before anything is written
            self._on_device_dataset()
        template = self.experiment.state_template()
        state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(template))
        check_writable(self.workdir, (c.keep_checkpoints + 1) * state_bytes + 2**20)
        checkpoints = Checkpoints(self.workdir / "checkpoints", keep=c.keep_checkpoints)
        state, data_state = self._restore(checkpoints, self.parallel.replicated(template))
        if not c.data.on_device and data_state:
            self._host_iterator().set_state(data_state)
        step = int(state.model.step)
        if self.is_writer:
            self.workdir.mkdir(parents=True, exist_ok=True)
            write_atomically(self.workdir / "config.json", c.to_json_best_effort(indent=2) + "\n")
            self.experiment.kind.write_workdir(self.workdir, self.train_source)  # a vocabulary
        writer = MetricWriter(self.workdir, resume_step=step) if self.is_writer else None
        state = self.parallel.replicate(state)
        if writer is not None and step < c.num_steps:  # the last step always samples
            self.compile_sampler(self.parallel.unreplicate(state).model)
        train_key = jax.random.fold_in(self.key, 0)
        schedule = Schedule(c, writes_pictures=writer is not None)

        def save(step, state):
            data_state = None if c.data.on_device else self._host_iterator().get_state()
            checkpoints.save(step, state, data_state)

        bar = tqdm(
            total=c.num_steps,
            initial=step,
            unit="step",
            disable=not self.is_writer,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        last_time, last_step = time.perf_counter(), step
        try:
            with Preemption() as preemption:
                while step < c.num_steps:
                    length = schedule.call_length(step)
                    data = self._data_for(length)
                    with jax.transfer_guard_device_to_host("disallow"):
                        state, metrics = self.chunk(length)(state, data, train_key)
                    step += length
                    bar.update(length)
                    due = schedule.events(step)
                    stop_now = preemption.reached(step)
                    if due.log:
                        values = jax.device_get(self.parallel.unreplicate(metrics))
                        values = {k: float(v) for k, v in values.items()}
                        now = time.perf_counter()
                        values["steps_per_sec"] = (step - last_step) / (now - last_time)
                        last_time, last_step = now, step
                        bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
                        if writer:
                            writer.scalars(step, values)
                    if not (due or stop_now):
                        continue
                    host = self.parallel.unreplicate(state)  # once per event step (pmap slices)
                    if due.log or due.save or stop_now:  # before any save of a diverged state
                        self._check_finite(host)
                    if due.sample:
                        writer.picture(step, self.sample_picture(host.model))
                    if due.evaluate:
                        self._evaluate(step, host.model, writer)
                    if due.save or stop_now:  # one save when both fall on this step
                        save(step, host)
                    if stop_now:
                        log.warning("SIGTERM: saved a checkpoint at step %d and stopped", step)
                        break
        finally:
            bar.close()
            checkpoints.close()
            if writer:
                writer.close()
        return self.parallel.unreplicate(state).model


def train_and_evaluate(config, workdir: str | Path):
    """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the final state.

    Sets this process's malloc to reuse freed memory (`backend.keep_freed_host_memory`).
    In a multi-process job, an error while another process is lost gives way to the
    PeerWatchdog's one line and exit code (`parallel.PeerWatchdog`)."""
    keep_freed_host_memory()
    watchdog = peer_watchdog()
    if watchdog is None:
        return Trainer(config, workdir).run()
    directory = Path(workdir) / "checkpoints"
    watchdog.hint = lambda: resume_hint(directory)
    watchdog.running(True)
    try:
        state = Trainer(config, workdir).run()
    except (ConfigError, Diverged):  # every process raises these alike
        raise
    except Exception:  # e.g. a collective that failed because a peer is gone
        watchdog.wait_for_loss()
        raise
    watchdog.running(False)
    return state
